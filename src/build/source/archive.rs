//! Random access to the members of an uncompressed tar file: OCI and
//! docker archives are read by name (index, manifests, config, layers), not
//! in order. The headers are read once (skipping the data), then a member is
//! read in place by offset; nothing is extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::detect::{input_error, member_name};
use super::layer::Blob;
use super::{SourceError, io_text, one_line, shown};
use crate::input::open_regular;

/// A member of the archive, by its normalized name.
#[derive(Debug, Clone)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// `docker save` stores a layer shared by two images once, and links
    /// the other name to it (`<id>/layer.tar -> ../<id2>/layer.tar`).
    Symlink(String),
    HardLink(String),
    Other,
}

/// An uncompressed tar archive opened for reading members by name.
pub(super) struct Archive {
    path: PathBuf,
    file: File,
    members: HashMap<String, Member>,
}

impl Archive {
    /// Read the member headers of the tar at `path`.
    pub(super) fn open(path: &Path) -> Result<Archive, SourceError> {
        let (file, _) = open_regular(path).map_err(|e| input_error(path, e))?;
        let corrupt = |e: io::Error| {
            SourceError::invalid(shown(path), format!("corrupt tar archive: {}", io_text(&e)))
        };
        let len = file
            .metadata()
            .map_err(|e| SourceError::unreadable(path, e))?
            .len();
        let mut members = HashMap::new();
        let mut archive = tar::Archive::new(&file);
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            let name = member_name(&entry.path_bytes());
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default()
            };
            let member = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (offset, size) = (entry.raw_file_position(), entry.size());
                    // The data is read in place: a size the header claims
                    // must be there (it sizes reads and allocations).
                    if offset.checked_add(size).is_none_or(|end| end > len) {
                        return Err(SourceError::invalid(
                            format!("{}: {}", shown(path), one_line(&name)),
                            format!(
                                "corrupt tar archive: {size} bytes of data at offset {offset}, \
                                 past the end of the archive ({len} bytes)"
                            ),
                        ));
                    }
                    Member::File { offset, size }
                }
                tar::EntryType::Symlink => Member::Symlink(link()),
                tar::EntryType::Link => Member::HardLink(member_name(link().as_bytes())),
                _ => Member::Other,
            };
            members.insert(name, member);
        }
        Ok(Archive {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// "archive: member", for messages.
    pub(super) fn place(&self, member: &str) -> String {
        format!("{}: {}", shown(&self.path), one_line(member))
    }

    /// The offset and size of the regular file `name`, following links
    /// (a few hops); `None` if there is no such member.
    fn find(&self, name: &str) -> Result<Option<(u64, u64)>, SourceError> {
        let mut name = member_name(name.as_bytes());
        for _ in 0..16 {
            match self.members.get(&name) {
                None => return Ok(None),
                Some(Member::File { offset, size }) => return Ok(Some((*offset, *size))),
                Some(Member::HardLink(target)) => name = target.clone(),
                Some(Member::Symlink(target)) => {
                    let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                    name = resolve(dir, target);
                }
                Some(Member::Other) => {
                    return Err(SourceError::invalid(
                        self.place(&name),
                        "not a regular file in the archive",
                    ));
                }
            }
        }
        Err(SourceError::invalid(
            self.place(&name),
            "too many levels of links in the archive",
        ))
    }

    /// A reader of the member `name` and its size; `None` if it is absent.
    pub(super) fn open_member(
        &self,
        name: &str,
    ) -> Result<Option<(MemberReader<'_>, u64)>, SourceError> {
        Ok(self.find(name)?.map(|(offset, size)| {
            (
                MemberReader {
                    file: &self.file,
                    pos: offset,
                    end: offset + size,
                },
                size,
            )
        }))
    }

    /// The member `name` as a [`Blob`] to read (and read again) in place:
    /// the archive file and where the member's data is; `None` if absent.
    pub(super) fn member_blob(&self, name: &str) -> Result<Option<Blob>, SourceError> {
        let Some((offset, len)) = self.find(name)? else {
            return Ok(None);
        };
        let file = self
            .file
            .try_clone()
            .map_err(|e| SourceError::unreadable(&self.path, e))?;
        Ok(Some(Blob {
            file: Arc::new(file),
            offset,
            len,
        }))
    }

    /// The whole member `name` (at most `limit` bytes); `None` if absent.
    pub(super) fn read_member(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let Some((mut reader, size)) = self.open_member(name)? else {
            return Ok(None);
        };
        if size > limit {
            return Err(SourceError::invalid(
                self.place(name),
                format!("{size} bytes, more than the {limit} a metadata file may have"),
            ));
        }
        let mut out = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut out)
            .map_err(|e| SourceError::unreadable(&self.path, e))?;
        Ok(Some(out))
    }
}

/// `target` (a link's target) seen from the directory `dir`, as a member name.
fn resolve(dir: &Path, target: &str) -> String {
    let mut parts: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
    parts.join("/")
}

/// Reads a member in place with `pread`, so several can be open at once.
pub(super) struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive is truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::TarMaker;
    use super::*;

    #[test]
    fn members_by_name_through_links() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.tar");
        let tar = TarMaker::default()
            .file("./one/layer.tar", b"layer bytes", 0o644)
            .symlink("two/layer.tar", "../one/layer.tar")
            .hard_link("three.tar", "one/layer.tar")
            .symlink("loop", "loop")
            .dir("dir", 0o755)
            .finish();
        std::fs::write(&path, tar).unwrap();
        let a = Archive::open(&path).unwrap();
        for name in [
            "one/layer.tar",
            "two/layer.tar",
            "three.tar",
            "/one/layer.tar",
        ] {
            assert_eq!(
                a.read_member(name, 100).unwrap().as_deref(),
                Some(&b"layer bytes"[..]),
                "{name}"
            );
        }
        assert!(a.read_member("absent", 100).unwrap().is_none());
        assert!(a.read_member("one/layer.tar", 3).is_err());
        let e = a.read_member("loop", 100).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("loop: too many levels of links in the archive"),
            "{e}"
        );
        let e = a.read_member("dir", 100).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("dir: not a regular file in the archive"),
            "{e}"
        );
        assert_eq!(resolve(Path::new("a/b"), "../c/./d"), "a/c/d");
        assert_eq!(resolve(Path::new("a"), "/x"), "x");
    }

    /// A member whose header claims more data than the archive has is
    /// refused when the archive is opened, before anything is read or
    /// allocated for it.
    #[test]
    fn sizes_past_the_end_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.tar");
        let mut tar = TarMaker::default()
            .file("manifest.json", b"[]", 0o644)
            .finish();
        // The first header says 2^40 bytes.
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_size(1 << 40);
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        std::fs::write(&path, &tar).unwrap();
        let e = Archive::open(&path).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: manifest.json: corrupt tar archive: 1099511627776 bytes of data at offset 512, \
                 past the end of the archive (2048 bytes)",
                path.display()
            )
        );
    }
}
