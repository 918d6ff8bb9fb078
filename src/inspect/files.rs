//! Reading files inside an image for `rfake inspect`: a SquashFS through
//! libsquashfs, or an unpacked directory, behind one small interface.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::paths::{self, Resolved};
use crate::sqfs::{EntryKind, Reader};

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
    pub fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        match self {
            ImageFiles::Squashfs(r) => r.read_file(path, max).map_err(|e| e.to_string()),
            ImageFiles::Directory(root) => {
                let p = match paths::resolve_in_root(root, Path::new(path)) {
                    Ok(Resolved::Exists(p)) => p,
                    Ok(Resolved::Missing(_)) => return Err("no such file in the image".into()),
                    Err(e) => return Err(e.to_string()),
                };
                // Without blocking on a FIFO; at most `max` bytes read.
                let (file, _) = crate::input::open_regular(&p).map_err(|e| e.to_string())?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(file, max), &mut bytes)
                    .map_err(|e| e.to_string())?;
                Ok(bytes)
            }
            ImageFiles::None => Err("the image has no readable root filesystem".into()),
        }
    }

    /// A file's text, or None when it is absent or unreadable.
    pub fn read_text(&self, path: &str, max: u64) -> Option<String> {
        self.read_file(path, max)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The entries of one directory.
    pub fn list(&self, dir: &str) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        match self {
            ImageFiles::Squashfs(r) => {
                for e in r.list(dir).map_err(|e| e.to_string())? {
                    let path = join(dir, &e.name);
                    out.push(entry_from_sqfs(path, &e));
                }
            }
            ImageFiles::Directory(root) => {
                let base = paths::under(root, Path::new(dir));
                let mut names: Vec<_> = std::fs::read_dir(&base)
                    .map_err(|e| e.to_string())?
                    .flatten()
                    .collect();
                names.sort_by_key(|e| e.file_name());
                for e in names {
                    let name = e.file_name().to_string_lossy().into_owned();
                    out.push(entry_from_host(join(dir, &name), &e.path()));
                }
            }
            ImageFiles::None => return Err("the image has no readable root filesystem".into()),
        }
        Ok(out)
    }

    /// Every entry below `dir` (and `dir` itself), parents first.
    pub fn walk(&self, dir: &str) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        match self {
            ImageFiles::Squashfs(r) => {
                r.walk(dir, &mut |path, e| {
                    out.push(entry_from_sqfs(path.to_string(), e))
                })
                .map_err(|e| e.to_string())?;
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
            ImageFiles::None => return Err("the image has no readable root filesystem".into()),
        }
        Ok(out)
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

fn entry_from_sqfs(path: String, e: &crate::sqfs::EntryInfo) -> Entry {
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
