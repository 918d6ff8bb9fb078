//! SIF (Singularity Image Format) reading: the global header, the descriptor
//! table and the partition metadata, parsed by hand from little-endian,
//! packed bytes.
//!
//! Layout: a 128-byte global header at offset 0 (launch script 32, magic
//! `SIF_MAGIC\0` 10, version 3, arch 3, UUID 16, then eight i64: created,
//! modified, descriptors free, descriptors total, descriptors offset,
//! descriptors size, data offset, data size), then `total` descriptors of 585
//! bytes each at the header's descriptors offset. Each descriptor names an
//! object by its own offset and size; rfake trusts those and never computes
//! where an object "should" be.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use crate::bytes::{FieldReader, FieldWriter};
use crate::squashfs::superblock::hex;

/// The magic at byte [`MAGIC_OFFSET`] of every SIF file.
pub const SIF_MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// Where [`SIF_MAGIC`] sits: after the 32-byte launch script.
pub const MAGIC_OFFSET: usize = 32;
/// The only SIF format version rfake reads.
pub const SIF_VERSION: [u8; 3] = *b"01\0";
/// Size in bytes of the global header.
pub const HEADER_LEN: usize = 128;
/// Size in bytes of one descriptor.
pub const DESCRIPTOR_LEN: usize = 585;
/// Size of the launch script field.
pub const LAUNCH_LEN: usize = 32;
/// Size of a descriptor's name field.
pub const NAME_LEN: usize = 128;
/// Size of a descriptor's type-specific extra field.
pub const EXTRA_LEN: usize = 384;
/// Refuse descriptor tables larger than this before allocating anything.
pub const MAX_DESCRIPTORS: u64 = 65_536;
/// Bits set on a stored group id (and on a link to a group).
pub const GROUP_MASK: u32 = 0xf000_0000;

/// Whether `first_bytes` (the start of a file) carries the SIF magic.
pub fn is_sif(first_bytes: &[u8]) -> bool {
    first_bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + SIF_MAGIC.len()) == Some(&SIF_MAGIC[..])
}

/// Why a SIF file could not be read or has no usable root filesystem.
/// Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum SifError {
    /// Reading the file failed.
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    /// The file is shorter than the global header.
    #[error("truncated SIF header: the file has {len} bytes, a SIF header needs {HEADER_LEN}")]
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// No `SIF_MAGIC` at byte 32.
    #[error("corrupt SIF header: no SIF_MAGIC at byte {MAGIC_OFFSET} (found {})", hex(.found))]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 10],
    },
    /// A version other than `01`.
    #[error("unsupported SIF version {} (only 01 is supported)", printable(.version))]
    UnsupportedVersion {
        /// The version field as found.
        version: [u8; 3],
    },
    /// A header field has an impossible value.
    #[error("corrupt SIF header: {field} is {value}")]
    BadHeaderField {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// More descriptors than [`MAX_DESCRIPTORS`].
    #[error("corrupt SIF header: {total} descriptors (at most {MAX_DESCRIPTORS} are allowed)")]
    TooManyDescriptors {
        /// The descriptor count found.
        total: i64,
    },
    /// The header's descriptor table size cannot hold its descriptors.
    #[error(
        "corrupt SIF header: the descriptor table size {size} is smaller than the {needed} bytes its descriptors need"
    )]
    TableSizeMismatch {
        /// The size field.
        size: i64,
        /// `total * 585`.
        needed: u64,
    },
    /// The descriptor table runs past the end of the file.
    #[error(
        "truncated SIF descriptor table: it spans bytes {offset}..{end} but the file has only {len} bytes"
    )]
    TableTruncated {
        /// Table start.
        offset: u64,
        /// Table end.
        end: u64,
        /// File length.
        len: u64,
    },
    /// A used descriptor has an impossible value.
    #[error("corrupt SIF descriptor {index}: {field} is {value}")]
    BadDescriptor {
        /// Position in the descriptor table (0-based).
        index: usize,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// An object's data runs past the end of the file.
    #[error(
        "truncated SIF: object {id} spans bytes {offset}..{end} but the file has only {len} bytes"
    )]
    ObjectOutOfBounds {
        /// The object's id.
        id: u32,
        /// Its start.
        offset: u64,
        /// Its end (offset + size).
        end: u64,
        /// File length.
        len: u64,
    },
    /// No used partition descriptor with part type "primary system".
    #[error("no root filesystem: the SIF has no primary system partition")]
    NoPrimaryPartition,
    /// Several used primary system partitions: which one is the root?
    #[error(
        "ambiguous root filesystem: the SIF has {} primary system partitions (objects {})",
        .ids.len(),
        join_ids(.ids)
    )]
    MultiplePrimaryPartitions {
        /// Their object ids.
        ids: Vec<u32>,
    },
}

/// Shows a short byte field as text, escaping anything unprintable.
fn printable(bytes: &[u8]) -> String {
    let text = trim_nul(bytes);
    format!("\"{}\"", text.escape_debug())
}

