//! Reading files inside an image for `rfake inspect`: a SquashFS through
//! libsquashfs, or an unpacked directory, behind one small interface.

use std::path::{Path, PathBuf};

use serde::Serialize;

use std::io::Read;
use std::os::fd::AsFd;

use crate::container::paths;
use crate::squashfs::{EntryKind, Reader, SqfsError};

/// Why a path inside an image could not be read.
#[derive(Debug)]
pub struct InsideError {
    pub detail: String,
    /// The path is not there (or not of the kind asked for): exit 66.
    /// Otherwise the image itself is at fault (corrupt): exit 65.
    pub missing: bool,
}

impl From<SqfsError> for InsideError {
    fn from(e: SqfsError) -> InsideError {
        InsideError {
            missing: e.is_missing(),
            detail: e.to_string(),
        }
    }
}

/// An error of the host filesystem behind a directory image.
fn host(detail: impl ToString) -> InsideError {
    InsideError {
        detail: detail.to_string(),
        missing: true,
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub path: String,
    #[serde(skip)]
    pub name: String,
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "dir",
        EntryKind::File => "file",
        EntryKind::Symlink => "symlink",
        EntryKind::CharDev => "char-device",
        EntryKind::BlockDev => "block-device",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
    }
}

/// The files of an image, if it has a readable root filesystem.
pub enum ImageFiles {
    Squashfs(Box<Reader>),
    Directory(PathBuf),
    None,
}

impl ImageFiles {
    /// A file's bytes (symlinks inside the image followed), at most `max`.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, InsideError> {
        match self {
            ImageFiles::Squashfs(r) => Ok(r.read_file(path, max)?),
            ImageFiles::Directory(root) => {
                let mut bytes = Vec::new();
                host_file(root, path)?
                    .take(max)
                    .read_to_end(&mut bytes)
                    .map_err(host)?;
                Ok(bytes)
            }
            ImageFiles::None => Err(no_root()),
        }
    }

    /// Write a file's bytes (symlinks inside the image followed) to `out`,
    /// a piece at a time. A failed write ends the copy with an `Io` error.
    pub fn copy_file(&self, path: &str, out: &mut dyn std::io::Write) -> Result<(), InsideError> {
        match self {
            ImageFiles::Squashfs(r) => {
                r.copy_file(path, out, "writing the file")?;
                Ok(())
            }
            ImageFiles::Directory(root) => {
                std::io::copy(&mut host_file(root, path)?, out).map_err(host)?;
                Ok(())
            }
            ImageFiles::None => Err(no_root()),
        }
    }

    /// A file's text, or None when it is absent or unreadable.
    pub fn read_text(&self, path: &str, max: u64) -> Option<String> {
        self.read_file(path, max)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The entries of one directory.
    pub fn list(&self, dir: &str) -> Result<Vec<Entry>, InsideError> {
        let mut out = Vec::new();
        match self {
            ImageFiles::Squashfs(r) => {
                for e in r.list(dir)? {
                    let path = join(dir, &e.name);
                    out.push(entry_from_sqfs(path, &e));
                }
            }
            ImageFiles::Directory(root) => {
                let base = paths::under(root, Path::new(dir));
                let mut names: Vec<_> = std::fs::read_dir(&base).map_err(host)?.flatten().collect();
                names.sort_by_key(|e| e.file_name());
                for e in names {
                    let name = e.file_name().to_string_lossy().into_owned();
                    out.push(entry_from_host(join(dir, &name), &e.path()));
                }
            }
            ImageFiles::None => return Err(no_root()),
        }
        Ok(out)
    }

    /// Every entry below `dir` (and `dir` itself), parents first.
    pub fn walk(&self, dir: &str) -> Result<Vec<Entry>, InsideError> {
        let mut out = Vec::new();
        match self {
            ImageFiles::Squashfs(r) => {
                r.walk(dir, &mut |path, e| {
                    out.push(entry_from_sqfs(path.to_string(), e))
                })?;
            }
            ImageFiles::Directory(_) => {
                let mut stack = vec![dir.to_string()];
                while let Some(d) = stack.pop() {
                    let entries = self.list(&d)?;
                    for e in entries.into_iter().rev() {
                        if e.kind == "dir" {
                            stack.push(e.path.clone());
                        }
                        out.push(e);
                    }
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
            }
            ImageFiles::None => return Err(no_root()),
        }
        Ok(out)
    }
}

fn no_root() -> InsideError {
    host("the image has no readable root filesystem")
}

/// The regular file at `path` inside the directory image `root`, opened
/// without leaving it.
fn host_file(root: &Path, path: &str) -> Result<std::fs::File, InsideError> {
    let root = paths::open_root(root).map_err(host)?;
    let walk = paths::walk(root.as_fd(), Path::new(path)).map_err(host)?;
    if !walk.exists() {
        return Err(host("no such file in the image"));
    }
    match walk.open_regular() {
        Some(Ok(file)) => Ok(file),
        Some(Err(e)) => Err(host(e.to_string())),
        None => Err(host("no such file in the image")),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn mode_string(kind: &str, mode: u32) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "char-device" => 'c',
        "block-device" => 'b',
        "fifo" => 'p',
        "socket" => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

fn entry_from_sqfs(path: String, e: &crate::squashfs::EntryInfo) -> Entry {
    let kind = kind_name(e.kind);
    Entry {
        name: e.name.clone(),
        mode: mode_string(kind, u32::from(e.mode)),
        kind,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        target: e.symlink_target.clone(),
        path,
    }
}

fn entry_from_host(path: String, host: &Path) -> Entry {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(host);
    let (kind, mode, uid, gid, size) = match &meta {
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            (kind, m.mode(), m.uid(), m.gid(), m.len())
        }
        Err(_) => ("unknown", 0, 0, 0, 0),
    };
    Entry {
        name: path.rsplit('/').next().unwrap_or_default().to_string(),
        mode: mode_string(kind, mode),
        kind,
        uid,
        gid,
        size,
        target: std::fs::read_link(host)
            .ok()
            .map(|t| t.to_string_lossy().into_owned()),
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("file", 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("file", 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
    }
}
