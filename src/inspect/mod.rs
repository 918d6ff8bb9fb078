//! `rfake inspect IMAGE`: what an image is and holds, without mounting it
//! and without FUSE: the SIF header and objects, the SquashFS superblock,
//! and the metadata files inside (labels, environment, runscript,
//! definition), read in-process with libsquashfs ([`crate::squashfs::Reader`]).

mod files;
mod render;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::image::sif::{DataType, FsType, Sif};
use crate::image::{ImageError, sif};
use crate::input::{self, FileKind, InputError};
use crate::squashfs::superblock as squashfs;
use crate::squashfs::{Reader, SqfsError};

pub use files::{Entry, ImageFiles, InsideError};

/// Largest metadata file read for the report (runscripts, labels...).
const META_MAX: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct InspectRequest {
    pub image: PathBuf,
    pub json: bool,
    pub list: Option<String>,
    pub cat: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub format: &'static str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sif: Option<SifReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub squashfs: Option<SquashReport>,
    /// Why there is no readable root filesystem, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_problem: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Environment files inside the image: path → content.
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runscript: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<Entry>>,
}

#[derive(Debug, Serialize)]
pub struct SifReport {
    pub version: String,
    pub arch: String,
    pub uuid: String,
    pub created: i64,
    pub modified: i64,
    pub objects: Vec<ObjectReport>,
}

#[derive(Debug, Serialize)]
pub struct ObjectReport {
    pub id: u32,
    pub data_type: String,
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub group: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionReport>,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub fstype: String,
    pub parttype: String,
    pub arch: String,
}

#[derive(Debug, Serialize)]
pub struct SquashReport {
    pub offset: u64,
    pub compression: String,
    pub block_size: u32,
    pub inodes: u32,
    pub bytes_used: u64,
    pub mtime: u32,
}

fn image_error(path: &Path, e: std::io::Error) -> Error {
    Error::Image(if e.kind() == std::io::ErrorKind::NotFound {
        ImageError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        ImageError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        }
    })
}

/// The image as `exec` opens it ([`crate::input::open_regular`]): without
/// blocking, checked on the open descriptor; a directory is `None` (an
/// unpacked root), a FIFO, socket or device is refused (exit 65).
fn open_image(path: &Path) -> Result<Option<(File, std::fs::Metadata)>, Error> {
    match input::open_regular(path) {
        Ok(opened) => Ok(Some(opened)),
        Err(InputError::NotRegular(FileKind::Directory)) => Ok(None),
        Err(InputError::NotRegular(kind)) => Err(Error::Image(ImageError::NotAFile {
            path: path.to_path_buf(),
            kind: kind.name(),
        })),
        Err(e) => Err(image_error(path, e.into())),
    }
}