/// Comma-separated ids.
fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bytes up to the first NUL, as (lossy) UTF-8.
fn trim_nul(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A SIF architecture code (3 ASCII bytes, NUL-terminated: `"02\0"` = amd64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `00`, and any code rfake does not know.
    Unknown = 0,
    /// `01`: 386.
    I386 = 1,
    /// `02`: amd64.
    Amd64 = 2,
    /// `03`: arm.
    Arm = 3,
    /// `04`: arm64.
    Arm64 = 4,
    /// `05`: ppc64 (big-endian).
    Ppc64 = 5,
    /// `06`: ppc64le.
    Ppc64le = 6,
    /// `07`: mips.
    Mips = 7,
    /// `08`: mipsle.
    Mipsle = 8,
    /// `09`: mips64.
    Mips64 = 9,
    /// `10`: mips64le.
    Mips64le = 10,
    /// `11`: s390x.
    S390x = 11,
    /// `12`: riscv64.
    Riscv64 = 12,
}

impl Arch {
    /// Every architecture, in code order (`ALL[n]` has code `n`).
    pub const ALL: [Arch; 13] = [
        Arch::Unknown,
        Arch::I386,
        Arch::Amd64,
        Arch::Arm,
        Arch::Arm64,
        Arch::Ppc64,
        Arch::Ppc64le,
        Arch::Mips,
        Arch::Mipsle,
        Arch::Mips64,
        Arch::Mips64le,
        Arch::S390x,
        Arch::Riscv64,
    ];

    /// The on-disk code, e.g. `*b"02\0"` for amd64.
    pub const fn code(self) -> [u8; 3] {
        let n = self as u8;
        [b'0' + n / 10, b'0' + n % 10, 0]
    }

    /// The Go-style name used by SIF tools: `amd64`, `arm64`, `ppc64le`...
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Unknown => "unknown",
            Arch::I386 => "386",
            Arch::Amd64 => "amd64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
            Arch::Ppc64 => "ppc64",
            Arch::Ppc64le => "ppc64le",
            Arch::Mips => "mips",
            Arch::Mipsle => "mipsle",
            Arch::Mips64 => "mips64",
            Arch::Mips64le => "mips64le",
            Arch::S390x => "s390x",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The architecture for an on-disk code; [`Arch::Unknown`] for `00` and
    /// for any code that is not exactly two digits and a NUL.
    pub fn from_code(code: &[u8; 3]) -> Arch {
        match code {
            [tens @ b'0'..=b'9', units @ b'0'..=b'9', 0] => {
                let n = usize::from((tens - b'0') * 10 + (units - b'0'));
                Self::ALL.get(n).copied().unwrap_or(Arch::Unknown)
            }
            _ => Arch::Unknown,
        }
    }

    /// The architecture this program was built for (and so runs on).
    pub fn host() -> Arch {
        Self::from_rust_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
    }

    /// Maps a Rust `target_arch` name and byte order to a SIF architecture.
    pub fn from_rust_arch(arch: &str, little_endian: bool) -> Arch {
        match (arch, little_endian) {
            ("x86", _) => Arch::I386,
            ("x86_64", _) => Arch::Amd64,
            ("arm", _) => Arch::Arm,
            ("aarch64", _) => Arch::Arm64,
            ("powerpc64", false) => Arch::Ppc64,
            ("powerpc64", true) => Arch::Ppc64le,
            ("mips", false) => Arch::Mips,
            ("mips", true) => Arch::Mipsle,
            ("mips64", false) => Arch::Mips64,
            ("mips64", true) => Arch::Mips64le,
            ("s390x", _) => Arch::S390x,
            ("riscv64", _) => Arch::Riscv64,
            _ => Arch::Unknown,
        }
    }

    /// Whether an image built for `self` can run on `host`: the same
    /// architecture, or 386 on amd64 (which x86-64 kernels run natively).
    /// An image of unknown architecture is let through, as nothing can be
    /// checked.
    pub fn runs_on(self, host: Arch) -> bool {
        self == Arch::Unknown || self == host || (self, host) == (Arch::I386, Arch::Amd64)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Declares a SIF `i32` enumeration with an `Unknown(i32)` fallback.
macro_rules! raw_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $raw:literal => $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value rfake does not know.
            Unknown(i32),
        }

        impl $name {
            /// Every known value.
            pub const KNOWN: &'static [$name] = &[$($name::$variant,)+];

            /// The value for an on-disk number.
            pub const fn from_raw(raw: i32) -> Self {
                match raw {
                    $($raw => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }

            /// The on-disk number.
            pub const fn raw(self) -> i32 {
                match self {
                    $($name::$variant => $raw,)+
                    $name::Unknown(raw) => raw,
                }
            }

            /// A short human-readable name.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::Unknown(raw) => write!(f, "unknown ({raw})"),
                    known => f.write_str(known.name()),
                }
            }
        }
    };
}

raw_enum! {
    /// What a descriptor's object holds.
    DataType {
        /// 0x4001: the definition file the image was built from.
        Deffile = 0x4001 => "definition file",
        /// 0x4002: environment variables.
        EnvVar = 0x4002 => "environment variables",
        /// 0x4003: JSON labels.
        Labels = 0x4003 => "JSON labels",
        /// 0x4004: a filesystem partition.
        Partition = 0x4004 => "partition",
        /// 0x4005: a signature.
        Signature = 0x4005 => "signature",
        /// 0x4006: generic JSON.
        GenericJson = 0x4006 => "generic JSON",
        /// 0x4007: generic data.
        Generic = 0x4007 => "generic",
        /// 0x4008: a cryptographic message.
        CryptoMessage = 0x4008 => "crypto message",
        /// 0x4009: a software bill of materials.
        Sbom = 0x4009 => "SBOM",
        /// 0x400a: an OCI root index.
        OciRootIndex = 0x400a => "OCI root index",
        /// 0x400b: an OCI blob.
        OciBlob = 0x400b => "OCI blob",
    }
}

raw_enum! {
    /// A partition's filesystem type.
    FsType {
        /// 1: SquashFS.
        Squashfs = 1 => "squashfs",
        /// 2: ext3.
        Ext3 = 2 => "ext3",
        /// 3: an immutable object archive.
        ImmutableObject = 3 => "immutable object",
        /// 4: raw data.
        Raw = 4 => "raw",
        /// 5: encrypted SquashFS.
        EncryptedSquashfs = 5 => "encrypted squashfs",
        /// 6: SquashFS inside gocryptfs.
        GocryptfsSquashfs = 6 => "gocryptfs squashfs",
    }
}

raw_enum! {
    /// A partition's role.
    PartType {
        /// 1: a system partition.
        System = 1 => "system",
        /// 2: the primary system partition: the root filesystem.
        PrimarySystem = 2 => "primary system",
        /// 3: a data partition.
        Data = 3 => "data",
        /// 4: an overlay partition.
        Overlay = 4 => "overlay",
    }
}

