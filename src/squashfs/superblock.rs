//! The SquashFS 4.0 superblock: parsing and sanity checks.
//!
//! Every image is checked here first, before anything reads its tables
//! (rfake's own reader and server, `inspect`, or squashfuse): a truncated or
//! corrupt image is refused with a clear message instead of a mount failure
//! deep in the setup. The tables are checked next, by [`super::layout`].
//!
//! Layout (all little-endian): magic `hsqs` (u32), inode count (u32),
//! modification time (u32), block size (u32), fragment entry count (u32),
//! compression id (u16), block log (u16), flags (u16), id count (u16),
//! version major (u16), version minor (u16), root inode reference (u64),
//! bytes used (u64), then the start offsets (u64) of the id, xattr id, inode,
//! directory, fragment and export tables.

use std::fmt;

use crate::bytes::{FieldReader, FieldWriter};

/// The four bytes a SquashFS starts with (0x73717368 little-endian).
pub const SQUASHFS_MAGIC: [u8; 4] = *b"hsqs";

/// Size in bytes of the SquashFS 4.0 superblock.
pub const SUPERBLOCK_LEN: usize = 96;

/// Table start value meaning "this optional table is absent".
pub const NO_TABLE: u64 = u64::MAX;

/// Smallest block size SquashFS allows (4 KiB).
pub const MIN_BLOCK_SIZE: u32 = 4 * 1024;

/// Largest block size SquashFS allows (1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1024 * 1024;

/// Whether `bytes` starts with the SquashFS magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(&SQUASHFS_MAGIC)
}

/// Why a SquashFS superblock was refused. Every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SquashfsError {
    /// Fewer than [`SUPERBLOCK_LEN`] bytes were available.
    #[error("truncated: only {len} bytes, a SquashFS superblock needs {SUPERBLOCK_LEN}")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The first four bytes are not `hsqs`.
    #[error("not a SquashFS: found magic {}, expected {}", hex(found), hex(&SQUASHFS_MAGIC))]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// The version is not 4.0.
    #[error("corrupt superblock: unsupported version {major}.{minor} (only 4.0 is supported)")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The block size is not a power of two in 4 KiB..=1 MiB.
    #[error(
        "corrupt superblock: block size {block_size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
    )]
    BadBlockSize {
        /// Block size found.
        block_size: u32,
    },
    /// `block_log` does not match the block size.
    #[error("corrupt superblock: block_log {block_log} does not match block size {block_size}")]
    BlockLogMismatch {
        /// Block size found.
        block_size: u32,
        /// Block log found.
        block_log: u16,
    },
    /// The compression id is not one SquashFS defines.
    #[error("corrupt superblock: unknown compression id {0}")]
    UnknownCompression(u16),
    /// `bytes_used` cannot even hold the superblock.
    #[error("corrupt superblock: bytes_used {0} is smaller than the superblock")]
    BytesUsedTooSmall(u64),
    /// The filesystem is longer than the bytes available for it.
    #[error(
        "truncated: the superblock says bytes_used is {bytes_used} but only {available} bytes are available"
    )]
    Truncated {
        /// Size the superblock claims.
        bytes_used: u64,
        /// Bytes actually available.
        available: u64,
    },
    /// A table starts outside the filesystem.
    #[error(
        "corrupt superblock: the {table} table starts at {start}, outside the filesystem ({SUPERBLOCK_LEN}..{bytes_used})"
    )]
    TableOutOfRange {
        /// Which table.
        table: &'static str,
        /// Its start offset.
        start: u64,
        /// The filesystem size.
        bytes_used: u64,
    },
}

/// Formats bytes as space-separated lowercase hex (`de ad be ef`).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A SquashFS compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zlib/gzip (id 1).
    Gzip,
    /// LZMA (id 2).
    Lzma,
    /// LZO (id 3).
    Lzo,
    /// XZ (id 4).
    Xz,
    /// LZ4 (id 5).
    Lz4,
    /// Zstandard (id 6).
    Zstd,
}

impl Compression {
    /// The compression for an on-disk id, if SquashFS defines it.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            1 => Some(Self::Gzip),
            2 => Some(Self::Lzma),
            3 => Some(Self::Lzo),
            4 => Some(Self::Xz),
            5 => Some(Self::Lz4),
            6 => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The on-disk id.
    pub const fn id(self) -> u16 {
        match self {
            Self::Gzip => 1,
            Self::Lzma => 2,
            Self::Lzo => 3,
            Self::Xz => 4,
            Self::Lz4 => 5,
            Self::Zstd => 6,
        }
    }

