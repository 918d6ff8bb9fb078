//! Image detection: decide by content whether a path is a bare SquashFS, a
//! SIF file or an unpacked root directory, validate it, and describe where
//! its SquashFS root filesystem lives for the mount layer.
//!
//! Nothing here mounts or decompresses anything; the checks are the header
//! and superblock sanity checks that let rfake refuse a bad image with a clear
//! one-line message before any namespace is set up.

pub mod sif;

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::exit::ExitKind;
use crate::input::{self, FileKind, InputError};
use crate::squashfs::superblock::{self, SquashfsError, Superblock};
use crate::text::shown;
use sif::{Arch, Descriptor, FsType, PartitionInfo, Sif, SifError, SifHeader};

/// How many bytes are read from the start of a file to detect its format
/// (enough for the SIF magic at byte 32 and a whole SquashFS superblock).
const PROBE_LEN: u64 = 128;

/// What kind of image a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A bare SquashFS file.
    Squashfs,
    /// A SIF file whose primary system partition is a SquashFS.
    Sif,
    /// A directory used as the root filesystem as it is.
    Directory,
}

/// A validated image, ready for the mount layer.
#[derive(Debug, Clone)]
pub struct Image {
    /// Canonical absolute path (`std::fs::canonicalize`).
    pub path: PathBuf,
    /// The detected format.
    pub format: ImageFormat,
    /// Where the SquashFS starts in the file: 0 for a bare SquashFS, the
    /// primary partition's descriptor offset for SIF, None for a directory.
    pub squashfs_offset: Option<u64>,
    /// The validated superblock (None for a directory).
    pub squashfs: Option<superblock::Superblock>,
    /// The architecture the image was built for (SIF only).
    pub arch: Option<sif::Arch>,
    /// Where the SIF file's ext3 overlay partition starts, if it has one.
    pub overlay_partition: Option<u64>,
    /// The file that was validated (None for a directory): the mount layer
    /// serves this very file, so a path swapped after validation changes
    /// nothing.
    pub file: Option<std::sync::Arc<File>>,
}

/// Why an image was refused. Every message is one line naming the path (as
/// the caller gave it) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The path does not exist.
    #[error("image {}: no such file or directory", shown(.path))]
    NotFound {
        /// The image path.
        path: PathBuf,
    },
    /// The path exists but cannot be opened or read.
    #[error("image {}: cannot read: {source}", shown(.path))]
    Unreadable {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A device, FIFO or socket rather than a file or directory.
    #[error(
        "image {}: unsupported file type: {kind} (expected a regular file or a directory)",
        shown(.path)
    )]
    NotAFile {
        /// The image path.
        path: PathBuf,
        /// What it is instead ("FIFO", "socket"...).
        kind: &'static str,
    },
    /// A file that is neither SquashFS nor SIF.
    #[error("image {}: not a SquashFS, SIF or directory image ({detail})", shown(.path))]
    UnknownFormat {
        /// The image path.
        path: PathBuf,
        /// "the file is empty", or the first bytes found.
        detail: String,
    },
    /// The SquashFS superblock is truncated or corrupt.
    #[error("image {}: SquashFS at offset {offset}: {source}", shown(.path))]
    Squashfs {
        /// The image path.
        path: PathBuf,
        /// Where the SquashFS starts in the file.
        offset: u64,
        /// What is wrong with it.
        #[source]
        source: SquashfsError,
    },
    /// The SIF header or descriptor table is corrupt, or it has no (or more
    /// than one) primary system partition.
    #[error("image {}: {source}", shown(.path))]
    Sif {
        /// The image path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: SifError,
    },
    /// The SIF root partition holds a filesystem other than SquashFS.
    #[error(
        "image {}: the SIF root filesystem (object {id}) is {fstype}, not squashfs",
        shown(.path)
    )]
    RootNotSquashfs {
        /// The image path.
        path: PathBuf,
        /// The partition's object id.
        id: u32,
        /// Its filesystem type.
        fstype: FsType,
    },
    /// The SIF root partition's data does not start with `hsqs`.
    #[error(
        "image {}: the SIF root filesystem (object {id}) at offset {offset} is not a SquashFS: found bytes {} instead of 68 73 71 73 (\"hsqs\")",
        shown(.path),
        superblock::hex(.found)
    )]
    RootBadMagic {
        /// The image path.
        path: PathBuf,
        /// The partition's object id.
        id: u32,
        /// The partition's offset (from its descriptor).
        offset: u64,
        /// Up to four bytes found there.
        found: Vec<u8>,
    },
    /// The image was built for an architecture this host cannot run.
    #[error(
        "image {}: architecture mismatch: built for {image}, this host is {host}",
        shown(.path)
    )]
    ArchMismatch {
        /// The image path.
        path: PathBuf,
        /// The image's architecture.
        image: Arch,
        /// The host's architecture.
        host: Arch,
    },
}