/// The global header, field for field (integers as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifHeader {
    /// The launch script (`#!/usr/bin/env run-singularity\n`), NUL padded.
    pub launch: [u8; LAUNCH_LEN],
    /// Format version, `01\0`.
    pub version: [u8; 3],
    /// Architecture code; see [`SifHeader::arch`].
    pub arch_code: [u8; 3],
    /// Image UUID.
    pub uuid: [u8; 16],
    /// Creation time (seconds since the epoch).
    pub created: i64,
    /// Modification time (seconds since the epoch).
    pub modified: i64,
    /// Unused descriptors.
    pub descriptors_free: i64,
    /// All descriptors, used or not.
    pub descriptors_total: i64,
    /// Where the descriptor table starts.
    pub descriptors_offset: i64,
    /// Size of the descriptor table in bytes.
    pub descriptors_size: i64,
    /// Where the data area starts.
    pub data_offset: i64,
    /// Size of the data area.
    pub data_size: i64,
}

impl SifHeader {
    /// Parses the 128-byte global header; checks only the magic.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<SifHeader, SifError> {
        let mut r = FieldReader::new(bytes);
        let launch = r.array();
        let magic: [u8; 10] = r.array();
        if magic != SIF_MAGIC {
            return Err(SifError::BadMagic { found: magic });
        }
        let header = SifHeader {
            launch,
            version: r.array(),
            arch_code: r.array(),
            uuid: r.array(),
            created: r.i64(),
            modified: r.i64(),
            descriptors_free: r.i64(),
            descriptors_total: r.i64(),
            descriptors_offset: r.i64(),
            descriptors_size: r.i64(),
            data_offset: r.i64(),
            data_size: r.i64(),
        };
        debug_assert!(r.is_done(), "header layout must cover 128 bytes");
        Ok(header)
    }

    /// Encodes the header as its 128 on-disk bytes (magic included).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut w = FieldWriter::<HEADER_LEN>::new();
        w.bytes(&self.launch);
        w.bytes(&SIF_MAGIC);
        w.bytes(&self.version);
        w.bytes(&self.arch_code);
        w.bytes(&self.uuid);
        for value in [
            self.created,
            self.modified,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ] {
            w.i64(value);
        }
        w.finish()
    }

    /// The image's main architecture.
    pub fn arch(&self) -> Arch {
        Arch::from_code(&self.arch_code)
    }

    /// The launch script, up to its first NUL.
    pub fn launch_script(&self) -> String {
        trim_nul(&self.launch)
    }

    /// Refuses any version but `01`.
    fn check_version(&self) -> Result<(), SifError> {
        if self.version == SIF_VERSION {
            Ok(())
        } else {
            Err(SifError::UnsupportedVersion {
                version: self.version,
            })
        }
    }

    /// Validates the descriptor table's place against the file length and
    /// returns its (offset, descriptor count).
    fn descriptor_table(&self, file_len: u64) -> Result<(u64, usize), SifError> {
        let total = self.descriptors_total;
        let count = u64::try_from(total).map_err(|_| SifError::BadHeaderField {
            field: "the descriptor count",
            value: total,
        })?;
        if count > MAX_DESCRIPTORS {
            return Err(SifError::TooManyDescriptors { total });
        }
        let offset = u64::try_from(self.descriptors_offset)
            .ok()
            .filter(|&offset| offset >= HEADER_LEN as u64)
            .ok_or(SifError::BadHeaderField {
                field: "the descriptor table offset",
                value: self.descriptors_offset,
            })?;
        // Both factors are bounded (65536 * 585), so this cannot overflow.
        let needed = count * DESCRIPTOR_LEN as u64;
        if u64::try_from(self.descriptors_size).map_or(true, |size| size < needed) {
            return Err(SifError::TableSizeMismatch {
                size: self.descriptors_size,
                needed,
            });
        }
        let end = offset.saturating_add(needed);
        if end > file_len {
            return Err(SifError::TableTruncated {
                offset,
                end,
                len: file_len,
            });
        }
        let count = usize::try_from(count).map_err(|_| SifError::TooManyDescriptors { total })?;
        Ok((offset, count))
    }
}

/// A partition descriptor's extra field: filesystem, role and architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Filesystem type.
    pub fstype: FsType,
    /// Partition role.
    pub parttype: PartType,
    /// Architecture code; see [`PartitionInfo::arch`].
    pub arch_code: [u8; 3],
}

impl PartitionInfo {
    /// Size of the meaningful part of the extra field.
    const LEN: usize = 11;

    /// Parses the start of a partition descriptor's extra field.
    pub fn parse(extra: &[u8]) -> Option<PartitionInfo> {
        let (head, _) = extra.split_first_chunk::<{ Self::LEN }>()?;
        let mut r = FieldReader::new(head);
        Some(PartitionInfo {
            fstype: FsType::from_raw(r.i32()),
            parttype: PartType::from_raw(r.i32()),
            arch_code: r.array(),
        })
    }

    /// Encodes as a full (384-byte, zero padded) extra field.
    pub fn to_extra(&self) -> Vec<u8> {
        let mut w = FieldWriter::<{ Self::LEN }>::new();
        w.i32(self.fstype.raw());
        w.i32(self.parttype.raw());
        w.bytes(&self.arch_code);
        let mut extra = w.finish().to_vec();
        extra.resize(EXTRA_LEN, 0);
        extra
    }

    /// The architecture of the programs in this partition.
    pub fn arch(&self) -> Arch {
        Arch::from_code(&self.arch_code)
    }
}