    /// The usual name (`gzip`, `xz`, `zstd`...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Lzma => "lzma",
            Self::Lzo => "lzo",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SquashFS 4.0 superblock, field for field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Number of inodes.
    pub inode_count: u32,
    /// Last modification time (seconds since the epoch).
    pub modification_time: u32,
    /// Data block size in bytes.
    pub block_size: u32,
    /// Number of fragment table entries.
    pub fragment_entry_count: u32,
    /// Compression id (see [`Compression`]).
    pub compression_id: u16,
    /// log2 of `block_size`.
    pub block_log: u16,
    /// Superblock flags.
    pub flags: u16,
    /// Number of entries in the uid/gid table.
    pub id_count: u16,
    /// Major version (4).
    pub version_major: u16,
    /// Minor version (0).
    pub version_minor: u16,
    /// Reference to the root directory inode.
    pub root_inode_ref: u64,
    /// Size of the filesystem in bytes (the file may be padded beyond it).
    pub bytes_used: u64,
    /// Start of the uid/gid table.
    pub id_table_start: u64,
    /// Start of the xattr id table, or [`NO_TABLE`].
    pub xattr_id_table_start: u64,
    /// Start of the inode table.
    pub inode_table_start: u64,
    /// Start of the directory table.
    pub directory_table_start: u64,
    /// Start of the fragment table, or [`NO_TABLE`].
    pub fragment_table_start: u64,
    /// Start of the NFS export table, or [`NO_TABLE`].
    pub export_table_start: u64,
}

impl Superblock {
    /// Parses the superblock at the start of `bytes` (at least
    /// [`SUPERBLOCK_LEN`] bytes). Checks only the length and the magic;
    /// call [`Superblock::validate`] for the rest.
    pub fn parse(bytes: &[u8]) -> Result<Self, SquashfsError> {
        let Some((block, _)) = bytes.split_first_chunk::<SUPERBLOCK_LEN>() else {
            return Err(SquashfsError::TooShort { len: bytes.len() });
        };
        let mut r = FieldReader::new(block);
        let magic: [u8; 4] = r.array();
        if magic != SQUASHFS_MAGIC {
            return Err(SquashfsError::BadMagic { found: magic });
        }
        let superblock = Self {
            inode_count: r.u32(),
            modification_time: r.u32(),
            block_size: r.u32(),
            fragment_entry_count: r.u32(),
            compression_id: r.u16(),
            block_log: r.u16(),
            flags: r.u16(),
            id_count: r.u16(),
            version_major: r.u16(),
            version_minor: r.u16(),
            root_inode_ref: r.u64(),
            bytes_used: r.u64(),
            id_table_start: r.u64(),
            xattr_id_table_start: r.u64(),
            inode_table_start: r.u64(),
            directory_table_start: r.u64(),
            fragment_table_start: r.u64(),
            export_table_start: r.u64(),
        };
        debug_assert!(r.is_done(), "superblock layout must cover 96 bytes");
        Ok(superblock)
    }