impl ImageError {
    /// The documented exit code class for this failure.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            ImageError::NotFound { .. }
            | ImageError::Unreadable { .. }
            | ImageError::Sif {
                source: SifError::Io(_),
                ..
            } => ExitKind::NoInput,
            _ => ExitKind::BadImage,
        }
    }

    /// The image path the error is about (as the caller gave it).
    pub fn path(&self) -> &Path {
        match self {
            ImageError::NotFound { path }
            | ImageError::Unreadable { path, .. }
            | ImageError::NotAFile { path, .. }
            | ImageError::UnknownFormat { path, .. }
            | ImageError::Squashfs { path, .. }
            | ImageError::Sif { path, .. }
            | ImageError::RootNotSquashfs { path, .. }
            | ImageError::RootBadMagic { path, .. }
            | ImageError::ArchMismatch { path, .. } => path,
        }
    }

    /// Classifies an I/O error on `path`: missing, or unreadable.
    fn io(path: &Path, source: io::Error) -> ImageError {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::NotFound {
            ImageError::NotFound { path }
        } else {
            ImageError::Unreadable { path, source }
        }
    }

    /// Wraps a SIF error; read failures are reported as unreadable input.
    fn sif(path: &Path, source: SifError) -> ImageError {
        match source {
            SifError::Io(source) => ImageError::io(path, source),
            source => ImageError::Sif {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// Detect by content (never by file name), validate, and describe the image
/// at `path`. A directory is accepted as an unpacked root. Opens the file
/// once. The SIF architecture is checked against [`Arch::host`].
pub fn open(path: &Path) -> Result<Image, ImageError> {
    open_for_arch(path, Arch::host())
}

/// Same as [`open`], with the host architecture given explicitly.
pub fn open_for_arch(path: &Path, host: Arch) -> Result<Image, ImageError> {
    let canonical = fs::canonicalize(path).map_err(|e| ImageError::io(path, e))?;
    let metadata = fs::metadata(&canonical).map_err(|e| ImageError::io(path, e))?;
    if metadata.is_dir() {
        return Ok(Image::directory(canonical));
    }
    // Opened without blocking and checked on the open descriptor (the path
    // may have been swapped since the stat): see `crate::input`.
    let (mut file, metadata) = input::open_regular(&canonical).map_err(|e| match e {
        InputError::NotRegular(FileKind::Directory) => ImageError::NotAFile {
            path: path.to_path_buf(),
            kind: "directory (replaced while being opened)",
        },
        InputError::NotRegular(kind) => ImageError::NotAFile {
            path: path.to_path_buf(),
            kind: kind.name(),
        },
        e => ImageError::io(path, e.into()),
    })?;
    let probe = read_at(&mut file, 0, PROBE_LEN).map_err(|e| ImageError::io(path, e))?;
    let opened = Opened {
        path,
        file,
        len: metadata.len(),
    };
    if superblock::has_magic(&probe) {
        opened.bare_squashfs(canonical, &probe)
    } else if sif::is_sif(&probe) {
        opened.sif(canonical, host)
    } else {
        Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
            detail: describe_start(&probe),
        })
    }
}

impl Image {
    /// An unpacked root directory.
    fn directory(path: PathBuf) -> Image {
        Image {
            path,
            format: ImageFormat::Directory,
            squashfs_offset: None,
            squashfs: None,
            arch: None,
            overlay_partition: None,
            file: None,
        }
    }
}

/// Reads up to `limit` bytes at `offset` (fewer only at the end of the file).
fn read_at(file: &mut File, offset: u64, limit: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.by_ref().take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Describes an unrecognised file's first bytes for an error message.
fn describe_start(probe: &[u8]) -> String {
    if probe.is_empty() {
        return "the file is empty".to_owned();
    }
    let start = &probe[..probe.len().min(8)];
    format!("it starts with {}", superblock::hex(start))
}

/// An open regular file being validated.
struct Opened<'a> {
    /// The path as the caller gave it, for messages.
    path: &'a Path,
    /// The image file.
    file: File,
    /// Its length.
    len: u64,
}

impl Opened<'_> {
    /// A bare SquashFS: the superblock at offset 0, the whole file available.
    fn bare_squashfs(self, canonical: PathBuf, probe: &[u8]) -> Result<Image, ImageError> {
        let superblock = self.superblock(0, probe, self.len)?;
        Ok(Image {
            path: canonical,
            format: ImageFormat::Squashfs,
            squashfs_offset: Some(0),
            squashfs: Some(superblock),
            arch: None,
            overlay_partition: None,
            file: Some(std::sync::Arc::new(self.file)),
        })
    }

    /// A SIF: its primary system partition must be a sound SquashFS for an
    /// architecture `host` can run.
    fn sif(mut self, canonical: PathBuf, host: Arch) -> Result<Image, ImageError> {
        let sif = Sif::read(&mut self.file).map_err(|e| ImageError::sif(self.path, e))?;
        let (root, info) = sif
            .root_partition()
            .map_err(|e| ImageError::sif(self.path, e))?;
        let superblock = self.root_superblock(root, &info)?;
        let arch = self.check_arch(&sif.header, &info, host)?;
        Ok(Image {
            path: canonical,
            format: ImageFormat::Sif,
            squashfs_offset: Some(root.offset),
            squashfs: Some(superblock),
            arch: Some(arch),
            overlay_partition: sif.overlay_partition(),
            file: Some(std::sync::Arc::new(self.file)),
        })
    }

    /// The SquashFS superblock of the root partition, at the descriptor's
    /// own offset, checked against the descriptor's size.
    fn root_superblock(
        &mut self,
        root: &Descriptor,
        info: &PartitionInfo,
    ) -> Result<Superblock, ImageError> {
        if info.fstype != FsType::Squashfs {
            return Err(ImageError::RootNotSquashfs {
                path: self.path.to_path_buf(),
                id: root.id,
                fstype: info.fstype,
            });
        }
        let limit = root.size.min(superblock::SUPERBLOCK_LEN as u64);
        let start = read_at(&mut self.file, root.offset, limit)
            .map_err(|e| ImageError::io(self.path, e))?;
        if !superblock::has_magic(&start) {
            return Err(ImageError::RootBadMagic {
                path: self.path.to_path_buf(),
                id: root.id,
                offset: root.offset,
                found: start.into_iter().take(4).collect(),
            });
        }
        self.superblock(root.offset, &start, root.size)
    }

    /// The image's architecture, refused unless `host` can run it. The
    /// partition's own arch describes its programs; the header's is the
    /// fallback when the partition does not say.
    fn check_arch(
        &self,
        header: &SifHeader,
        info: &PartitionInfo,
        host: Arch,
    ) -> Result<Arch, ImageError> {
        let arch = match info.arch() {
            Arch::Unknown => header.arch(),
            arch => arch,
        };
        if arch == Arch::Unknown {
            log::debug!(
                "image {}: the SIF does not record its architecture; not checked",
                shown(self.path)
            );
        }
        if arch.runs_on(host) {
            Ok(arch)
        } else {
            Err(ImageError::ArchMismatch {
                path: self.path.to_path_buf(),
                image: arch,
                host,
            })
        }
    }

    /// Parses and validates the superblock in `bytes` (read at `offset`),
    /// with `available` bytes from `offset` for the filesystem.
    fn superblock(
        &self,
        offset: u64,
        bytes: &[u8],
        available: u64,
    ) -> Result<Superblock, ImageError> {
        let checked = Superblock::parse(bytes).and_then(|superblock| {
            superblock.validate(available)?;
            Ok(superblock)
        });
        checked.map_err(|source| ImageError::Squashfs {
            path: self.path.to_path_buf(),
            offset,
            source,
        })
    }
}