/// Open the image and describe it.
pub fn inspect(path: &Path, list: Option<&str>) -> Result<(Report, ImageFiles), Error> {
    let opened = open_image(path)?;
    let size = match &opened {
        Some((_, meta)) => meta.len(),
        None => std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    let mut report = Report {
        path: path.to_path_buf(),
        format: "directory",
        size,
        sif: None,
        squashfs: None,
        root_problem: None,
        labels: BTreeMap::new(),
        environment: BTreeMap::new(),
        runscript: None,
        definition: None,
        list: None,
    };
    let files = if let Some((mut file, _)) = opened {
        let mut probe = Vec::new();
        (&mut file)
            .take(128)
            .read_to_end(&mut probe)
            .map_err(|e| image_error(path, e))?;
        if squashfs::has_magic(&probe) {
            report.format = "SquashFS";
            open_squashfs(path, file, 0, None, &mut report)?
        } else if sif::is_sif(&probe) {
            report.format = "SIF";
            sif_files(path, file, &mut report)?
        } else {
            return Err(Error::Image(ImageError::UnknownFormat {
                path: path.to_path_buf(),
                detail: format!(
                    "it starts with {}",
                    squashfs::hex(&probe[..probe.len().min(8)])
                ),
            }));
        }
    } else {
        ImageFiles::Directory(path.to_path_buf())
    };
    collect_metadata(&files, &mut report);
    if let Some(dir) = list {
        report.list = Some(files.walk(dir).map_err(|e| inside_error(path, dir, e))?);
    }
    Ok((report, files))
}

/// The root file system of the single-file image at `path` (a SquashFS
/// file, or a SIF's root partition), checked as `inspect` checks it; for
/// a definition file's `Bootstrap: localimage`.
pub fn squashfs_reader(path: &Path) -> Result<Reader, Error> {
    match inspect(path, None)?.1 {
        ImageFiles::Squashfs(reader) => Ok(*reader),
        _ => Err(Error::Inside {
            image: path.to_path_buf(),
            detail: "no SquashFS root file system to start from".into(),
            missing: false,
        }),
    }
}

fn inside_error(image: &Path, inner: &str, e: InsideError) -> Error {
    Error::Inside {
        image: image.to_path_buf(),
        detail: format!("{inner}: {}", e.detail),
        missing: e.missing,
    }
}

/// The SquashFS at `offset` in `file`, which must fit in `len` bytes (a SIF
/// partition's) if given.
fn open_squashfs(
    path: &Path,
    file: File,
    offset: u64,
    len: Option<u64>,
    report: &mut Report,
) -> Result<ImageFiles, Error> {
    let opened = match len {
        Some(len) => Reader::open_partition(file, offset, len),
        None => Reader::open(file, offset),
    };
    let reader = opened.map_err(|e| match e {
        SqfsError::Library(e) => Error::Host(e.into()),
        e => Error::Inside {
            image: path.to_path_buf(),
            detail: format!("SquashFS at offset {offset}: {e}"),
            missing: false,
        },
    })?;
    let info = reader.info();
    report.squashfs = Some(SquashReport {
        offset,
        compression: info.compression.clone(),
        block_size: info.block_size,
        inodes: info.inode_count,
        bytes_used: info.bytes_used,
        mtime: info.mtime,
    });
    Ok(ImageFiles::Squashfs(Box::new(reader)))
}

fn sif_files(path: &Path, mut file: File, report: &mut Report) -> Result<ImageFiles, Error> {
    let sif_err = |e: sif::SifError| {
        Error::Image(ImageError::Sif {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let parsed = Sif::read(&mut file).map_err(sif_err)?;
    let h = &parsed.header;
    report.sif = Some(SifReport {
        version: String::from_utf8_lossy(&h.version)
            .trim_end_matches('\0')
            .to_string(),
        arch: h.arch().name().to_string(),
        uuid: h.uuid.iter().map(|b| format!("{b:02x}")).collect(),
        created: h.created,
        modified: h.modified,
        objects: parsed
            .descriptors
            .iter()
            .map(|d| ObjectReport {
                id: d.id,
                data_type: d.data_type.to_string(),
                name: d.name.clone(),
                offset: d.offset,
                size: d.size,
                group: d.group_id,
                link: d.linked_object().or(d.linked_group()),
                partition: d.partition().map(|p| PartitionReport {
                    fstype: p.fstype.to_string(),
                    parttype: p.parttype.to_string(),
                    arch: p.arch().name().to_string(),
                }),
            })
            .collect(),
    });
    for d in &parsed.descriptors {
        let text = || read_object(&file, d.offset, d.size.min(META_MAX));
        match d.data_type {
            DataType::Deffile => report.definition = text(),
            DataType::Labels => {
                if let Some(labels) = text().and_then(|t| parse_labels(&t)) {
                    report.labels.extend(labels);
                }
            }
            _ => {}
        }
    }
    let root = match parsed.root_partition() {
        Ok(root) => root,
        Err(e) => {
            report.root_problem = Some(e.to_string());
            return Ok(ImageFiles::None);
        }
    };
    let (desc, info) = root;
    if info.fstype != FsType::Squashfs {
        report.root_problem = Some(format!(
            "the root partition is {}, not squashfs",
            info.fstype
        ));
        return Ok(ImageFiles::None);
    }
    let magic = read_bytes(&file, desc.offset, 4).unwrap_or_default();
    if !squashfs::has_magic(&magic) {
        report.root_problem = Some(format!(
            "the root partition (object {}) at offset {} is not a SquashFS: it starts with {}",
            desc.id,
            desc.offset,
            squashfs::hex(&magic)
        ));
        return Ok(ImageFiles::None);
    }
    open_squashfs(path, file, desc.offset, Some(desc.size), report)
}

fn read_bytes(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len as usize];
    let n = file.read_at(&mut buf, offset).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn read_object(file: &File, offset: u64, len: u64) -> Option<String> {
    read_bytes(file, offset, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A JSON object of labels (values that are not strings kept as JSON).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let obj = value.as_object()?;
    Some(
        obj.iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), v)
            })
            .collect(),
    )
}

/// Labels, environment, runscript and definition from inside the image.
fn collect_metadata(files: &ImageFiles, report: &mut Report) {
    for path in ["/.rfake/labels.json", "/.singularity.d/labels.json"] {
        if let Some(labels) = files
            .read_text(path, META_MAX)
            .and_then(|t| parse_labels(&t))
        {
            report.labels.extend(labels);
        }
    }
    if let Some(text) = files.read_text("/.rfake/environment", META_MAX) {
        report
            .environment
            .insert("/.rfake/environment".into(), text);
    }
    if let Ok(entries) = files.list("/.singularity.d/env") {
        for e in entries.iter().filter(|e| e.name.ends_with(".sh")) {
            let path = format!("/.singularity.d/env/{}", e.name);
            if let Some(text) = files.read_text(&path, META_MAX) {
                report.environment.insert(path, text);
            }
        }
    }
    report.runscript = files.read_text("/.singularity.d/runscript", META_MAX);
    if report.definition.is_none() {
        report.definition = files.read_text("/.singularity.d/Singularity", META_MAX);
    }
}

/// `rfake inspect`: print the report, a listing or a file.
pub fn run(req: &InspectRequest) -> Result<u8, Error> {
    use std::io::Write;
    let (report, files) = inspect(&req.image, req.list.as_deref())?;
    let mut out = std::io::stdout().lock();
    if let Some(inner) = &req.cat {
        // Streamed: a file's size is the image's word, and may be large.
        let mut to = StopOnError {
            out: &mut out,
            failed: false,
        };
        return match files.copy_file(inner, &mut to) {
            // A reader that went away (`| head`) ends the copy quietly.
            Err(_) if to.failed => Ok(0),
            Err(e) => Err(inside_error(&req.image, inner, e)),
            Ok(()) => Ok(0),
        };
    }
    let text = if req.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else if let Some(entries) = &report.list {
        render::listing(entries)
    } else {
        render::report(&report)
    };
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// A writer that remembers that a write failed.
struct StopOnError<'a, W: std::io::Write> {
    out: &'a mut W,
    failed: bool,
}

impl<W: std::io::Write> std::io::Write for StopOnError<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().inspect_err(|_| self.failed = true)
    }
}