    /// Encodes the superblock as its 96 on-disk bytes (magic included).
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_LEN] {
        let mut w = FieldWriter::<SUPERBLOCK_LEN>::new();
        w.bytes(&SQUASHFS_MAGIC);
        w.u32(self.inode_count);
        w.u32(self.modification_time);
        w.u32(self.block_size);
        w.u32(self.fragment_entry_count);
        w.u16(self.compression_id);
        w.u16(self.block_log);
        w.u16(self.flags);
        w.u16(self.id_count);
        w.u16(self.version_major);
        w.u16(self.version_minor);
        for value in [
            self.root_inode_ref,
            self.bytes_used,
            self.id_table_start,
            self.xattr_id_table_start,
            self.inode_table_start,
            self.directory_table_start,
            self.fragment_table_start,
            self.export_table_start,
        ] {
            w.u64(value);
        }
        w.finish()
    }

    /// Checks that the superblock describes a plausible SquashFS 4.0 of at
    /// most `available_bytes` bytes (the bytes from the superblock's start to
    /// the end of the file or partition).
    pub fn validate(&self, available_bytes: u64) -> Result<(), SquashfsError> {
        self.check_version()?;
        self.check_block_size()?;
        self.check_compression()?;
        self.check_size(available_bytes)?;
        self.check_tables()
    }

    /// The compression algorithm, if the id is a known one.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_id(self.compression_id)
    }

    /// The compression's name, or `"unknown"`.
    pub fn compression_name(&self) -> &'static str {
        self.compression().map_or("unknown", Compression::name)
    }

    fn check_version(&self) -> Result<(), SquashfsError> {
        if (self.version_major, self.version_minor) == (4, 0) {
            Ok(())
        } else {
            Err(SquashfsError::UnsupportedVersion {
                major: self.version_major,
                minor: self.version_minor,
            })
        }
    }

    fn check_block_size(&self) -> Result<(), SquashfsError> {
        let block_size = self.block_size;
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(SquashfsError::BadBlockSize { block_size });
        }
        if u32::from(self.block_log) != block_size.trailing_zeros() {
            return Err(SquashfsError::BlockLogMismatch {
                block_size,
                block_log: self.block_log,
            });
        }
        Ok(())
    }

    fn check_compression(&self) -> Result<(), SquashfsError> {
        match self.compression() {
            Some(_) => Ok(()),
            None => Err(SquashfsError::UnknownCompression(self.compression_id)),
        }
    }

    fn check_size(&self, available: u64) -> Result<(), SquashfsError> {
        if self.bytes_used < SUPERBLOCK_LEN as u64 {
            return Err(SquashfsError::BytesUsedTooSmall(self.bytes_used));
        }
        if self.bytes_used > available {
            return Err(SquashfsError::Truncated {
                bytes_used: self.bytes_used,
                available,
            });
        }
        Ok(())
    }

    fn check_tables(&self) -> Result<(), SquashfsError> {
        let mandatory = [
            ("inode", self.inode_table_start),
            ("directory", self.directory_table_start),
            ("id", self.id_table_start),
        ];
        let optional = [
            ("fragment", self.fragment_table_start),
            ("export", self.export_table_start),
            ("xattr id", self.xattr_id_table_start),
        ];
        let present = optional.into_iter().filter(|&(_, start)| start != NO_TABLE);
        for (table, start) in mandatory.into_iter().chain(present) {
            if !(SUPERBLOCK_LEN as u64..self.bytes_used).contains(&start) {
                return Err(SquashfsError::TableOutOfRange {
                    table,
                    start,
                    bytes_used: self.bytes_used,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_support::sample_superblock as sample;

    #[test]
    fn magic_detection() {
        assert!(has_magic(b"hsqs\0\0"));
        assert!(!has_magic(b"hsq"));
        assert!(!has_magic(b"sqsh"));
        assert!(!has_magic(b""));
        assert_eq!(u32::from_le_bytes(SQUASHFS_MAGIC), 0x7371_7368);
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        let bytes = sb.to_bytes();
        assert_eq!(&bytes[..4], b"hsqs");
        assert_eq!(Superblock::parse(&bytes), Ok(sb));
    }

    #[test]
    fn parse_reads_fields_at_their_offsets() {
        let bytes = sample().to_bytes();
        assert_eq!(
            u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
            131_072
        );
        assert_eq!(u16::from_le_bytes(bytes[20..22].try_into().unwrap()), 1);
        assert_eq!(u16::from_le_bytes(bytes[22..24].try_into().unwrap()), 17);
        assert_eq!(u16::from_le_bytes(bytes[28..30].try_into().unwrap()), 4);
        assert_eq!(u64::from_le_bytes(bytes[40..48].try_into().unwrap()), 249);
        assert_eq!(u64::from_le_bytes(bytes[88..96].try_into().unwrap()), 227);
    }

    #[test]
    fn parse_ignores_trailing_bytes() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 100]);
        assert_eq!(Superblock::parse(&bytes), Ok(sample()));
    }

    #[test]
    fn parse_too_short() {
        let bytes = sample().to_bytes();
        assert_eq!(
            Superblock::parse(&bytes[..95]),
            Err(SquashfsError::TooShort { len: 95 })
        );
        assert_eq!(
            Superblock::parse(&[]),
            Err(SquashfsError::TooShort { len: 0 })
        );
    }

    #[test]
    fn parse_bad_magic() {
        let mut bytes = sample().to_bytes();
        bytes[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let err = Superblock::parse(&bytes).unwrap_err();
        assert_eq!(
            err,
            SquashfsError::BadMagic {
                found: [0xde, 0xad, 0xbe, 0xef]
            }
        );
        assert!(err.to_string().contains("de ad be ef"), "{err}");
    }

    #[test]
    fn validate_accepts_sample_and_padding() {
        sample().validate(249).unwrap();
        sample().validate(4096).unwrap();
    }

    #[test]
    fn validate_truncated() {
        let err = sample().validate(248).unwrap_err();
        assert_eq!(
            err,
            SquashfsError::Truncated {
                bytes_used: 249,
                available: 248
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("249") && msg.contains("248"), "{msg}");
    }

    #[test]
    fn validate_version() {
        for (major, minor) in [(3, 0), (4, 1), (0, 0), (5, 0)] {
            let sb = Superblock {
                version_major: major,
                version_minor: minor,
                ..sample()
            };
            assert_eq!(
                sb.validate(4096),
                Err(SquashfsError::UnsupportedVersion { major, minor })
            );
        }
    }

    #[test]
    fn validate_block_sizes() {
        for log in 12..=20u16 {
            let sb = Superblock {
                block_size: 1 << log,
                block_log: log,
                ..sample()
            };
            sb.validate(4096).unwrap();
        }
        for block_size in [0, 1, 2048, 4095, 100_000, 2 << 20, u32::MAX] {
            let sb = Superblock {
                block_size,
                ..sample()
            };
            assert_eq!(
                sb.validate(4096),
                Err(SquashfsError::BadBlockSize { block_size })
            );
        }
        let sb = Superblock {
            block_log: 16,
            ..sample()
        };
        assert_eq!(
            sb.validate(4096),
            Err(SquashfsError::BlockLogMismatch {
                block_size: 131_072,
                block_log: 16
            })
        );
    }

    #[test]
    fn validate_compression() {
        let names = ["gzip", "lzma", "lzo", "xz", "lz4", "zstd"];
        for (id, name) in (1..=6u16).zip(names) {
            let sb = Superblock {
                compression_id: id,
                ..sample()
            };
            sb.validate(4096).unwrap();
            assert_eq!(sb.compression_name(), name);
            assert_eq!(sb.compression().map(Compression::id), Some(id));
        }
        for id in [0, 7, 0xffff] {
            let sb = Superblock {
                compression_id: id,
                ..sample()
            };
            assert_eq!(sb.compression_name(), "unknown");
            assert_eq!(
                sb.validate(4096),
                Err(SquashfsError::UnknownCompression(id))
            );
        }
    }

    #[test]
    fn validate_bytes_used_too_small() {
        let sb = Superblock {
            bytes_used: 50,
            ..sample()
        };
        assert_eq!(sb.validate(4096), Err(SquashfsError::BytesUsedTooSmall(50)));
    }

    /// A table name and how to move that table.
    type TableSetter = (&'static str, fn(&mut Superblock, u64));

    #[test]
    fn validate_mandatory_tables() {
        let cases: [TableSetter; 3] = [
            ("inode", |sb, v| sb.inode_table_start = v),
            ("directory", |sb, v| sb.directory_table_start = v),
            ("id", |sb, v| sb.id_table_start = v),
        ];
        for (table, set) in cases {
            for start in [249, 10_000, NO_TABLE, 0, 95] {
                let mut sb = sample();
                set(&mut sb, start);
                assert_eq!(
                    sb.validate(1 << 20),
                    Err(SquashfsError::TableOutOfRange {
                        table,
                        start,
                        bytes_used: 249
                    }),
                    "{table} at {start}"
                );
            }
        }
    }

    #[test]
    fn validate_optional_tables() {
        let cases: [TableSetter; 3] = [
            ("fragment", |sb, v| sb.fragment_table_start = v),
            ("export", |sb, v| sb.export_table_start = v),
            ("xattr id", |sb, v| sb.xattr_id_table_start = v),
        ];
        for (table, set) in cases {
            let mut sb = sample();
            set(&mut sb, NO_TABLE);
            sb.validate(4096).unwrap();
            set(&mut sb, 200);
            sb.validate(4096).unwrap();
            set(&mut sb, 300);
            assert_eq!(
                sb.validate(4096),
                Err(SquashfsError::TableOutOfRange {
                    table,
                    start: 300,
                    bytes_used: 249
                })
            );
        }
    }

    #[test]
    fn messages_are_one_line() {
        let errors = [
            SquashfsError::TooShort { len: 3 },
            SquashfsError::BadMagic {
                found: *b"\n\n\n\n",
            },
            SquashfsError::UnsupportedVersion { major: 3, minor: 1 },
            SquashfsError::BadBlockSize { block_size: 3 },
            SquashfsError::BlockLogMismatch {
                block_size: 4096,
                block_log: 3,
            },
            SquashfsError::UnknownCompression(9),
            SquashfsError::BytesUsedTooSmall(1),
            SquashfsError::Truncated {
                bytes_used: 2,
                available: 1,
            },
            SquashfsError::TableOutOfRange {
                table: "id",
                start: 1,
                bytes_used: 2,
            },
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(!msg.contains('\n') && !msg.is_empty(), "{msg:?}");
        }
    }

    #[test]
    fn hex_formatting() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0a ff 00");
    }
}