/// Builders and fixtures shared by the tests of this module's files.
#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
pub(crate) mod test_support {
    use super::sif::{
        Arch, DataType, Descriptor, FsType, HEADER_LEN, PartType, PartitionInfo, SIF_VERSION,
        SifHeader,
    };
    use crate::squashfs::superblock::{NO_TABLE, Superblock};
    use std::path::PathBuf;

    /// The superblock of `mksquashfs` on a one-file directory (gzip,
    /// 128 KiB blocks, 249 bytes used).
    pub(crate) fn sample_superblock() -> Superblock {
        Superblock {
            inode_count: 2,
            modification_time: 1_648_584_618,
            block_size: 131_072,
            fragment_entry_count: 1,
            compression_id: 1,
            block_log: 17,
            flags: 192,
            id_count: 1,
            version_major: 4,
            version_minor: 0,
            root_inode_ref: 32,
            bytes_used: 249,
            id_table_start: 241,
            xattr_id_table_start: NO_TABLE,
            inode_table_start: 115,
            directory_table_start: 156,
            fragment_table_start: 203,
            export_table_start: 227,
        }
    }

    /// A SquashFS image whose superblock passes validation (the tables are
    /// zeros: nothing here reads them), padded to 4 KiB like mksquashfs does.
    pub(crate) fn sample_squashfs_bytes() -> Vec<u8> {
        let mut bytes = sample_superblock().to_bytes().to_vec();
        bytes.resize(4096, 0);
        bytes
    }

    /// Builds synthetic SIF files: header at 0, descriptor table at
    /// [`SifBuilder::TABLE_OFFSET`], objects from 32 KiB aligned to 4 KiB.
    pub(crate) struct SifBuilder {
        pub(crate) header: SifHeader,
        pub(crate) descriptors: Vec<Descriptor>,
        data: Vec<Vec<u8>>,
    }

    impl SifBuilder {
        pub(crate) const TABLE_OFFSET: usize = 4096;
        const TABLE_SLOTS: usize = 48;
        const DATA_OFFSET: usize = 32768;
        const ALIGN: usize = 4096;

        pub(crate) fn new(arch: Arch) -> Self {
            let mut launch = [0; 32];
            launch[..31].copy_from_slice(b"#!/usr/bin/env run-singularity\n");
            let header = SifHeader {
                launch,
                version: SIF_VERSION,
                arch_code: arch.code(),
                uuid: [0x42; 16],
                created: 1_700_000_000,
                modified: 1_700_000_000,
                descriptors_free: 0,
                descriptors_total: Self::TABLE_SLOTS as i64,
                descriptors_offset: Self::TABLE_OFFSET as i64,
                descriptors_size: (Self::TABLE_SLOTS * super::sif::DESCRIPTOR_LEN) as i64,
                data_offset: Self::DATA_OFFSET as i64,
                data_size: 0,
            };
            SifBuilder {
                header,
                descriptors: Vec::new(),
                data: Vec::new(),
            }
        }

        /// A used descriptor of `data_type` with id `id` in group 1.
        pub(crate) fn descriptor(data_type: DataType, id: u32) -> Descriptor {
            Descriptor {
                data_type,
                used: true,
                id,
                group_id: 1,
                linked_id: 0,
                offset: 0,
                size: 0,
                size_with_padding: 0,
                created: 0,
                modified: 0,
                uid: 0,
                gid: 0,
                name: String::new(),
                extra: vec![0; super::sif::EXTRA_LEN],
            }
        }

        /// Adds an object of `data_type` holding `data`.
        pub(crate) fn object(mut self, data_type: DataType, data: Vec<u8>) -> Self {
            let id = u32::try_from(self.descriptors.len() + 1).unwrap_or(u32::MAX);
            self.descriptors.push(Self::descriptor(data_type, id));
            self.data.push(data);
            self
        }

        /// Adds a partition with the given metadata holding `data`.
        pub(crate) fn partition(
            self,
            fstype: FsType,
            parttype: PartType,
            arch: Arch,
            data: Vec<u8>,
        ) -> Self {
            let mut builder = self.object(DataType::Partition, data);
            if let Some(last) = builder.descriptors.last_mut() {
                last.extra = PartitionInfo {
                    fstype,
                    parttype,
                    arch_code: arch.code(),
                }
                .to_extra();
            }
            builder
        }