/// One used descriptor: an object in the SIF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// What the object holds.
    pub data_type: DataType,
    /// Whether the descriptor is in use ([`Sif::read`] keeps only used ones).
    pub used: bool,
    /// Object id (1-based).
    pub id: u32,
    /// Group id, with the stored [`GROUP_MASK`] removed (0: no group).
    pub group_id: u32,
    /// Linked object id, or a group id with [`GROUP_MASK`] set (0: none).
    pub linked_id: u32,
    /// Where the object's data starts in the file.
    pub offset: u64,
    /// Size of the object's data.
    pub size: u64,
    /// Size including alignment padding.
    pub size_with_padding: u64,
    /// Creation time (seconds since the epoch).
    pub created: i64,
    /// Modification time (seconds since the epoch).
    pub modified: i64,
    /// Owner uid recorded by the tool that wrote the object.
    pub uid: i64,
    /// Owner gid recorded by the tool that wrote the object.
    pub gid: i64,
    /// Object name, up to its first NUL.
    pub name: String,
    /// The type-specific extra field (384 bytes as read).
    pub extra: Vec<u8>,
}

impl Descriptor {
    /// Parses one 585-byte descriptor. `index` (its place in the table) is
    /// only used in error messages.
    pub fn parse(bytes: &[u8; DESCRIPTOR_LEN], index: usize) -> Result<Descriptor, SifError> {
        let mut r = FieldReader::new(bytes);
        let data_type = DataType::from_raw(r.i32());
        let used = r.u8() != 0;
        let id = r.u32();
        let group_id = r.u32() & !GROUP_MASK;
        let linked_id = r.u32();
        let mut non_negative = |field| {
            let value = r.i64();
            u64::try_from(value).map_err(|_| SifError::BadDescriptor {
                index,
                field,
                value,
            })
        };
        let offset = non_negative("the offset")?;
        let size = non_negative("the size")?;
        let size_with_padding = non_negative("the size with padding")?;
        let descriptor = Descriptor {
            data_type,
            used,
            id,
            group_id,
            linked_id,
            offset,
            size,
            size_with_padding,
            created: r.i64(),
            modified: r.i64(),
            uid: r.i64(),
            gid: r.i64(),
            name: trim_nul(&r.array::<NAME_LEN>()),
            extra: r.array::<EXTRA_LEN>().to_vec(),
        };
        debug_assert!(r.is_done(), "descriptor layout must cover 585 bytes");
        Ok(descriptor)
    }

    /// Encodes as the 585 on-disk bytes (group id stored with its mask; the
    /// name and extra field truncated or NUL padded to their sizes).
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut w = FieldWriter::<DESCRIPTOR_LEN>::new();
        w.i32(self.data_type.raw());
        w.bytes(&[u8::from(self.used)]);
        w.u32(self.id);
        w.u32(self.group_id | GROUP_MASK);
        w.u32(self.linked_id);
        for value in [self.offset, self.size, self.size_with_padding] {
            w.u64(value);
        }
        for value in [self.created, self.modified, self.uid, self.gid] {
            w.i64(value);
        }
        w.bytes(&padded::<NAME_LEN>(self.name.as_bytes()));
        w.bytes(&padded::<EXTRA_LEN>(&self.extra));
        w.finish()
    }

    /// The partition metadata, if this is a partition.
    pub fn partition(&self) -> Option<PartitionInfo> {
        (self.data_type == DataType::Partition)
            .then(|| PartitionInfo::parse(&self.extra))
            .flatten()
    }

    /// The group this object is linked to, if it links to a group.
    pub fn linked_group(&self) -> Option<u32> {
        (self.linked_id & GROUP_MASK != 0).then_some(self.linked_id & !GROUP_MASK)
    }

    /// The object this one is linked to, if it links to a single object.
    pub fn linked_object(&self) -> Option<u32> {
        (self.linked_id != 0 && self.linked_id & GROUP_MASK == 0).then_some(self.linked_id)
    }

    /// Refuses an object whose data runs past the end of the file.
    fn check_bounds(&self, file_len: u64) -> Result<(), SifError> {
        match self.offset.checked_add(self.size) {
            Some(end) if end <= file_len => Ok(()),
            end => Err(SifError::ObjectOutOfBounds {
                id: self.id,
                offset: self.offset,
                end: end.unwrap_or(u64::MAX),
                len: file_len,
            }),
        }
    }
}

/// `bytes` truncated or NUL padded to `N` bytes.
fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Whether a raw descriptor's `used` byte (right after the i32 type) is set.
fn is_used(raw: &[u8; DESCRIPTOR_LEN]) -> bool {
    raw.get(4).is_some_and(|&used| used != 0)
}

/// A parsed SIF file: its header and its used descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sif {
    /// The global header.
    pub header: SifHeader,
    /// The used descriptors, in table order (unused slots are skipped).
    pub descriptors: Vec<Descriptor>,
}

impl Sif {
    /// Reads and validates the header and descriptor table from `reader`
    /// (positioned anywhere: the file is read from offset 0). Checks the
    /// magic, the version, the descriptor count (at most
    /// [`MAX_DESCRIPTORS`], before allocating), that the table and every used
    /// object lie within the file.
    pub fn read<R: Read + Seek>(mut reader: R) -> Result<Sif, SifError> {
        let file_len = reader.seek(SeekFrom::End(0))?;
        if file_len < HEADER_LEN as u64 {
            return Err(SifError::TooShort { len: file_len });
        }
        reader.seek(SeekFrom::Start(0))?;
        let mut raw_header = [0; HEADER_LEN];
        reader.read_exact(&mut raw_header)?;
        let header = SifHeader::parse(&raw_header)?;
        header.check_version()?;
        let (offset, count) = header.descriptor_table(file_len)?;
        reader.seek(SeekFrom::Start(offset))?;
        let mut table = vec![0; count * DESCRIPTOR_LEN];
        reader.read_exact(&mut table)?;
        let descriptors = parse_table(&table, file_len)?;
        Ok(Sif {
            header,
            descriptors,
        })
    }

