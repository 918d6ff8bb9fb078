//! Telling sources apart by content: magic bytes for compressed files, the
//! tar header for archives, member names for what an archive holds, an
//! `[image]` table for recipes; for directories, `oci-layout` and
//! `index.json`.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::tar_reader::TarReader;
use crate::input::{FileKind, InputError, open_regular, read_limited};

use super::{Compression, SourceError, SourceKind, io_text, shown};

const GZIP: &[u8] = &[0x1f, 0x8b];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2: &[u8] = b"BZh";
/// Bytes read to recognise a file: one tar header block.
const PROBE_LEN: usize = 512;
/// A recipe larger than this is not a recipe.
pub(super) const MAX_RECIPE: u64 = 4 << 20;

/// What the SOURCE at `path` is, decided by its content (see the module
/// documentation). A SOURCE given as a symbolic link is followed; a dangling
/// one or a loop is an error naming it.
pub fn detect(path: &Path) -> Result<SourceKind, SourceError> {
    let meta = followed_metadata(path)?;
    if meta.is_dir() {
        let layout = path.join("oci-layout").is_file() && path.join("index.json").is_file();
        return Ok(if layout {
            SourceKind::OciLayout
        } else {
            SourceKind::Directory
        });
    }
    if !meta.is_file() {
        return Err(SourceError::invalid(
            shown(path),
            format!(
                "{}: not a build source (a directory, a tar archive or a recipe)",
                file_type_name(&meta.file_type())
            ),
        ));
    }
    // Checked again on the open descriptor: a path swapped for a FIFO since
    // the stat must not block the build.
    let (mut file, meta) = open_regular(path).map_err(|e| input_error(path, e))?;
    let head = read_head(&mut file).map_err(|e| SourceError::unreadable(path, e))?;
    if let Some(compression) = compression_of(&head) {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| SourceError::unreadable(path, e))?;
        let reader = decoder(compression, file).map_err(|e| corrupt(path, compression, &e))?;
        return match scan_tar(reader).map_err(|e| corrupt(path, compression, &e))? {
            Holds::RootFs => Ok(SourceKind::Tarball(compression)),
            holds => Err(SourceError::invalid(
                shown(path),
                format!(
                    "{} {}: rfake reads uncompressed image archives only; \
                     decompress it first ({} -dk {})",
                    compression_name(compression),
                    holds.name(),
                    tool_name(compression),
                    shown(path)
                ),
            )),
        };
    }
    if is_tar_header(&head) {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| SourceError::unreadable(path, e))?;
        let holds = scan_tar_seek(file).map_err(|e| corrupt(path, Compression::None, &e))?;
        return Ok(match holds {
            Holds::RootFs => SourceKind::Tarball(Compression::None),
            Holds::OciLayout => SourceKind::OciArchive,
            Holds::Docker => SourceKind::DockerArchive,
        });
    }
    if head.starts_with(BZIP2) {
        return Err(SourceError::invalid(
            shown(path),
            "bzip2-compressed: rfake reads gzip, xz and zstd; recompress or decompress it first",
        ));
    }
    if meta.len() <= MAX_RECIPE {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| SourceError::unreadable(path, e))?;
        let text = read_limited(file, MAX_RECIPE).map_err(|e| input_error(path, e))?;
        if let Ok(text) = std::str::from_utf8(&text) {
            if looks_like_recipe(path, text) {
                return Ok(SourceKind::Recipe);
            }
            if crate::build::deffile::looks_like_definition(text.as_bytes()) {
                return Ok(SourceKind::Definition);
            }
        }
    }
    Err(SourceError::invalid(
        shown(path),
        format!(
            "not a build source: not a tar archive (plain, gzip, xz or zstd), a recipe \
             (TOML with an [image] table) or a definition file (a Bootstrap: header); {}",
            describe_start(&head)
        ),
    ))
}

/// The metadata of `path`, following a symbolic link; a dangling link or a
/// loop is reported as such.
pub(super) fn followed_metadata(path: &Path) -> Result<fs::Metadata, SourceError> {
    let own = fs::symlink_metadata(path).map_err(|e| SourceError::unreadable(path, e))?;
    if !own.file_type().is_symlink() {
        return Ok(own);
    }
    fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SourceError::Dangling {
            place: shown(path),
            target: fs::read_link(path).map_or_else(|e| io_text(&e), |t| shown(&t)),
        },
        _ => SourceError::unreadable(path, e),
    })
}

/// "FIFO", "socket"...: what a non-file, non-directory is.
pub(super) fn file_type_name(t: &fs::FileType) -> &'static str {
    FileKind::of(t).map_or("regular file", FileKind::name)
}