        /// Adds a primary system partition of the header's arch.
        pub(crate) fn primary(self, fstype: FsType, data: Vec<u8>) -> Self {
            let arch = self.header.arch();
            self.partition(fstype, PartType::PrimarySystem, arch, data)
        }

        /// Lays the file out, setting each object's offset and size.
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut file = vec![0; Self::DATA_OFFSET];
            let mut descriptors = self.descriptors.clone();
            for (descriptor, data) in descriptors.iter_mut().zip(&self.data) {
                let offset = file.len().next_multiple_of(Self::ALIGN);
                file.resize(offset, 0);
                file.extend_from_slice(data);
                descriptor.offset = offset as u64;
                descriptor.size = data.len() as u64;
                descriptor.size_with_padding = data.len() as u64;
            }
            let mut header = self.header.clone();
            let used = descriptors.iter().filter(|d| d.used).count();
            header.descriptors_free = Self::TABLE_SLOTS.saturating_sub(used) as i64;
            header.data_size = (file.len() - Self::DATA_OFFSET) as i64;
            file[..HEADER_LEN].copy_from_slice(&header.to_bytes());
            for (slot, descriptor) in descriptors.iter().enumerate() {
                let at = Self::TABLE_OFFSET + slot * super::sif::DESCRIPTOR_LEN;
                file[at..at + super::sif::DESCRIPTOR_LEN].copy_from_slice(&descriptor.to_bytes());
            }
            file
        }

        /// Rewrites descriptor `slot` of a built file through `change`.
        pub(crate) fn patch(file: &mut [u8], slot: usize, change: impl FnOnce(&mut Descriptor)) {
            let at = Self::TABLE_OFFSET + slot * super::sif::DESCRIPTOR_LEN;
            let raw = file[at..at + super::sif::DESCRIPTOR_LEN]
                .try_into()
                .unwrap();
            let mut descriptor = Descriptor::parse(raw, slot).unwrap();
            change(&mut descriptor);
            file[at..at + super::sif::DESCRIPTOR_LEN].copy_from_slice(&descriptor.to_bytes());
        }
    }

    /// The shared SIF test data directory: `$RFAKE_TEST_SIF_DIR`, else
    /// `../shared/testdata/sif` beside the crate. When it is missing this
    /// panics under `CI=true` and otherwise prints a note and returns None.
    pub(crate) fn sif_test_dir() -> Option<PathBuf> {
        crate::testing::data_dir("RFAKE_TEST_SIF_DIR", "../shared/testdata/sif")
    }
}

#[cfg(test)]
mod tests {
    use super::sif::{DataType, PartType};
    use super::test_support::{SifBuilder, sample_squashfs_bytes, sample_superblock, sif_test_dir};
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    /// Writes `bytes` to `name` in a new temp dir; returns both.
    fn temp_file(name: &str, bytes: &[u8]) -> (TempDir, PathBuf) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    /// Opens `bytes` written to a temp file, for an amd64 host.
    fn open_bytes(bytes: &[u8]) -> (TempDir, PathBuf, Result<Image, ImageError>) {
        let (dir, path) = temp_file("image", bytes);
        let result = open_for_arch(&path, Arch::Amd64);
        (dir, path, result)
    }