    /// The descriptor of the root filesystem: the one used partition whose
    /// part type is "primary system".
    pub fn primary_partition(&self) -> Result<&Descriptor, SifError> {
        self.root_partition().map(|(descriptor, _)| descriptor)
    }

    /// The offset of the ext3 overlay partition (Apptainer's persistent
    /// overlay inside the SIF file), if there is one.
    pub fn overlay_partition(&self) -> Option<u64> {
        self.descriptors
            .iter()
            .find(|d| {
                d.partition()
                    .is_some_and(|p| p.parttype == PartType::Overlay && p.fstype == FsType::Ext3)
            })
            .map(|d| d.offset)
    }

    /// The root filesystem's descriptor together with its partition metadata.
    pub fn root_partition(&self) -> Result<(&Descriptor, PartitionInfo), SifError> {
        let mut primaries = self.descriptors.iter().filter_map(|d| {
            d.partition()
                .filter(|p| p.parttype == PartType::PrimarySystem)
                .map(|p| (d, p))
        });
        let first = primaries.next().ok_or(SifError::NoPrimaryPartition)?;
        let others: Vec<u32> = primaries.map(|(d, _)| d.id).collect();
        if others.is_empty() {
            Ok(first)
        } else {
            let ids = std::iter::once(first.0.id).chain(others).collect();
            Err(SifError::MultiplePrimaryPartitions { ids })
        }
    }

    /// The used descriptor with object id `id`.
    pub fn descriptor(&self, id: u32) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.id == id)
    }
}