/// A file the build reads that is missing or unreadable (exit 66), or not a
/// regular file or too large (exit 65); see [`crate::input`].
pub(super) fn input_error(path: &Path, e: InputError) -> SourceError {
    match e {
        InputError::Io(e) => SourceError::unreadable(path, e),
        other => SourceError::invalid(shown(path), other.to_string()),
    }
}

fn read_head(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(PROBE_LEN);
    r.take(PROBE_LEN as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The compression whose magic bytes start `head`, if any.
pub(super) fn compression_of(head: &[u8]) -> Option<Compression> {
    if head.starts_with(GZIP) {
        Some(Compression::Gzip)
    } else if head.starts_with(XZ) {
        Some(Compression::Xz)
    } else if head.starts_with(ZSTD) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// A reader of the decompressed bytes of `r`.
pub(super) fn decoder<'a>(
    compression: Compression,
    r: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(r),
        // Multi-member: `pigz` and concatenated gzip files are one stream.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// Detect the compression of the stream `r` by its first bytes and return
/// a reader of its decompressed bytes (the probed bytes are put back).
pub(super) fn sniff<'a>(mut r: impl Read + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 6];
    let len = crate::build::spool::read_full(&mut r, &mut head)?;
    let probed = head[..len].to_vec();
    let compression = compression_of(&probed).unwrap_or(Compression::None);
    let whole = io::Cursor::new(probed).chain(r);
    Ok((compression, decoder(compression, whole)?))
}

pub(super) fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip-compressed",
        Compression::Xz => "xz-compressed",
        Compression::Zstd => "zstd-compressed",
    }
}

fn tool_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "cat",
        Compression::Gzip => "gzip",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    }
}

fn corrupt(path: &Path, compression: Compression, e: &io::Error) -> SourceError {
    let what = match compression {
        Compression::None => "corrupt tar archive".to_string(),
        c => format!("corrupt {} tar archive", compression_name(c)),
    };
    SourceError::invalid(shown(path), format!("{what}: {}", io_text(e)))
}

/// A POSIX/GNU tar header (`ustar` magic at 257) or a pre-POSIX one (a
/// valid header checksum). An empty archive (zero blocks only) is not a
/// source: nothing tells it from any file that starts with zeros.
pub(super) fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < PROBE_LEN {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let sum: u32 = head[..148]
        .iter()
        .chain(&head[156..512])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    let field = String::from_utf8_lossy(&head[148..156]);
    let field = field.trim_matches(|c: char| c == '\0' || c == ' ');
    u32::from_str_radix(field, 8).is_ok_and(|stored| stored == sum)
}

/// What a tar archive holds, judged by its member names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    RootFs,
    OciLayout,
    Docker,
}

impl Holds {
    fn name(self) -> &'static str {
        match self {
            Holds::RootFs => "tarball",
            Holds::OciLayout => "OCI archive",
            Holds::Docker => "docker archive",
        }
    }
}

fn scan_tar(r: impl Read) -> io::Result<Holds> {
    scan_names(TarReader::new(r))
}

fn scan_tar_seek(r: impl Read + Seek) -> io::Result<Holds> {
    scan_names(TarReader::seekable(r))
}

/// Read the member names of a tar archive: an OCI archive has `oci-layout`
/// and `index.json`, a docker archive `manifest.json` (`docker save` from
/// Docker 25 writes both: read as OCI). The scan stops at the first member
/// no image archive has (`etc/`, `usr/bin/...`), so a root filesystem
/// tarball is recognised after one header.
fn scan_names<R: Read>(mut tar: TarReader<R>) -> io::Result<Holds> {
    let (mut layout, mut index, mut manifest) = (false, false, false);
    while let Some(member) = tar.next_member()? {
        let name = member_name(&member.name);
        match name.as_str() {
            "oci-layout" => layout = true,
            "index.json" => index = true,
            "manifest.json" => manifest = true,
            other if !image_archive_member(other) => return Ok(Holds::RootFs),
            _ => {}
        }
    }
    Ok(if layout && index {
        Holds::OciLayout
    } else if manifest {
        Holds::Docker
    } else {
        Holds::RootFs
    })
}

/// A member name without leading `/` and `./`, and without a trailing `/`.
pub(super) fn member_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let mut name: &str = &name;
    loop {
        if let Some(rest) = name.strip_prefix("./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix('/') {
            name = rest;
        } else {
            break;
        }
    }
    if name == "." {
        name = "";
    }
    name.trim_end_matches('/').to_string()
}