    /// Asserts the message is one line and names `path`.
    fn assert_message(err: &ImageError, path: &Path) {
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "multi-line: {msg:?}");
        assert!(msg.starts_with("image "), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "no path: {msg}");
        assert_eq!(err.path(), path);
    }

    fn expect_err(bytes: &[u8]) -> (TempDir, PathBuf, ImageError) {
        let (dir, path, result) = open_bytes(bytes);
        let err = result.expect_err("image should be refused");
        assert_message(&err, &path);
        (dir, path, err)
    }

    // ---- bare SquashFS ----

    #[test]
    fn bare_squashfs_ok() {
        let (_dir, path, result) = open_bytes(&sample_squashfs_bytes());
        let image = result.unwrap();
        assert_eq!(image.format, ImageFormat::Squashfs);
        assert_eq!(image.squashfs_offset, Some(0));
        assert_eq!(image.squashfs, Some(sample_superblock()));
        assert_eq!(image.arch, None);
        assert_eq!(image.path, fs::canonicalize(&path).unwrap());
        assert!(image.path.is_absolute());
    }

    #[test]
    fn bare_squashfs_exactly_bytes_used() {
        let bytes = sample_squashfs_bytes();
        let (_dir, _path, result) = open_bytes(&bytes[..249]);
        result.unwrap();
    }

    #[test]
    fn detection_ignores_file_name() {
        let (_dir, path) = temp_file("looks-like.sif", &sample_squashfs_bytes());
        let image = open_for_arch(&path, Arch::Amd64).unwrap();
        assert_eq!(image.format, ImageFormat::Squashfs);
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, path) = temp_file("image.sqfs", &bytes);
        let image = open_for_arch(&path, Arch::Amd64).unwrap();
        assert_eq!(image.format, ImageFormat::Sif);
    }

    #[test]
    fn relative_path_is_canonicalized() {
        let (dir, _path) = temp_file("image", &sample_squashfs_bytes());
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let dotted = sub.join("..").join("image");
        let image = open_for_arch(&dotted, Arch::Amd64).unwrap();
        assert_eq!(
            image.path,
            fs::canonicalize(dir.path().join("image")).unwrap()
        );
    }

    #[test]
    fn symlink_is_followed() {
        let (dir, path) = temp_file("image", &sample_squashfs_bytes());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let image = open_for_arch(&link, Arch::Amd64).unwrap();
        assert_eq!(image.path, fs::canonicalize(&path).unwrap());
    }

    #[test]
    fn truncated_squashfs() {
        let bytes = sample_squashfs_bytes();
        let (_dir, _path, err) = expect_err(&bytes[..200]);
        assert!(
            matches!(
                err,
                ImageError::Squashfs {
                    offset: 0,
                    source: SquashfsError::Truncated {
                        bytes_used: 249,
                        available: 200
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        let msg = err.to_string();
        assert!(msg.contains("249") && msg.contains("200"), "{msg}");
    }

    #[test]
    fn squashfs_shorter_than_superblock() {
        let (_dir, _path, err) = expect_err(b"hsqs\x01\x02");
        assert!(
            matches!(
                err,
                ImageError::Squashfs {
                    source: SquashfsError::TooShort { len: 6 },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn squashfs_bad_version() {
        let mut superblock = sample_superblock();
        superblock.version_major = 3;
        superblock.version_minor = 1;
        let mut bytes = superblock.to_bytes().to_vec();
        bytes.resize(4096, 0);
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::Squashfs {
                    source: SquashfsError::UnsupportedVersion { major: 3, minor: 1 },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3.1"), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn squashfs_bad_block_size() {
        let mut superblock = sample_superblock();
        superblock.block_size = 100_000;
        let mut bytes = superblock.to_bytes().to_vec();
        bytes.resize(4096, 0);
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::Squashfs {
                    source: SquashfsError::BadBlockSize {
                        block_size: 100_000
                    },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn squashfs_unknown_compression_and_bad_tables() {
        let mut superblock = sample_superblock();
        superblock.compression_id = 42;
        let (_dir, _path, err) = expect_err(&superblock.to_bytes());
        assert!(err.to_string().contains("compression id 42"), "{err}");
        let mut superblock = sample_superblock();
        superblock.inode_table_start = 1 << 40;
        let mut bytes = superblock.to_bytes().to_vec();
        bytes.resize(4096, 0);
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(err.to_string().contains("inode table"), "{err}");
    }

    /// Runs `mksquashfs` on a small tree; None when the tool (or the
    /// compressor) is unavailable.
    fn mksquashfs(dir: &Path, out: &Path, args: &[&str]) -> Option<Vec<u8>> {
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("etc")).ok()?;
        fs::write(tree.join("etc/hello.txt"), b"hello\n").ok()?;
        let status = std::process::Command::new("mksquashfs")
            .arg(&tree)
            .arg(out)
            .args(["-noappend", "-quiet", "-no-progress"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| fs::read(out).ok()).flatten()
    }

    #[test]
    fn real_mksquashfs_images() {
        let dir = TempDir::new().unwrap();
        let variants: [&[&str]; 6] = [
            &[],
            &["-no-fragments", "-no-exports", "-no-xattrs"],
            &["-comp", "xz", "-b", "1M"],
            &["-comp", "zstd", "-b", "4K"],
            &["-comp", "lz4"],
            &["-comp", "lzo"],
        ];
        let mut tried = 0;
        for (i, args) in variants.into_iter().enumerate() {
            let out = dir.path().join(format!("img{i}"));
            let Some(bytes) = mksquashfs(dir.path(), &out, args) else {
                continue;
            };
            tried += 1;
            let image = open_for_arch(&out, Arch::Amd64)
                .unwrap_or_else(|e| panic!("mksquashfs {args:?}: {e}"));
            let superblock = image.squashfs.unwrap();
            assert_eq!(image.format, ImageFormat::Squashfs);
            assert!(superblock.bytes_used <= bytes.len() as u64);
            // Cut just short of bytes_used: truncated.
            let cut = usize::try_from(superblock.bytes_used).unwrap() - 1;
            fs::write(&out, &bytes[..cut]).unwrap();
            let err = open_for_arch(&out, Arch::Amd64).unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::Squashfs {
                        source: SquashfsError::Truncated { .. },
                        ..
                    }
                ),
                "{err}"
            );
            // The same filesystem wrapped in a SIF.
            let sif = SifBuilder::new(Arch::Amd64)
                .primary(FsType::Squashfs, bytes)
                .build();
            fs::write(&out, sif).unwrap();
            let image = open_for_arch(&out, Arch::Amd64).unwrap();
            assert_eq!(image.squashfs_offset, Some(32768));
            assert_eq!(image.squashfs, Some(superblock));
        }
        if tried == 0 {
            crate::testing::missing("mksquashfs (squashfs-tools): real SquashFS checks");
        }
    }

    // ---- neither format ----

    #[test]
    fn random_bytes() {
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        let msg = err.to_string();
        assert!(
            msg.contains("not a SquashFS, SIF or directory image"),
            "{msg}"
        );
        assert!(msg.contains(&superblock::hex(&bytes[..8])), "{msg}");
    }

    #[test]
    fn elf_binary_shows_magic() {
        let (_dir, _path, err) = expect_err(b"\x7fELF\x02\x01\x01\0rest of it");
        assert!(err.to_string().contains("7f 45 4c 46"), "{err}");
    }

    #[test]
    fn empty_file() {
        let (_dir, _path, err) = expect_err(b"");
        assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn directory_is_an_unpacked_root() {
        let dir = TempDir::new().unwrap();
        let image = open_for_arch(dir.path(), Arch::Amd64).unwrap();
        assert_eq!(image.format, ImageFormat::Directory);
        assert_eq!(image.path, fs::canonicalize(dir.path()).unwrap());
        assert_eq!(image.squashfs_offset, None);
        assert!(image.squashfs.is_none());
        assert_eq!(image.arch, None);
        // `open` uses the host arch; directories do not care.
        assert_eq!(open(dir.path()).unwrap().format, ImageFormat::Directory);
    }

    #[test]
    fn missing_path() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("nope.sif");
        let err = open(&path).unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::NoInput);
        assert_message(&err, &path);
        assert!(err.to_string().contains("no such file"), "{err}");
    }

    #[test]
    fn dangling_symlink_is_missing() {
        let dir = TempDir::new().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();
        let err = open(&link).unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    }

    #[test]
    fn unreadable_file() {
        let (_dir, path) = temp_file("secret.sqfs", &sample_squashfs_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        let result = open_for_arch(&path, Arch::Amd64);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // root reads mode 000 files anyway: nothing to assert.
            eprintln!("note: running as root, mode 000 is still readable");
            return;
        }
        let err = result.unwrap_err();
        assert!(matches!(err, ImageError::Unreadable { .. }), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::NoInput);
        assert_message(&err, &path);
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c_path is a valid NUL-terminated string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = open(&path).unwrap_err();
        assert!(
            matches!(err, ImageError::NotAFile { kind: "FIFO", .. }),
            "{err}"
        );
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        assert_message(&err, &path);
    }

    #[test]
    fn path_with_newline_stays_one_line() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("bad\nname");
        fs::write(&path, b"junk").unwrap();
        let err = open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(msg.contains("bad\\nname"), "{msg}");
    }

    // ---- synthetic SIF ----

    #[test]
    fn sif_ok() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .object(DataType::Deffile, b"bootstrap: scratch\n".to_vec())
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, _path, result) = open_bytes(&bytes);
        let image = result.unwrap();
        assert_eq!(image.format, ImageFormat::Sif);
        assert_eq!(image.squashfs_offset, Some(36864));
        assert_eq!(image.squashfs, Some(sample_superblock()));
        assert_eq!(image.arch, Some(Arch::Amd64));
    }

    #[test]
    fn sif_uses_the_descriptor_offset() {
        let mut bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        // Move the partition to an odd place no layout would compute.
        let odd = bytes.len() + 123;
        bytes.resize(odd, 0);
        bytes.extend_from_slice(&sample_squashfs_bytes());
        SifBuilder::patch(&mut bytes, 0, |d| d.offset = odd as u64);
        let (_dir, _path, result) = open_bytes(&bytes);
        assert_eq!(result.unwrap().squashfs_offset, Some(odd as u64));
    }

    #[test]
    fn sif_truncated_in_descriptor_table() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, _path, err) = expect_err(&bytes[..SifBuilder::TABLE_OFFSET + 1000]);
        assert!(
            matches!(
                err,
                ImageError::Sif {
                    source: SifError::TableTruncated { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        assert!(
            err.to_string().contains("truncated SIF descriptor table"),
            "{err}"
        );
    }

    #[test]
    fn sif_truncated_header() {
        let bytes = SifBuilder::new(Arch::Amd64).build();
        let (_dir, _path, err) = expect_err(&bytes[..100]);
        assert!(
            matches!(
                err,
                ImageError::Sif {
                    source: SifError::TooShort { len: 100 },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn sif_absurd_descriptor_count() {
        let mut builder = SifBuilder::new(Arch::Amd64);
        builder.header.descriptors_total = 1 << 40;
        builder.header.descriptors_size = i64::MAX;
        let (_dir, _path, err) = expect_err(&builder.build());
        assert!(
            matches!(
                err,
                ImageError::Sif {
                    source: SifError::TooManyDescriptors {
                        total: 0x100_0000_0000
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn sif_without_primary_partition() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .partition(
                FsType::Squashfs,
                PartType::System,
                Arch::Amd64,
                sample_squashfs_bytes(),
            )
            .build();
        let (_dir, path, err) = expect_err(&bytes);
        assert_eq!(
            err.to_string(),
            format!(
                "image {}: no root filesystem: the SIF has no primary system partition",
                path.display()
            )
        );
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn sif_with_two_primary_partitions() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::Sif {
                    source: SifError::MultiplePrimaryPartitions { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn sif_unused_second_primary_is_ignored() {
        let mut builder = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, b"not a squashfs".to_vec())
            .primary(FsType::Squashfs, sample_squashfs_bytes());
        builder.descriptors[0].used = false;
        let (_dir, _path, result) = open_bytes(&builder.build());
        assert_eq!(result.unwrap().squashfs_offset, Some(36864));
    }

    #[test]
    fn sif_ext3_root() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Ext3, vec![0; 4096])
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::RootNotSquashfs {
                    fstype: FsType::Ext3,
                    id: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("is ext3, not squashfs"), "{err}");
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn sif_root_not_hsqs() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, vec![0xde, 0xad, 0xbe, 0xef])
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(&err, ImageError::RootBadMagic { offset: 32768, found, .. } if found == &[0xde, 0xad, 0xbe, 0xef]),
            "{err}"
        );
        assert!(err.to_string().contains("found bytes de ad be ef"), "{err}");
    }

    #[test]
    fn sif_empty_root_partition() {
        let mut bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        SifBuilder::patch(&mut bytes, 0, |d| d.size = 0);
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(&err, ImageError::RootBadMagic { found, .. } if found.is_empty()),
            "{err}"
        );
    }

    #[test]
    fn sif_partition_smaller_than_squashfs() {
        let bytes = sample_squashfs_bytes();
        let bytes = SifBuilder::new(Arch::Amd64)
            .primary(FsType::Squashfs, bytes[..200].to_vec())
            .object(DataType::Generic, vec![0; 4096])
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::Squashfs {
                    offset: 32768,
                    source: SquashfsError::Truncated {
                        bytes_used: 249,
                        available: 200
                    },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn sif_arch_mismatch() {
        let bytes = SifBuilder::new(Arch::Arm64)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::ArchMismatch {
                    image: Arch::Arm64,
                    host: Arch::Amd64,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("built for arm64, this host is amd64"),
            "{err}"
        );
    }

    #[test]
    fn sif_partition_arch_wins_over_header() {
        let bytes = SifBuilder::new(Arch::Amd64)
            .partition(
                FsType::Squashfs,
                PartType::PrimarySystem,
                Arch::Arm64,
                sample_squashfs_bytes(),
            )
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::ArchMismatch {
                    image: Arch::Arm64,
                    ..
                }
            ),
            "{err}"
        );
        let bytes = SifBuilder::new(Arch::Arm64)
            .partition(
                FsType::Squashfs,
                PartType::PrimarySystem,
                Arch::Unknown,
                sample_squashfs_bytes(),
            )
            .build();
        let (_dir, _path, err) = expect_err(&bytes);
        assert!(
            matches!(
                err,
                ImageError::ArchMismatch {
                    image: Arch::Arm64,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn sif_unknown_arch_is_accepted() {
        let bytes = SifBuilder::new(Arch::Unknown)
            .primary(FsType::Squashfs, sample_squashfs_bytes())
            .build();
        let (_dir, _path, result) = open_bytes(&bytes);
        assert_eq!(result.unwrap().arch, Some(Arch::Unknown));
    }

    #[test]
    fn exit_kinds() {
        let path = PathBuf::from("/x");
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        let cases = [
            (
                ImageError::io(&path, io::Error::from(io::ErrorKind::NotFound)),
                ExitKind::NoInput,
            ),
            (ImageError::io(&path, io()), ExitKind::NoInput),
            (
                ImageError::Sif {
                    path: path.clone(),
                    source: SifError::Io(io()),
                },
                ExitKind::NoInput,
            ),
            (
                ImageError::sif(&path, SifError::Io(io())),
                ExitKind::NoInput,
            ),
            (
                ImageError::sif(&path, SifError::NoPrimaryPartition),
                ExitKind::BadImage,
            ),
            (
                ImageError::NotAFile {
                    path: path.clone(),
                    kind: "socket",
                },
                ExitKind::BadImage,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.exit_kind(), kind, "{err}");
            assert_message(&err, &path);
        }
        assert!(matches!(
            ImageError::sif(&path, SifError::Io(io())),
            ImageError::Unreadable { .. }
        ));
    }

    // ---- the shared, real-world SIF files ----

    /// What opening a shared SIF file must give.
    enum Expect {
        /// Opens; the root SquashFS at this offset with this size.
        Ok { offset: u64, size: u64, arch: Arch },
        /// No primary system partition.
        NoRoot,
        /// The root partition holds `de ad be ef`.
        DeadBeef,
        /// Refused: built for `image`.
        WrongArch { image: Arch },
    }

    /// Every file in the shared directory, the host arch to open it for, and
    /// the outcome its README promises.
    fn shared_cases() -> Vec<(&'static str, Arch, Expect)> {
        use Expect::*;
        let group = || Ok {
            offset: 36864,
            size: 4096,
            arch: Arch::I386,
        };
        vec![
            ("empty.sif", Arch::Amd64, NoRoot),
            ("empty-id.sif", Arch::Amd64, NoRoot),
            ("empty-launch-script.sif", Arch::Amd64, NoRoot),
            ("one-object-crypt-message.sif", Arch::Amd64, NoRoot),
            ("one-object-generic-json.sif", Arch::Amd64, NoRoot),
            ("one-object-oci-blob.sif", Arch::Amd64, NoRoot),
            ("one-object-oci-root-index.sif", Arch::Amd64, NoRoot),
            ("one-object-sbom.sif", Arch::Amd64, NoRoot),
            ("one-object-time.sif", Arch::Amd64, NoRoot),
            // The generator's images are 386, which an amd64 host runs.
            ("one-group.sif", Arch::Amd64, group()),
            ("one-group-signed-dsse.sif", Arch::Amd64, group()),
            ("one-group-signed-pgp.sif", Arch::I386, group()),
            ("one-group-signed-legacy.sif", Arch::Amd64, DeadBeef),
            ("one-group-signed-legacy-all.sif", Arch::Amd64, DeadBeef),
            ("one-group-signed-legacy-group.sif", Arch::Amd64, DeadBeef),
            ("two-groups.sif", Arch::Amd64, group()),
            ("two-groups-signed-dsse.sif", Arch::Amd64, group()),
            ("two-groups-signed-pgp.sif", Arch::I386, group()),
            ("two-groups-signed-legacy.sif", Arch::Amd64, DeadBeef),
            ("two-groups-signed-legacy-all.sif", Arch::Amd64, DeadBeef),
            ("two-groups-signed-legacy-group.sif", Arch::Amd64, DeadBeef),
            (
                "busybox_amd64.sif",
                Arch::Amd64,
                Ok {
                    offset: 45056,
                    size: 745_472,
                    arch: Arch::Amd64,
                },
            ),
            (
                "busybox_arm64.sif",
                Arch::Amd64,
                WrongArch { image: Arch::Arm64 },
            ),
            (
                "busybox_ppc64le.sif",
                Arch::Ppc64le,
                Ok {
                    offset: 262_144,
                    size: 2_568_192,
                    arch: Arch::Ppc64le,
                },
            ),
        ]
    }

    fn check_shared(dir: &Path, name: &str, host: Arch, expect: &Expect) {
        let path = dir.join(name);
        let result = open_for_arch(&path, host);
        let err = match (expect, result) {
            (Expect::Ok { offset, size, arch }, Ok(image)) => {
                assert_eq!(image.format, ImageFormat::Sif, "{name}");
                assert_eq!(image.squashfs_offset, Some(*offset), "{name}");
                assert_eq!(image.arch, Some(*arch), "{name}");
                let superblock = image.squashfs.unwrap();
                assert!(superblock.bytes_used <= *size, "{name}");
                assert_eq!(image.path, fs::canonicalize(&path).unwrap());
                return;
            }
            (_, Ok(image)) => panic!("{name}: unexpectedly opened: {image:?}"),
            (_, Err(err)) => err,
        };
        assert_message(&err, &path);
        assert_eq!(err.exit_kind(), ExitKind::BadImage, "{name}: {err}");
        let msg = err.to_string();
        match expect {
            Expect::Ok { .. } => panic!("{name}: {msg}"),
            Expect::NoRoot => assert!(
                matches!(
                    err,
                    ImageError::Sif {
                        source: SifError::NoPrimaryPartition,
                        ..
                    }
                ),
                "{name}: {msg}"
            ),
            Expect::DeadBeef => {
                assert!(
                    matches!(&err, ImageError::RootBadMagic { offset: 36864, id: 2, found, .. }
                        if found == &[0xde, 0xad, 0xbe, 0xef]),
                    "{name}: {msg}"
                );
                assert!(msg.contains("de ad be ef"), "{name}: {msg}");
            }
            Expect::WrongArch { image } => {
                assert!(
                    matches!(err, ImageError::ArchMismatch { image: i, host: h, .. } if i == *image && h == host),
                    "{name}: {msg}"
                );
                let both = format!("built for {image}, this host is {host}");
                assert!(msg.contains(&both), "{name}: {msg}");
            }
        }
    }

    #[test]
    fn shared_sif_files_table() {
        let Some(dir) = sif_test_dir() else { return };
        let cases = shared_cases();
        for (name, host, expect) in &cases {
            check_shared(&dir, name, *host, expect);
        }
        // Every .sif in the directory must be covered by the table.
        for entry in fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".sif") {
                assert!(
                    cases.iter().any(|(n, _, _)| *n == name),
                    "{name} has no expected outcome"
                );
            }
        }
    }

    #[test]
    fn shared_one_group_offsets() {
        let Some(dir) = sif_test_dir() else { return };
        let image = open_for_arch(&dir.join("one-group.sif"), Arch::Amd64).unwrap();
        assert_eq!(image.squashfs_offset, Some(36864));
        let file = File::open(dir.join("one-group.sif")).unwrap();
        let sif = Sif::read(file).unwrap();
        let root = sif.primary_partition().unwrap();
        assert_eq!((root.offset, root.size), (36864, 4096));
    }

    #[test]
    fn shared_busybox_amd64_opens_for_amd64() {
        let Some(dir) = sif_test_dir() else { return };
        let path = dir.join("busybox_amd64.sif");
        let image = open_for_arch(&path, Arch::Amd64).unwrap();
        assert_eq!(image.format, ImageFormat::Sif);
        assert_eq!(image.squashfs_offset, Some(45056));
        assert_eq!(image.arch, Some(Arch::Amd64));
        let superblock = image.squashfs.unwrap();
        assert_eq!(superblock.compression_name(), "gzip");
        assert_eq!(superblock.block_size, 131_072);
        assert!(superblock.bytes_used <= 745_472);
        let file = File::open(&path).unwrap();
        let root_size = Sif::read(file).unwrap().primary_partition().unwrap().size;
        assert_eq!(root_size, 745_472);
        // Refused on other hosts.
        let err = open_for_arch(&path, Arch::Arm64).unwrap_err();
        assert!(
            err.to_string()
                .contains("built for amd64, this host is arm64"),
            "{err}"
        );
    }

    #[test]
    fn shared_busybox_arm64_is_refused_on_amd64() {
        let Some(dir) = sif_test_dir() else { return };
        let path = dir.join("busybox_arm64.sif");
        let err = open_for_arch(&path, Arch::Amd64).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::ArchMismatch {
                    image: Arch::Arm64,
                    host: Arch::Amd64,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("built for arm64, this host is amd64"), "{msg}");
        assert_message(&err, &path);
        let image = open_for_arch(&path, Arch::Arm64).unwrap();
        assert_eq!(image.squashfs_offset, Some(45056));
    }

    #[test]
    fn shared_busybox_ppc64le_aligned_offset() {
        let Some(dir) = sif_test_dir() else { return };
        let path = dir.join("busybox_ppc64le.sif");
        let image = open_for_arch(&path, Arch::Ppc64le).unwrap();
        assert_eq!(image.squashfs_offset, Some(262_144));
        assert!(open_for_arch(&path, Arch::Ppc64).is_err());
    }

    #[test]
    fn shared_two_groups_skips_ext3() {
        let Some(dir) = sif_test_dir() else { return };
        let path = dir.join("two-groups.sif");
        let image = open_for_arch(&path, Arch::Amd64).unwrap();
        // The ext3 system partition (object 3, group 2, at 40960) is not the root.
        assert_eq!(image.squashfs_offset, Some(36864));
        let sif = Sif::read(File::open(&path).unwrap()).unwrap();
        let ext3 = sif
            .descriptors
            .iter()
            .find(|d| d.partition().is_some_and(|p| p.fstype == FsType::Ext3))
            .unwrap();
        assert_eq!(ext3.offset, 40960);
        assert_ne!(sif.primary_partition().unwrap().id, ext3.id);
    }

    #[test]
    fn shared_legacy_is_refused_clearly() {
        let Some(dir) = sif_test_dir() else { return };
        let path = dir.join("one-group-signed-legacy.sif");
        let err = open_for_arch(&path, Arch::Amd64).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "image {}: the SIF root filesystem (object 2) at offset 36864 is not a SquashFS: \
                 found bytes de ad be ef instead of 68 73 71 73 (\"hsqs\")",
                path.display()
            )
        );
    }
}
