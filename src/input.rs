//! Opening the files that users and images name: regular files only, never
//! blocking, read with a size limit.
//!
//! rfake reads files whose names it does not choose: the configuration files
//! (`RFAKE_CONFIG`, `RFAKE_USER_CONFIG`), `--env-file`, the image of `exec`
//! and `inspect`, build sources and recipes, and files inside an image (its
//! environment scripts, `/etc/passwd`). Any of them may be a FIFO, whose
//! open(2) waits for a writer that never comes; a device such as
//! `/dev/zero`, which never ends; or a path swapped between a check and the
//! open. So each one is opened by [`open_regular`]:
//!
//! - with `O_NONBLOCK`, so a FIFO opens at once instead of waiting for a
//!   writer (fifo(7)); `O_NOCTTY`, so a terminal never becomes rfake's
//!   controlling terminal; and `O_CLOEXEC` (std sets it), so nothing leaks
//!   into the payload;
//! - then the *opened* descriptor is checked with fstat(2), never the path
//!   with a separate stat(2): whatever the path names by then, rfake reads
//!   only what it checked. Anything but a regular file is refused, naming
//!   what it is;
//! - then `O_NONBLOCK` is cleared, so reads behave as on any file (local
//!   filesystems ignore it for regular files; FUSE and network ones see it).
//!
//! [`read_regular`] also caps the size and reads at most `limit + 1` bytes:
//! neither a file that grows while it is read nor one whose size says 0 but
//! which never ends (procfs) makes it read forever.

use std::fmt;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest text file rfake reads whole by default: configuration files,
/// `--env-file`, an image's environment file.
pub const TEXT_LIMIT: u64 = 1 << 20;

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    Other,
}

impl FileKind {
    /// The kind of `t`; `None` for a regular file.
    pub fn of(t: &FileType) -> Option<FileKind> {
        Some(if t.is_file() {
            return None;
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }

    /// "FIFO", "character device"...
    pub const fn name(self) -> &'static str {
        match self {
            FileKind::Directory => "directory",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Symlink => "symbolic link",
            FileKind::Other => "special file",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a file was not read. The caller names the path.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// open(2), fstat(2) or read(2) failed.
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    /// A directory, FIFO, socket or device.
    #[error("a {0}, not a regular file")]
    NotRegular(FileKind),
    /// More than the caller's limit.
    #[error("larger than {}", size_text(*.limit))]
    TooLarge { limit: u64 },
}

impl From<InputError> for io::Error {
    /// For callers whose errors are `io::Error`s: the message is kept.
    fn from(e: InputError) -> io::Error {
        match e {
            InputError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// `1 MiB`, `4 MiB`, else the number of bytes.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Open `path` for reading if, once opened, it is a regular file (see the
/// module documentation). Returns the file and its fstat(2) metadata.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), InputError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| opening_failed(path, e))?;
    let metadata = file.metadata().map_err(InputError::Io)?;
    if let Some(kind) = FileKind::of(&metadata.file_type()) {
        return Err(InputError::NotRegular(kind));
    }
    clear_nonblocking(&file).map_err(InputError::Io)?;
    Ok((file, metadata))
}

/// open(2) refuses a socket with ENXIO, which reads as "No such device or
/// address"; say what it is instead. (The path is looked at again only to
/// word the message: the refusal is the open's.)
fn opening_failed(path: &Path, e: io::Error) -> InputError {
    if e.raw_os_error() == Some(libc::ENXIO) {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.file_type().is_socket() {
                return InputError::NotRegular(FileKind::Socket);
            }
        }
    }
    InputError::Io(e)
}

fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The whole regular file at `path`, refused when it holds more than
/// `limit` bytes (whatever its size says).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let (file, metadata) = open_regular(path)?;
    if metadata.len() > limit {
        return Err(InputError::TooLarge { limit });
    }
    read_limited(file, limit)
}

/// All of `reader`, refused when it holds more than `limit` bytes: reads at
/// most `limit + 1`.
pub fn read_limited(reader: impl Read, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(InputError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge { limit });
    }
    Ok(bytes)
}

/// The regular file at `path` as UTF-8 text, at most `limit` bytes; a file
/// that is not UTF-8 is an [`InputError::Io`] of kind `InvalidData`.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InputError> {
    String::from_utf8(read_regular(path, limit)?).map_err(|_| {
        InputError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[test]
    fn a_regular_file_is_read_and_stays_blocking() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let (file, meta) = open_regular(&path).unwrap();
        assert_eq!(meta.len(), 5);
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        // SAFETY: F_GETFD on an open descriptor.
        let fd_flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "O_CLOEXEC");
        assert_eq!(read_regular(&path, 5).unwrap(), b"hello");
        assert_eq!(read_text(&path, 100).unwrap(), "hello");
    }

    /// Each kind that is not a regular file, refused at once and named.
    #[test]
    fn what_is_not_a_regular_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let cases = [
            (fifo(d.path()), FileKind::Fifo),
            (d.path().to_path_buf(), FileKind::Directory),
            ("/dev/zero".into(), FileKind::CharDevice),
            ("/dev/null".into(), FileKind::CharDevice),
            (socket, FileKind::Socket),
        ];
        for (path, kind) in cases {
            let start = Instant::now();
            let e = read_regular(&path, TEXT_LIMIT).unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(2), "{path:?}");
            assert!(
                matches!(e, InputError::NotRegular(k) if k == kind),
                "{path:?}: {e}"
            );
            assert_eq!(e.to_string(), format!("a {kind}, not a regular file"));
        }
        // A symbolic link is followed: a link to a FIFO is a FIFO.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path().join("fifo"), &link).unwrap();
        assert!(matches!(
            open_regular(&link),
            Err(InputError::NotRegular(FileKind::Fifo))
        ));
        assert!(matches!(
            open_regular(&d.path().join("nope")),
            Err(InputError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn the_limit_holds_whatever_the_size_says() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        std::fs::write(&path, vec![b'x'; 11]).unwrap();
        assert_eq!(read_regular(&path, 11).unwrap().len(), 11);
        let e = read_regular(&path, 10).unwrap_err();
        assert!(matches!(e, InputError::TooLarge { limit: 10 }), "{e}");
        assert_eq!(e.to_string(), "larger than 10 bytes");
        // A reader without a size (a device, procfs): at most limit + 1
        // bytes are read.
        let e = read_limited(io::repeat(0), TEXT_LIMIT).unwrap_err();
        assert_eq!(e.to_string(), "larger than 1 MiB");
        // procfs says 0 bytes.
        assert!(read_regular(Path::new("/proc/self/status"), TEXT_LIMIT).is_ok());
    }
}