/// Parses the used descriptors of a raw table and checks their bounds.
fn parse_table(table: &[u8], file_len: u64) -> Result<Vec<Descriptor>, SifError> {
    let mut descriptors = Vec::new();
    for (index, chunk) in table.chunks_exact(DESCRIPTOR_LEN).enumerate() {
        let Ok(raw) = <&[u8; DESCRIPTOR_LEN]>::try_from(chunk) else {
            continue; // chunks_exact only yields whole descriptors
        };
        if is_used(raw) {
            let descriptor = Descriptor::parse(raw, index)?;
            descriptor.check_bounds(file_len)?;
            descriptors.push(descriptor);
        }
    }
    Ok(descriptors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_support::{SifBuilder, sample_squashfs_bytes, sif_test_dir};
    use std::fs::File;
    use std::io::Cursor;
    use std::path::Path;

    fn read_bytes(bytes: Vec<u8>) -> Result<Sif, SifError> {
        Sif::read(Cursor::new(bytes))
    }

    fn read_shared(dir: &Path, name: &str) -> Sif {
        let file = File::open(dir.join(name)).unwrap();
        Sif::read(file).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn types(sif: &Sif) -> Vec<DataType> {
        sif.descriptors.iter().map(|d| d.data_type).collect()
    }

    #[test]
    fn magic_detection() {
        let mut head = vec![0; 64];
        head[32..42].copy_from_slice(b"SIF_MAGIC\0");
        assert!(is_sif(&head));
        assert!(is_sif(&head[..42]));
        assert!(!is_sif(&head[..41]));
        head[41] = b'X';
        assert!(!is_sif(&head));
        assert!(!is_sif(b"SIF_MAGIC\0"));
        assert!(!is_sif(&[]));
    }

    #[test]
    fn arch_codes_round_trip() {
        let expected = [
            (Arch::Unknown, "00", "unknown"),
            (Arch::I386, "01", "386"),
            (Arch::Amd64, "02", "amd64"),
            (Arch::Arm, "03", "arm"),
            (Arch::Arm64, "04", "arm64"),
            (Arch::Ppc64, "05", "ppc64"),
            (Arch::Ppc64le, "06", "ppc64le"),
            (Arch::Mips, "07", "mips"),
            (Arch::Mipsle, "08", "mipsle"),
            (Arch::Mips64, "09", "mips64"),
            (Arch::Mips64le, "10", "mips64le"),
            (Arch::S390x, "11", "s390x"),
            (Arch::Riscv64, "12", "riscv64"),
        ];
        assert_eq!(expected.len(), Arch::ALL.len());
        for (arch, code, name) in expected {
            let mut raw = [0u8; 3];
            raw[..2].copy_from_slice(code.as_bytes());
            assert_eq!(arch.code(), raw);
            assert_eq!(Arch::from_code(&raw), arch);
            assert_eq!(arch.name(), name);
            assert_eq!(arch.to_string(), name);
        }
    }

    #[test]
    fn arch_unknown_codes() {
        for code in [
            b"13\0",
            b"99\0",
            b"02 ",
            b"2\0\0",
            b"\0\0\0",
            b"ab\0",
            b"\xff\xff\0",
        ] {
            assert_eq!(Arch::from_code(code), Arch::Unknown, "{code:?}");
        }
    }

    #[test]
    fn arch_from_rust_arch() {
        let cases = [
            ("x86", true, Arch::I386),
            ("x86_64", true, Arch::Amd64),
            ("arm", true, Arch::Arm),
            ("aarch64", true, Arch::Arm64),
            ("powerpc64", false, Arch::Ppc64),
            ("powerpc64", true, Arch::Ppc64le),
            ("mips", false, Arch::Mips),
            ("mips", true, Arch::Mipsle),
            ("mips64", false, Arch::Mips64),
            ("mips64", true, Arch::Mips64le),
            ("s390x", false, Arch::S390x),
            ("riscv64", true, Arch::Riscv64),
            ("loongarch64", true, Arch::Unknown),
            ("wasm32", true, Arch::Unknown),
        ];
        for (rust, le, arch) in cases {
            assert_eq!(Arch::from_rust_arch(rust, le), arch, "{rust}");
        }
    }

    #[test]
    fn arch_host_matches_build_target() {
        let host = Arch::host();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host, Arch::Amd64);
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(host, Arch::Arm64);
        }
    }

    #[test]
    fn arch_compatibility() {
        assert!(Arch::Amd64.runs_on(Arch::Amd64));
        assert!(Arch::I386.runs_on(Arch::Amd64));
        assert!(Arch::Unknown.runs_on(Arch::Arm64));
        assert!(!Arch::Arm64.runs_on(Arch::Amd64));
        assert!(!Arch::Amd64.runs_on(Arch::I386));
        assert!(!Arch::Arm.runs_on(Arch::Arm64));
        assert!(!Arch::Ppc64.runs_on(Arch::Ppc64le));
        assert!(!Arch::Amd64.runs_on(Arch::Unknown));
    }

    #[test]
    fn raw_enums() {
        assert_eq!(DataType::KNOWN.len(), 11);
        for (i, t) in DataType::KNOWN.iter().enumerate() {
            let raw = 0x4001 + i32::try_from(i).unwrap();
            assert_eq!(t.raw(), raw);
            assert_eq!(DataType::from_raw(raw), *t);
        }
        assert_eq!(DataType::from_raw(0x4004), DataType::Partition);
        assert_eq!(DataType::from_raw(0x400b), DataType::OciBlob);
        assert_eq!(DataType::from_raw(0x4000), DataType::Unknown(0x4000));
        assert_eq!(DataType::Unknown(7).raw(), 7);
        assert_eq!(FsType::from_raw(1), FsType::Squashfs);
        assert_eq!(FsType::from_raw(6), FsType::GocryptfsSquashfs);
        assert_eq!(FsType::from_raw(0), FsType::Unknown(0));
        assert_eq!(FsType::Ext3.to_string(), "ext3");
        assert_eq!(FsType::Unknown(9).to_string(), "unknown (9)");
        assert_eq!(PartType::from_raw(2), PartType::PrimarySystem);
        assert_eq!(PartType::from_raw(4), PartType::Overlay);
        assert_eq!(PartType::from_raw(-1), PartType::Unknown(-1));
    }

    #[test]
    fn header_round_trip_and_layout() {
        let header = SifHeader {
            launch: padded(b"#!/usr/bin/env run-singularity\n"),
            version: SIF_VERSION,
            arch_code: Arch::Arm64.code(),
            uuid: [7; 16],
            created: 1,
            modified: 2,
            descriptors_free: 3,
            descriptors_total: 4,
            descriptors_offset: 5,
            descriptors_size: 6,
            data_offset: 7,
            data_size: 8,
        };
        let bytes = header.to_bytes();
        assert!(is_sif(&bytes));
        assert_eq!(&bytes[42..48], b"01\x0004\0");
        assert_eq!(bytes[88], 4, "descriptors total at byte 88");
        assert_eq!(bytes[96], 5, "descriptors offset at byte 96");
        assert_eq!(bytes[120], 8, "data size at byte 120");
        let parsed = SifHeader::parse(&bytes).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(parsed.arch(), Arch::Arm64);
        assert_eq!(parsed.launch_script(), "#!/usr/bin/env run-singularity\n");
    }

    #[test]
    fn descriptor_round_trip_and_layout() {
        let info = PartitionInfo {
            fstype: FsType::Squashfs,
            parttype: PartType::PrimarySystem,
            arch_code: Arch::Amd64.code(),
        };
        let descriptor = Descriptor {
            data_type: DataType::Partition,
            used: true,
            id: 4,
            group_id: 1,
            linked_id: 0,
            offset: 45056,
            size: 745_472,
            size_with_padding: 749_478,
            created: 10,
            modified: 11,
            uid: 1000,
            gid: 1001,
            name: "squashfs-1".into(),
            extra: info.to_extra(),
        };
        let bytes = descriptor.to_bytes();
        assert_eq!(&bytes[..5], &[0x04, 0x40, 0, 0, 1]);
        assert_eq!(&bytes[9..13], &[1, 0, 0, 0xf0], "group id stored with mask");
        assert_eq!(&bytes[73..83], b"squashfs-1");
        assert_eq!(&bytes[201..212], b"\x01\0\0\0\x02\0\0\0\x30\x32\0");
        let parsed = Descriptor::parse(&bytes, 0).unwrap();
        assert_eq!(parsed, descriptor);
        assert_eq!(parsed.partition(), Some(info));
        assert_eq!(info.arch(), Arch::Amd64);
    }

    #[test]
    fn descriptor_links() {
        let mut d = SifBuilder::descriptor(DataType::Signature, 5);
        d.linked_id = 0xf000_0001;
        assert_eq!(d.linked_group(), Some(1));
        assert_eq!(d.linked_object(), None);
        d.linked_id = 2;
        assert_eq!(d.linked_group(), None);
        assert_eq!(d.linked_object(), Some(2));
        d.linked_id = 0;
        assert_eq!(d.linked_group(), None);
        assert_eq!(d.linked_object(), None);
    }

    #[test]
    fn partition_info_only_for_partitions() {
        let mut d = SifBuilder::descriptor(DataType::GenericJson, 1);
        d.extra = PartitionInfo {
            fstype: FsType::Squashfs,
            parttype: PartType::PrimarySystem,
            arch_code: Arch::Amd64.code(),
        }
        .to_extra();
        assert_eq!(d.partition(), None);
        d.data_type = DataType::Partition;
        assert!(d.partition().is_some());
        d.extra.truncate(5);
        assert_eq!(d.partition(), None);
    }

    #[test]
    fn negative_descriptor_fields_are_refused() {
        let mut bytes = SifBuilder::descriptor(DataType::Partition, 1).to_bytes();
        bytes[25..33].copy_from_slice(&(-1i64).to_le_bytes());
        let err = Descriptor::parse(&bytes, 3).unwrap_err();
        assert!(
            matches!(
                err,
                SifError::BadDescriptor {
                    index: 3,
                    field: "the size",
                    value: -1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn synthetic_sif_reads_back() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .object(DataType::Deffile, b"bootstrap: scratch\n".to_vec())
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let sif = read_bytes(bytes).unwrap();
        assert_eq!(sif.header.arch(), Arch::Amd64);
        assert_eq!(types(&sif), [DataType::Deffile, DataType::Partition]);
        let root = sif.primary_partition().unwrap();
        assert_eq!(root.id, 2);
        assert_eq!(sif.descriptor(2), Some(root));
        assert_eq!(sif.descriptor(3), None);
    }

    #[test]
    fn unused_descriptors_are_skipped() {
        let mut builder = SifBuilder::new(Arch::Amd64)
            .object(DataType::Generic, vec![1, 2, 3])
            .primary(FsType::Squashfs, sample_squashfs_bytes());
        builder.descriptors[1].used = false;
        let sif = read_bytes(builder.build()).unwrap();
        assert_eq!(types(&sif), [DataType::Generic]);
        assert!(matches!(
            sif.primary_partition(),
            Err(SifError::NoPrimaryPartition)
        ));
    }

    #[test]
    fn unused_descriptors_are_not_validated() {
        let mut builder = SifBuilder::new(Arch::Amd64).primary(FsType::Squashfs, vec![0; 8]);
        let mut junk = SifBuilder::descriptor(DataType::Partition, 9);
        junk.used = false;
        junk.offset = u64::MAX;
        builder.descriptors.push(junk);
        read_bytes(builder.build()).unwrap();
    }

    #[test]
    fn two_primary_partitions_are_ambiguous() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let sif = read_bytes(bytes).unwrap();
        let err = sif.primary_partition().unwrap_err();
        assert!(
            matches!(&err, SifError::MultiplePrimaryPartitions { ids } if ids == &[1, 2]),
            "{err}"
        );
        assert!(err.to_string().contains("objects 1, 2"), "{err}");
    }

    #[test]
    fn too_short_for_header() {
        let bytes = SifBuilder::new(Arch::Amd64).build();
        let err = read_bytes(bytes[..127].to_vec()).unwrap_err();
        assert!(matches!(err, SifError::TooShort { len: 127 }), "{err}");
        let err = read_bytes(Vec::new()).unwrap_err();
        assert!(matches!(err, SifError::TooShort { len: 0 }), "{err}");
    }

    #[test]
    fn bad_magic() {
        let mut bytes = SifBuilder::new(Arch::Amd64).build();
        bytes[33] = b'X';
        let err = read_bytes(bytes).unwrap_err();
        assert!(matches!(err, SifError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn unsupported_version() {
        let mut builder = SifBuilder::new(Arch::Amd64);
        builder.header.version = *b"02\0";
        let err = read_bytes(builder.build()).unwrap_err();
        assert!(matches!(err, SifError::UnsupportedVersion { .. }), "{err}");
        assert!(err.to_string().contains("\"02\""), "{err}");
    }

    #[test]
    fn absurd_descriptor_count() {
        for total in [MAX_DESCRIPTORS as i64 + 1, i64::MAX] {
            let mut builder = SifBuilder::new(Arch::Amd64);
            builder.header.descriptors_total = total;
            builder.header.descriptors_size = i64::MAX;
            let err = read_bytes(builder.build()).unwrap_err();
            assert!(
                matches!(err, SifError::TooManyDescriptors { total: t } if t == total),
                "{err}"
            );
        }
        let mut builder = SifBuilder::new(Arch::Amd64);
        builder.header.descriptors_total = -1;
        let err = read_bytes(builder.build()).unwrap_err();
        assert!(
            matches!(err, SifError::BadHeaderField { value: -1, .. }),
            "{err}"
        );
    }

    #[test]
    fn large_count_beyond_file_is_truncated_table() {
        let mut builder = SifBuilder::new(Arch::Amd64);
        builder.header.descriptors_total = MAX_DESCRIPTORS as i64;
        builder.header.descriptors_size = i64::MAX;
        let err = read_bytes(builder.build()).unwrap_err();
        assert!(matches!(err, SifError::TableTruncated { .. }), "{err}");
    }

    #[test]
    fn bad_table_offset_and_size() {
        for offset in [-1, 0, 127] {
            let mut builder = SifBuilder::new(Arch::Amd64);
            builder.header.descriptors_offset = offset;
            let err = read_bytes(builder.build()).unwrap_err();
            assert!(
                matches!(err, SifError::BadHeaderField { value, .. } if value == offset),
                "{err}"
            );
        }
        let mut builder = SifBuilder::new(Arch::Amd64);
        builder.header.descriptors_size = 585;
        let err = read_bytes(builder.build()).unwrap_err();
        assert!(matches!(err, SifError::TableSizeMismatch { .. }), "{err}");
    }

    #[test]
    fn truncated_in_descriptor_table() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let cut = SifBuilder::TABLE_OFFSET + 2 * DESCRIPTOR_LEN + 10;
        let err = read_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(err, SifError::TableTruncated { offset: 4096, len, .. } if len == cut as u64),
            "{err}"
        );
    }

    #[test]
    fn object_beyond_end_of_file() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let cut = bytes.len() - 1;
        let err = read_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(err, SifError::ObjectOutOfBounds { id: 1, .. }),
            "{err}"
        );
        let mut bytes = SifBuilder::new(Arch::Amd64)
            .object(DataType::Generic, vec![0; 4])
            .build();
        let far = i64::MAX as u64 - 1;
        SifBuilder::patch(&mut bytes, 0, |d| d.offset = far);
        let err = read_bytes(bytes).unwrap_err();
        assert!(
            matches!(err, SifError::ObjectOutOfBounds { offset, end, .. } if offset == far && end == far + 4),
            "{err}"
        );
    }

    #[test]
    fn error_messages_are_one_line() {
        let errors = [
            SifError::Io(io::Error::other("boom")),
            SifError::TooShort { len: 1 },
            SifError::BadMagic { found: [b'\n'; 10] },
            SifError::UnsupportedVersion {
                version: *b"\n\n\n",
            },
            SifError::BadHeaderField {
                field: "x",
                value: -1,
            },
            SifError::TooManyDescriptors { total: 1 << 40 },
            SifError::TableSizeMismatch { size: 1, needed: 2 },
            SifError::TableTruncated {
                offset: 1,
                end: 2,
                len: 1,
            },
            SifError::BadDescriptor {
                index: 1,
                field: "x",
                value: -1,
            },
            SifError::ObjectOutOfBounds {
                id: 1,
                offset: 1,
                end: 2,
                len: 1,
            },
            SifError::NoPrimaryPartition,
            SifError::MultiplePrimaryPartitions { ids: vec![1, 2] },
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
        }
    }

    // ---- the shared, real-world SIF files ----

    #[test]
    fn shared_busybox_images() {
        let Some(dir) = sif_test_dir() else { return };
        let cases = [
            ("busybox_amd64.sif", Arch::Amd64, 45056, 745_472),
            ("busybox_arm64.sif", Arch::Arm64, 45056, 794_624),
            ("busybox_ppc64le.sif", Arch::Ppc64le, 262_144, 2_568_192),
        ];
        for (name, arch, offset, size) in cases {
            let sif = read_shared(&dir, name);
            assert_eq!(sif.header.arch(), arch, "{name}");
            assert_eq!(
                types(&sif),
                [
                    DataType::Deffile,
                    DataType::GenericJson,
                    DataType::GenericJson,
                    DataType::Partition,
                    DataType::Signature
                ],
                "{name}"
            );
            let names: Vec<&str> = sif.descriptors.iter().map(|d| d.name.as_str()).collect();
            assert_eq!(names[1..3], ["inspect-metadata.json", "oci-config.json"]);
            let (root, info) = sif.root_partition().unwrap();
            assert_eq!(
                (root.id, root.offset, root.size),
                (4, offset, size),
                "{name}"
            );
            assert_eq!(root.group_id, 1);
            assert_eq!(info.fstype, FsType::Squashfs);
            assert_eq!(info.arch(), arch);
            let signature = &sif.descriptors[4];
            assert_eq!(signature.group_id, 0);
            assert_eq!(signature.linked_group(), Some(1));
        }
    }

    #[test]
    fn shared_empty_images() {
        let Some(dir) = sif_test_dir() else { return };
        for name in ["empty.sif", "empty-id.sif", "empty-launch-script.sif"] {
            let sif = read_shared(&dir, name);
            assert!(sif.descriptors.is_empty(), "{name}");
            assert_eq!(sif.header.descriptors_total, 48);
            assert_eq!(sif.header.arch(), Arch::Unknown);
            assert!(matches!(
                sif.primary_partition(),
                Err(SifError::NoPrimaryPartition)
            ));
        }
        let sif = read_shared(&dir, "empty-launch-script.sif");
        assert_eq!(sif.header.launch_script(), "#!/usr/bin/env run-script\n");
        let sif = read_shared(&dir, "empty-id.sif");
        assert_ne!(sif.header.uuid, [0; 16]);
    }

    #[test]
    fn shared_one_object_images() {
        let Some(dir) = sif_test_dir() else { return };
        let cases = [
            ("one-object-crypt-message.sif", DataType::CryptoMessage),
            ("one-object-generic-json.sif", DataType::GenericJson),
            ("one-object-oci-blob.sif", DataType::OciBlob),
            ("one-object-oci-root-index.sif", DataType::OciRootIndex),
            ("one-object-sbom.sif", DataType::Sbom),
            ("one-object-time.sif", DataType::GenericJson),
        ];
        for (name, data_type) in cases {
            let sif = read_shared(&dir, name);
            assert_eq!(types(&sif), [data_type], "{name}");
            assert!(matches!(
                sif.primary_partition(),
                Err(SifError::NoPrimaryPartition)
            ));
        }
    }

    #[test]
    fn shared_group_images() {
        let Some(dir) = sif_test_dir() else { return };
        let names = [
            "one-group.sif",
            "one-group-signed-dsse.sif",
            "one-group-signed-pgp.sif",
            "one-group-signed-legacy.sif",
            "one-group-signed-legacy-all.sif",
            "one-group-signed-legacy-group.sif",
            "two-groups.sif",
            "two-groups-signed-dsse.sif",
            "two-groups-signed-pgp.sif",
            "two-groups-signed-legacy.sif",
            "two-groups-signed-legacy-all.sif",
            "two-groups-signed-legacy-group.sif",
        ];
        for name in names {
            let sif = read_shared(&dir, name);
            assert_eq!(sif.header.arch(), Arch::I386, "{name}");
            let first = &sif.descriptors[0];
            let info = first.partition().unwrap();
            assert_eq!(
                (info.fstype, info.parttype),
                (FsType::Raw, PartType::System)
            );
            let (root, info) = sif.root_partition().unwrap();
            assert_eq!(
                (root.id, root.offset, root.group_id),
                (2, 36864, 1),
                "{name}"
            );
            assert_eq!(info.fstype, FsType::Squashfs);
            let legacy = name.contains("legacy");
            assert_eq!(root.size, if legacy { 4 } else { 4096 }, "{name}");
            if name.starts_with("two-groups") {
                let ext3 = &sif.descriptors[2];
                let info = ext3.partition().unwrap();
                assert_eq!((ext3.id, ext3.group_id), (3, 2), "{name}");
                assert_eq!(
                    (info.fstype, info.parttype),
                    (FsType::Ext3, PartType::System)
                );
                assert_eq!(info.arch(), Arch::Amd64);
            }
            let signed = name.contains("signed");
            let has_signature = types(&sif).contains(&DataType::Signature);
            assert_eq!(signed, has_signature, "{name}");
        }
    }

    #[test]
    fn shared_dir_is_present_in_ci() {
        // Fails under CI=true when the shared test data is missing.
        if let Some(dir) = sif_test_dir() {
            assert!(dir.join("README.md").is_file());
        }
    }
}