/// Could `name` be a member of an OCI or docker archive? `oci-layout`,
/// `index.json`, `manifest.json`, `repositories`, anything under `blobs/`,
/// top-level `*.json` and `*.tar` (podman's configs and layers) and legacy
/// `<64 hex>/` layer directories.
fn image_archive_member(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or("");
    let top_level = !name.contains('/');
    name.is_empty()
        || matches!(
            name,
            "oci-layout" | "index.json" | "manifest.json" | "repositories"
        )
        || first == "blobs"
        || (top_level && (name.ends_with(".json") || name.ends_with(".tar")))
        || (first.len() == 64 && first.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Does the UTF-8 `text` read as a recipe? A `.toml` file (so its syntax
/// errors are reported as a recipe's), or one with an `[image]` table.
fn looks_like_recipe(path: &Path, text: &str) -> bool {
    path.extension().is_some_and(|e| e == "toml")
        || text.lines().any(|line| {
            let line = line.trim();
            line.strip_prefix("[image]")
                .is_some_and(|rest| rest.trim().is_empty() || rest.trim().starts_with('#'))
        })
}

/// "the file is empty", or its first bytes in hex.
fn describe_start(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".to_string();
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("it starts with {}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{TarMaker, compress};
    use super::*;
    use crate::exit::ExitKind;

    #[test]
    fn member_names_of_image_archives() {
        for name in [
            "",
            "oci-layout",
            "index.json",
            "manifest.json",
            "repositories",
            "blobs",
            "blobs/sha256/0123",
            "0123abcd.json",
            "0123abcd.tar",
            &format!("{}/layer.tar", "a".repeat(64)),
            &format!("{}/VERSION", "a".repeat(64)),
        ] {
            assert!(image_archive_member(name), "{name}");
        }
        for name in [
            "etc",
            "bin/sh",
            "usr/share/x.json",
            "sub/y.tar",
            "abc/layer.tar",
        ] {
            assert!(!image_archive_member(name), "{name}");
        }
        assert_eq!(member_name(b"./a/b/"), "a/b");
        assert_eq!(member_name(b"/./a"), "a");
        assert_eq!(member_name(b"./"), "");
        assert_eq!(member_name(b"."), "");
    }

    #[test]
    fn kinds_by_content() {
        let d = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: &[u8]| {
            let path = d.path().join(name);
            fs::write(&path, bytes).unwrap();
            path
        };
        // A pre-POSIX (v7) header: no "ustar" magic, a valid checksum.
        let mut v7 = TarMaker::default().file("f", b"x", 0o644).finish();
        v7[257..265].fill(0);
        let sum: u32 = v7[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        v7[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(
            detect(&at("v7.tar", &v7)).unwrap(),
            SourceKind::Tarball(Compression::None)
        );
        // Named anything: content decides.
        let tar = TarMaker::default().file("etc/x", b"x", 0o644).finish();
        assert_eq!(
            detect(&at("image.sif", &compress(&tar, Compression::Xz))).unwrap(),
            SourceKind::Tarball(Compression::Xz)
        );
        assert_eq!(
            detect(&at("recipe", b"# r\n[image] # the image\n")).unwrap(),
            SourceKind::Recipe
        );
        assert_eq!(
            detect(&at("broken.toml", b"[image\n")).unwrap(),
            SourceKind::Recipe
        );
        assert_eq!(
            detect(&at(
                "app",
                b"# an app\nBootstrap: docker\nFrom: debian:12\n\n%post\n  true\n"
            ))
            .unwrap(),
            SourceKind::Definition
        );
        for (name, bytes, expected) in [
            (
                "empty",
                &b""[..],
                "not a build source: not a tar archive (plain, gzip, xz or zstd), a recipe (TOML with an [image] table) or a definition file (a Bootstrap: header); the file is empty",
            ),
            (
                "elf",
                b"\x7fELF\x02\x01\x01\0\0\0",
                "it starts with 7f 45 4c 46 02 01 01 00",
            ),
            (
                "x.bz2",
                b"BZh91AY&SY",
                "bzip2-compressed: rfake reads gzip, xz and zstd; recompress or decompress it first",
            ),
            (
                "x.gz",
                &compress(b"not a tar at all", Compression::Gzip),
                "corrupt gzip-compressed tar archive: ",
            ),
        ] {
            let e = detect(&at(name, bytes)).unwrap_err();
            assert!(e.to_string().contains(expected), "{name}: {e}");
            assert_eq!(e.exit_kind(), ExitKind::BadImage, "{name}");
        }
    }
}
