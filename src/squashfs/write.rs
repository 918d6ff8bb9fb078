//! Writing a [`Tree`] as a SquashFS image.
//!
//! Two passes over a plan made from the tree:
//! 1. file data through the block processor (compression on
//!    `opts.workers` threads, tail ends packed into fragment blocks,
//!    duplicate blocks and fragments stored once); it hands back one
//!    file inode per regular file. Files are taken in path order, except
//!    those from image layers, which come last in layer stream order
//!    ([`data_order`]): each layer is then read once, from its start,
//!    without going back. An inode records where its file's blocks and
//!    fragment are, so the order of the data does not matter to readers,
//!    and it depends on the tree only, so the output still does too;
//! 2. inodes, children before their directory and the root last, into the
//!    inode table, with the directory listings going to an in-memory meta
//!    data writer that is appended after the inode table.
//!
//! A file with holes (a sparse tar member, a host file with holes, zero runs
//! the spool left out) goes through the block processor without them: the
//! blocks that hold data, one after another, as if they were a file of
//! their own (SquashFS keeps a file's stored blocks contiguous anyway, and
//! a hole takes no space). Its inode is then given the file's real size
//! and a block list with a 0 entry (a sparse block, which reads as zeros)
//! for each block in a hole, written after the inode's header piece by
//! piece: a 1 TiB file of 128 KiB blocks has 8 Mi entries. Blocks of zeros
//! within the data become sparse blocks too: the block processor detects
//! them, as mksquashfs does.
//!
//! Inode numbers are the positions in pass 2 (1 = first written, the root
//! has the highest), so a directory's parent number is known before the
//! parent is written. A hard link is one more directory entry pointing at
//! the same inode (number and reference); that inode's link count counts
//! every name.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::file::SqfsFile;
use super::obj::{Malloced, Obj, check};
use super::{MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Progress, SqfsError, WriteOptions, WriteSummary, ffi};
use crate::build::spool::{Spooled, open_content};
use crate::build::tree::{Content, Meta, Node, Tree, names};

/// Progress is reported after each file and at least this often within one.
const PROGRESS_BYTES: u64 = 16 << 20;

/// Write `tree` as a SquashFS image into `out` (an already-created, empty,
/// writable file), all entries uid 0 / gid 0, each with its own
/// modification time ([`Meta::mtime`]) or, lacking one, `opts.mtime`, which
/// is also the super block's time.
///
/// `spool` is needed when the tree has [`Content::Spool`] or
/// [`Content::Layer`] files.
/// `progress` is called as file data goes in. The output is a function of
/// `tree` and `opts` only (thread count included: the block processor
/// writes blocks in submission order).
pub fn write_image(
    out: &Path,
    tree: &Tree,
    spool: Option<&Spooled>,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteSummary, SqfsError> {
    check_options(opts)?;
    // Before anything is written: a missing library is an error here, not
    // a panic behind (see `ffi::lib`).
    ffi::load()?;
    let plan = WritePlan::new(tree)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .map_err(|source| SqfsError::Io {
            what: format!("opening {}", out.display()),
            source,
        })?;
    let file = SqfsFile::writer(file);
    file.set_size(0).map_err(|source| SqfsError::Io {
        what: format!("emptying {}", out.display()),
        source,
    })?;
    let mut writer = Writer::new(&file, opts)?;
    let result = writer.write(&plan, spool, progress);
    // Attach the I/O error behind an SQFS_ERROR_IO, if the file saw one.
    let result = result.map_err(|e| file.explain(e));
    drop(writer);
    let inodes = result?;
    Ok(WriteSummary {
        bytes: file.size(),
        inodes,
    })
}

fn check_options(opts: &WriteOptions) -> Result<(), SqfsError> {
    let bs = opts.block_size;
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Err(SqfsError::Options(format!(
            "block size {bs} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        )));
    }
    Ok(())
}

/// Blocks in flight per compression thread: enough to keep the threads
/// busy while the caller reads the next files (64 measured about 12%
/// faster than 10 on a 2-core machine; more gave nothing).
const BACKLOG_PER_WORKER: u32 = 64;

/// At most this much block data in flight.
const BACKLOG_BYTES: u32 = 256 << 20;

fn backlog(workers: u32, block_size: u32) -> u32 {
    (workers * BACKLOG_PER_WORKER)
        .min(BACKLOG_BYTES / block_size)
        .max(workers * 2)
}

/// One inode to write, in inode-table order.
enum Item<'a> {
    Dir {
        path: PathBuf,
        meta: &'a Meta,
        /// (name, item index), sorted by name.
        children: Vec<(&'a OsStr, usize)>,
        /// Item index of the parent (None for the root).
        parent: Option<usize>,
        subdirs: u32,
    },
    /// A regular file: an index into `WritePlan::files`.
    File(usize),
    Symlink {
        path: PathBuf,
        meta: &'a Meta,
        target: &'a Path,
    },
}

/// A regular file's data to write (pass 1), in path order.
struct PlanFile<'a> {
    path: PathBuf,
    meta: &'a Meta,
    size: u64,
    content: &'a Content,
    /// Number of names (1 + hard links).
    nlink: u32,
}

struct WritePlan<'a> {
    files: Vec<PlanFile<'a>>,
    /// Inodes in writing order; inode number = index + 1.
    items: Vec<Item<'a>>,
}

/// Where a path points inside the image, normalized for lookups ("a/b/c").
fn key(path: &Path) -> Option<PathBuf> {
    names(path).ok().map(|n| n.iter().collect())
}

/// "/a/b" for error messages (control characters escaped).
fn shown(path: &Path) -> String {
    crate::text::shown(&Path::new("/").join(path))
}

impl<'a> WritePlan<'a> {
    fn new(tree: &'a Tree) -> Result<WritePlan<'a>, SqfsError> {
        // Regular files in path order, and where each one is.
        let mut files = Vec::new();
        let mut by_path = HashMap::new();
        let mut links = Vec::new();
        visit(
            &tree.root,
            &mut PathBuf::new(),
            &mut |path, node| match node {
                Node::File {
                    meta,
                    size,
                    content,
                } => {
                    by_path.insert(path.to_path_buf(), files.len());
                    files.push(PlanFile {
                        path: path.to_path_buf(),
                        meta,
                        size: *size,
                        content,
                        nlink: 1,
                    });
                }
                Node::HardLink { target } => links.push((path.to_path_buf(), target)),
                _ => {}
            },
        );
        if !tree.root.is_dir() {
            return Err(SqfsError::Options(
                "the root of the tree is not a directory".into(),
            ));
        }
        // The file behind each hard link.
        let mut link_file = HashMap::new();
        for (path, target) in links {
            let Some(&file) = key(target).and_then(|k| by_path.get(&k)) else {
                return Err(SqfsError::BadHardLink {
                    path,
                    target: target.clone(),
                });
            };
            files[file].nlink += 1;
            link_file.insert(path, file);
        }
        let mut placer = Placer {
            by_path: &by_path,
            link_file: &link_file,
            file_item: vec![None; files.len()],
            items: Vec::new(),
        };
        placer.place_dir(&tree.root, &mut PathBuf::new());
        Ok(WritePlan {
            files,
            items: placer.items,
        })
    }
}

/// Orders the inodes: children before their directory, a file where its
/// first name (or hard link) is met.
struct Placer<'a, 'm> {
    by_path: &'m HashMap<PathBuf, usize>,
    link_file: &'m HashMap<PathBuf, usize>,
    file_item: Vec<Option<usize>>,
    items: Vec<Item<'a>>,
}

impl<'a> Placer<'a, '_> {
    /// Add the inodes of directory `node` (at `path`) and everything below
    /// it, the directory last; returns its item index.
    fn place_dir(&mut self, node: &'a Node, path: &mut PathBuf) -> usize {
        let Node::Dir { meta, children } = node else {
            unreachable!("place_dir is only called on directories")
        };
        let mut entries = Vec::with_capacity(children.len());
        let mut subdirs = Vec::new();
        for (name, child) in children {
            path.push(name);
            let item = match child {
                Node::Dir { .. } => {
                    let item = self.place_dir(child, path);
                    subdirs.push(item);
                    item
                }
                Node::File { .. } => self.file(self.by_path[path.as_path()]),
                Node::HardLink { .. } => self.file(self.link_file[path.as_path()]),
                Node::Symlink { meta, target } => {
                    self.items.push(Item::Symlink {
                        path: path.clone(),
                        meta,
                        target,
                    });
                    self.items.len() - 1
                }
            };
            path.pop();
            entries.push((name.as_os_str(), item));
        }
        self.items.push(Item::Dir {
            path: path.clone(),
            meta,
            children: entries,
            parent: None,
            subdirs: subdirs.len() as u32,
        });
        let me = self.items.len() - 1;
        for sub in subdirs {
            if let Item::Dir { parent, .. } = &mut self.items[sub] {
                *parent = Some(me);
            }
        }
        me
    }

    /// The item of regular file `file`, added now if it is not there yet.
    fn file(&mut self, file: usize) -> usize {
        *self.file_item[file].get_or_insert_with(|| {
            self.items.push(Item::File(file));
            self.items.len() - 1
        })
    }
}

/// The order pass 1 takes the files in (indices into `files`, which are in
/// path order): files from the host, the spool and rfake itself first, in
/// path order; then those from layers, by layer and by offset in its tar
/// stream, so that the writer reads each layer's stream forward once
/// (what later layers replaced or deleted is skipped over). A function of
/// the files alone, as the output must be.
fn data_order(files: &[PlanFile<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    // Stable: equal keys (everything not from a layer) keep path order.
    order.sort_by_key(|&i| match files[i].content {
        Content::Layer { layer, offset, .. } => (1, *layer, *offset),
        Content::LayerSparse { layer, extents, .. } => {
            (1, *layer, extents.first().map_or(0, |e| e.spool))
        }
        Content::Host(_) | Content::Spool { .. } | Content::Sparse { .. } | Content::Bytes(_) => {
            (0, 0, 0)
        }
    });
    order
}

/// Pre-order walk with paths relative to the root (the root is "").
fn visit<'a>(node: &'a Node, path: &mut PathBuf, f: &mut dyn FnMut(&Path, &'a Node)) {
    f(path, node);
    if let Node::Dir { children, .. } = node {
        for (name, child) in children {
            path.push(name);
            visit(child, path, f);
            path.pop();
        }
    }
}

/// The file inodes the block processor fills in, one slot per regular
/// file. The processor keeps pointers to the slots until it is finished,
/// so they live in a boxed slice that never moves; inodes still in it are
/// freed on drop.
struct FileInodes {
    slots: Box<[*mut ffi::sqfs_inode_generic_t]>,
}

impl FileInodes {
    fn slot(&mut self, i: usize) -> *mut *mut ffi::sqfs_inode_generic_t {
        &mut self.slots[i]
    }

    /// Take the finished inode of file `i`.
    fn take(&mut self, i: usize) -> Option<Malloced<ffi::sqfs_inode_generic_t>> {
        let ptr = std::mem::replace(&mut self.slots[i], std::ptr::null_mut());
        // SAFETY: a non-NULL slot holds an inode the block processor
        // allocated for us (block_processor.h: we own it once finished).
        unsafe { Malloced::from_raw(ptr) }
    }
}

impl Drop for FileInodes {
    fn drop(&mut self) {
        for ptr in self.slots.iter().filter(|p| !p.is_null()) {
            // SAFETY: as in `take`; each is freed once (taken ones are NULL).
            unsafe { ffi::lib().sqfs_free(ptr.cast()) }
        }
    }
}

/// An inode being written: allocated by libsquashfs (files, directories)
/// or by us (symlinks, with the target in the trailing `extra` bytes).
enum InodeBuf {
    Lib(Malloced<ffi::sqfs_inode_generic_t>),
    Own(Vec<u64>),
}

impl InodeBuf {
    fn symlink(target: &[u8]) -> InodeBuf {
        let head = std::mem::size_of::<ffi::sqfs_inode_generic_t>();
        // u64 words keep the struct's 8-byte alignment.
        let mut buf = vec![0u64; (head + target.len()).div_ceil(8)];
        let ptr = buf.as_mut_ptr().cast::<ffi::sqfs_inode_generic_t>();
        // SAFETY: `buf` is zeroed (a valid generic inode), aligned and big
        // enough for the struct plus `target.len()` bytes of `extra`.
        unsafe {
            (*ptr).base.type_ = ffi::SQFS_INODE_SLINK as u16;
            (*ptr).payload_bytes_available = target.len() as u32;
            (*ptr).payload_bytes_used = target.len() as u32;
            (*ptr).data.slink.nlink = 1;
            (*ptr).data.slink.target_size = target.len() as u32;
            let extra = (*ptr).extra.as_mut_ptr().cast::<u8>();
            std::ptr::copy_nonoverlapping(target.as_ptr(), extra, target.len());
        }
        InodeBuf::Own(buf)
    }

    fn as_ptr(&mut self) -> *mut ffi::sqfs_inode_generic_t {
        match self {
            InodeBuf::Lib(m) => m.as_ptr(),
            InodeBuf::Own(v) => v.as_mut_ptr().cast(),
        }
    }
}

/// The metadata of an item (a hard-linked file's is its first name's).
fn item_meta<'a>(plan: &WritePlan<'a>, item: &Item<'a>) -> &'a Meta {
    match item {
        Item::Dir { meta, .. } | Item::Symlink { meta, .. } => meta,
        Item::File(f) => plan.files[*f].meta,
    }
}

/// The `st_mode` of an item: type bits and permissions.
fn item_mode(plan: &WritePlan<'_>, item: &Item<'_>) -> u16 {
    let kind = match item {
        Item::Dir { .. } => ffi::SQFS_INODE_MODE_DIR,
        Item::File(_) => ffi::SQFS_INODE_MODE_REG,
        Item::Symlink { .. } => ffi::SQFS_INODE_MODE_LNK,
    };
    (kind as u16) | (item_meta(plan, item).mode & 0o7777)
}

/// The libsquashfs objects of one image being written. Fields drop in
/// declaration order: each object before the ones it points to.
struct Writer<'f> {
    dir_writer: Obj<ffi::sqfs_dir_writer_t>,
    dir_meta: Obj<ffi::sqfs_meta_writer_t>,
    inode_meta: Obj<ffi::sqfs_meta_writer_t>,
    processor: Option<Obj<ffi::sqfs_block_processor_t>>,
    inodes: FileInodes,
    /// Per regular file, the blocks (by index) that are holes, which the
    /// block processor did not see ([`hole_blocks`]).
    holes: Vec<Vec<Range<u64>>>,
    block_writer: Obj<ffi::sqfs_block_writer_t>,
    frags: Obj<ffi::sqfs_frag_table_t>,
    ids: Obj<ffi::sqfs_id_table_t>,
    xattrs: Obj<ffi::sqfs_xattr_writer_t>,
    uncmp: Obj<ffi::sqfs_compressor_t>,
    cmp: Obj<ffi::sqfs_compressor_t>,
    file: &'f SqfsFile,
    sb: ffi::sqfs_super_t,
    opts: &'f WriteOptions,
    /// ID table index of uid/gid 0.
    root_id: u16,
}

fn compressor(
    opts: &WriteOptions,
    flags: u32,
    what: &str,
) -> Result<Obj<ffi::sqfs_compressor_t>, SqfsError> {
    let what = format!("creating the {} {what}", opts.compression.name());
    // SAFETY: plain integers and a union of them; all-zero is valid (and
    // what compressor.h asks for before filling it in).
    let mut cfg: ffi::sqfs_compressor_config_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cfg` is a valid struct to fill in.
    let ret = unsafe {
        ffi::lib().sqfs_compressor_config_init(
            &mut cfg,
            opts.compression.id(),
            opts.block_size as usize,
            flags as u16,
        )
    };
    check(ret, || what.clone())?;
    let mut cmp = std::ptr::null_mut();
    // SAFETY: `cfg` was initialized above; `cmp` receives the new object.
    let ret = unsafe { ffi::lib().sqfs_compressor_create(&cfg, &mut cmp) };
    check(ret, || what.clone())?;
    // SAFETY: a fresh compressor that only this owner destroys.
    let cmp = unsafe { Obj::from_raw(cmp, &what)? };
    if flags & ffi::SQFS_COMP_FLAG_UNCOMPRESS == 0 {
        super::cmp::guard(cmp, &what)
    } else {
        Ok(cmp)
    }
}

impl<'f> Writer<'f> {
    fn new(file: &'f SqfsFile, opts: &'f WriteOptions) -> Result<Writer<'f>, SqfsError> {
        let fp = file.as_ptr();
        // SAFETY: the super block struct is plain integers; all-zero is valid.
        let mut sb: ffi::sqfs_super_t = unsafe { std::mem::zeroed() };
        // SAFETY: `sb` is a valid struct to fill in.
        let ret = unsafe {
            ffi::lib().sqfs_super_init(
                &mut sb,
                opts.block_size as usize,
                opts.mtime,
                opts.compression.id(),
            )
        };
        check(ret, || "initializing the super block".into())?;
        let cmp = compressor(opts, 0, "compressor")?;
        let uncmp = compressor(opts, ffi::SQFS_COMP_FLAG_UNCOMPRESS, "decompressor")?;

        // A placeholder super block, rewritten at the end, then the
        // compressor's options when they differ from the defaults.
        // SAFETY: `sb` and the file object are valid.
        let ret = unsafe { ffi::lib().sqfs_super_write(&sb, fp) };
        check(ret, || "writing the super block".into())?;
        // SAFETY: `cmp` is a live compressor; `write_options` is one of
        // its methods (compressor.h) and takes the file to append to.
        let ret = unsafe {
            let c = cmp.as_ptr();
            match (*c).write_options {
                Some(write_options) => write_options(c, fp),
                None => 0,
            }
        };
        if check(ret, || "writing the compressor options".into())? > 0 {
            sb.flags |= ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as u16;
        }

        // SAFETY: this and the creations below are constructor calls with
        // valid arguments; each result gets exactly one owner.
        let block_writer = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_block_writer_create(fp, ffi::SQFS_DEVBLK_SIZE as usize, 0),
                "creating the block writer",
            )?
        };
        // SAFETY: see above.
        let frags = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_frag_table_create(0),
                "creating the fragment table",
            )?
        };
        // SAFETY: see above.
        let ids =
            unsafe { Obj::from_raw(ffi::lib().sqfs_id_table_create(0), "creating the ID table")? };
        // SAFETY: see above.
        let xattrs = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_xattr_writer_create(0),
                "creating the xattr writer",
            )?
        };
        let mut root_id = 0;
        // SAFETY: `ids` is live; `root_id` receives the index.
        let ret = unsafe { ffi::lib().sqfs_id_table_id_to_index(ids.as_ptr(), 0, &mut root_id) };
        check(ret, || "adding ID 0 to the ID table".into())?;

        // Inode table: meta data blocks straight to the file. Directory
        // table: kept in memory, appended after the inode table.
        // SAFETY: see above; the meta writers keep `fp` and `cmp`, which
        // outlive them (field order).
        let inode_meta = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_meta_writer_create(fp, cmp.as_ptr(), 0),
                "creating the inode table writer",
            )?
        };
        // SAFETY: see above.
        let dir_meta = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_meta_writer_create(
                    fp,
                    cmp.as_ptr(),
                    ffi::SQFS_META_WRITER_KEEP_IN_MEMORY,
                ),
                "creating the directory table writer",
            )?
        };
        // SAFETY: see above; the directory writer keeps `dir_meta`.
        let dir_writer = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_dir_writer_create(dir_meta.as_ptr(), 0),
                "creating the directory writer",
            )?
        };
        Ok(Writer {
            dir_writer,
            dir_meta,
            inode_meta,
            processor: None,
            inodes: FileInodes {
                slots: Box::new([]),
            },
            holes: Vec::new(),
            block_writer,
            frags,
            ids,
            xattrs,
            uncmp,
            cmp,
            file,
            sb,
            opts,
            root_id,
        })
    }

    /// Write everything; returns the inode count.
    fn write(
        &mut self,
        plan: &WritePlan<'_>,
        spool: Option<&Spooled>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, SqfsError> {
        self.write_data(plan, spool, progress)?;
        self.write_inodes(plan)?;
        self.write_tables()?;
        Ok(plan.items.len() as u64)
    }

    /// Pass 1: every regular file's data through the block processor.
    fn write_data(
        &mut self,
        plan: &WritePlan<'_>,
        spool: Option<&Spooled>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), SqfsError> {
        let workers = self.opts.workers.clamp(1, 256) as u32;
        let desc = ffi::sqfs_block_processor_desc_t {
            size: std::mem::size_of::<ffi::sqfs_block_processor_desc_t>() as u32,
            max_block_size: self.opts.block_size,
            num_workers: workers,
            max_backlog: backlog(workers, self.opts.block_size),
            cmp: self.cmp.as_ptr(),
            wr: self.block_writer.as_ptr(),
            tbl: self.frags.as_ptr(),
            // With these two, fragment deduplication compares bytes, not
            // just hashes.
            file: self.file.as_ptr(),
            uncmp: self.uncmp.as_ptr(),
        };
        let mut proc_ = std::ptr::null_mut();
        // SAFETY: `desc` is filled in and its objects outlive the processor
        // (field order of `Writer`); `proc_` receives the new object.
        let ret = unsafe { ffi::lib().sqfs_block_processor_create_ex(&desc, &mut proc_) };
        check(ret, || "creating the block processor".into())?;
        // SAFETY: a fresh object that only this owner destroys.
        let processor = unsafe { Obj::from_raw(proc_, "creating the block processor")? };
        let proc_ = processor.as_ptr();
        self.processor = Some(processor);
        self.inodes = FileInodes {
            slots: vec![std::ptr::null_mut(); plan.files.len()].into_boxed_slice(),
        };

        self.holes = vec![Vec::new(); plan.files.len()];

        let block = u64::from(self.opts.block_size);
        let mut buf = vec![0u8; self.opts.block_size as usize];
        let mut done = Progress::default();
        let mut reported = 0;
        for i in data_order(&plan.files) {
            let f = &plan.files[i];
            let what = |step: &str| format!("{step} the data of {}", shown(&f.path));
            // SAFETY: the slot outlives the processor (`inodes` is dropped
            // after `processor`) and never moves.
            let ret = unsafe {
                ffi::lib().sqfs_block_processor_begin_file(
                    proc_,
                    self.inodes.slot(i),
                    std::ptr::null_mut(),
                    0,
                )
            };
            check(ret, || what("starting"))?;
            let reader =
                open_content(f.content, f.size, spool).map_err(|source| SqfsError::Io {
                    what: format!("opening the content of {}", shown(&f.path)),
                    source,
                })?;
            let holes = hole_blocks(&reader.data_extents(), f.size, block);
            // The blocks with data, one run at a time; the holes in
            // between are not read (pass 2 puts them in the block list).
            for run in data_runs(&holes, f.size.div_ceil(block)) {
                let end = (run.end * block).min(f.size);
                let mut pos = run.start * block;
                while pos < end {
                    let want = buf
                        .len()
                        .min(usize::try_from(end - pos).unwrap_or(usize::MAX));
                    let n = match reader.read_at(&mut buf[..want], pos) {
                        Ok(0) => {
                            return Err(SqfsError::ShortContent {
                                path: PathBuf::from(shown(&f.path)),
                                size: f.size,
                                got: pos,
                            });
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(source) => {
                            return Err(SqfsError::Io {
                                what: format!("reading the content of {}", shown(&f.path)),
                                source,
                            });
                        }
                    };
                    // SAFETY: `buf[..n]` is initialized; the processor copies it.
                    let ret = unsafe {
                        ffi::lib().sqfs_block_processor_append(proc_, buf.as_ptr().cast(), n)
                    };
                    check(ret, || what("writing"))?;
                    pos += n as u64;
                    done.bytes_done += n as u64;
                    if done.bytes_done - reported >= PROGRESS_BYTES {
                        reported = done.bytes_done;
                        progress(done);
                    }
                }
            }
            done.bytes_done += hole_bytes(&holes, f.size, block);
            self.holes[i] = holes;
            // SAFETY: a file was begun on this processor.
            let ret = unsafe { ffi::lib().sqfs_block_processor_end_file(proc_) };
            check(ret, || what("finishing"))?;
            done.files_done += 1;
            reported = done.bytes_done;
            progress(done);
        }
        // SAFETY: the processor is live; this waits for the workers and
        // flushes the last fragment block.
        let ret = unsafe { ffi::lib().sqfs_block_processor_finish(proc_) };
        check(ret, || "writing the file data".into())?;
        // Finished: the processor lets go of the inodes.
        self.processor = None;
        Ok(())
    }

    /// The xattr index for `meta`'s attributes (0xFFFFFFFF: none).
    fn xattr_index(&mut self, meta: &Meta, path: &Path) -> Result<u32, SqfsError> {
        let mut pairs = Vec::new();
        for (key, value) in &meta.xattrs {
            let Ok(ckey) = CString::new(key.as_bytes()) else {
                log::warn!("{}: skipping xattr {key:?}: NUL in the name", shown(path));
                continue;
            };
            // SAFETY: `ckey` is a valid C string.
            if unsafe { ffi::lib().sqfs_get_xattr_prefix_id(ckey.as_ptr()) } < 0 {
                log::warn!(
                    "{}: skipping xattr {key}: SquashFS stores only user.*, trusted.* and security.*",
                    shown(path)
                );
                continue;
            }
            pairs.push((ckey, value));
        }
        if pairs.is_empty() {
            return Ok(u32::MAX);
        }
        let x = self.xattrs.as_ptr();
        let what = || format!("recording the xattrs of {}", shown(path));
        // SAFETY: `x` is a live xattr writer; keys are C strings and values
        // are passed with their lengths (the writer copies both).
        unsafe {
            check(ffi::lib().sqfs_xattr_writer_begin(x, 0), what)?;
            for (key, value) in &pairs {
                let ret = ffi::lib().sqfs_xattr_writer_add(
                    x,
                    key.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                );
                check(ret, what)?;
            }
            let mut index = 0;
            check(ffi::lib().sqfs_xattr_writer_end(x, &mut index), what)?;
            Ok(index)
        }
    }

    /// Pass 2: the inode table and the directory listings.
    fn write_inodes(&mut self, plan: &WritePlan<'_>) -> Result<(), SqfsError> {
        let count = u32::try_from(plan.items.len())
            .map_err(|_| SqfsError::Options("more than 2^32 inodes".into()))?;
        self.sb.inode_table_start = self.file.size();
        let im = self.inode_meta.as_ptr();
        let mut refs = vec![0u64; plan.items.len()];
        for (i, item) in plan.items.iter().enumerate() {
            let mut holey = None;
            let (mut inode, path) = match item {
                Item::File(f) => {
                    let (inode, blocks) = self.file_inode(plan, *f)?;
                    holey = blocks;
                    (inode, plan.files[*f].path.as_path())
                }
                Item::Symlink { path, meta, target } => {
                    let mut inode = InodeBuf::symlink(target.as_os_str().as_bytes());
                    let xattr = self.xattr_index(meta, path)?;
                    set_xattr(&mut inode, xattr, path)?;
                    (inode, path.as_path())
                }
                Item::Dir {
                    path,
                    meta,
                    children,
                    parent,
                    subdirs,
                } => {
                    self.dir_listing(plan, path, children, &refs)?;
                    let xattr = self.xattr_index(meta, path)?;
                    // The root's parent: one past the last inode, as
                    // mksquashfs does.
                    let parent_no = parent.map_or(count + 1, |p| p as u32 + 1);
                    // SAFETY: the directory writer just ended a listing; the
                    // result is a fresh inode that we free.
                    let inode = unsafe {
                        Malloced::from_raw(ffi::lib().sqfs_dir_writer_create_inode(
                            self.dir_writer.as_ptr(),
                            2 + *subdirs as usize,
                            xattr,
                            parent_no,
                        ))
                    }
                    .ok_or_else(|| SqfsError::Lib {
                        what: format!("creating the inode of {}", shown(path)),
                        code: ffi::SQFS_ERROR_ALLOC,
                        detail: None,
                    })?;
                    let mut inode = InodeBuf::Lib(inode);
                    set_dir_nlink(&mut inode, 2 + *subdirs);
                    (inode, path.as_path())
                }
            };
            let p = inode.as_ptr();
            let mtime = item_meta(plan, item).mtime.unwrap_or(self.opts.mtime);
            let (mut block, mut offset) = (0u64, 0u32);
            // SAFETY: `p` is a complete generic inode (ours or the
            // library's); `im` is the live inode table writer.
            let ret = unsafe {
                (*p).base.mode = item_mode(plan, item);
                (*p).base.uid_idx = self.root_id;
                (*p).base.gid_idx = self.root_id;
                (*p).base.mod_time = mtime;
                (*p).base.inode_number = i as u32 + 1;
                ffi::lib().sqfs_meta_writer_get_position(im, &mut block, &mut offset);
                ffi::lib().sqfs_meta_writer_write_inode(im, p)
            };
            check(ret, || format!("writing the inode of {}", shown(path)))?;
            if let Some(holey) = holey {
                holey.write(im, path)?;
            }
            refs[i] = (block << 16) | u64::from(offset);
        }
        self.sb.root_inode_ref = refs.last().copied().unwrap_or_default();
        self.sb.inode_count = count;

        let dm = self.dir_meta.as_ptr();
        // SAFETY: live meta writers; flushing ends their last blocks, then
        // the in-memory directory table goes after the inode table.
        unsafe {
            check(ffi::lib().sqfs_meta_writer_flush(im), || {
                "writing the inode table".into()
            })?;
            check(ffi::lib().sqfs_meta_writer_flush(dm), || {
                "writing the directory table".into()
            })?;
            self.sb.directory_table_start = self.file.size();
            check(ffi::lib().sqfs_meta_write_write_to_file(dm), || {
                "writing the directory table".into()
            })?;
        }
        Ok(())
    }

    /// The inode of regular file `f`, from the block processor, with its
    /// link count and xattrs; for a file with holes, made the file's own
    /// (real size, extended) with its block list left to write after it.
    fn file_inode(
        &mut self,
        plan: &WritePlan<'_>,
        f: usize,
    ) -> Result<(InodeBuf, Option<HoleyBlocks>), SqfsError> {
        let pf = &plan.files[f];
        let what = || format!("making the inode of {}", shown(&pf.path));
        let inode = self.inodes.take(f).ok_or_else(|| SqfsError::Lib {
            what: what(),
            code: ffi::SQFS_ERROR_INTERNAL,
            detail: Some("the block processor gave no inode".into()),
        })?;
        let mut inode = InodeBuf::Lib(inode);
        let holes = std::mem::take(&mut self.holes[f]);
        let holey = if holes.is_empty() {
            None
        } else {
            let block = u64::from(self.opts.block_size);
            let p = inode.as_ptr();
            // SAFETY: `p` is the file inode the block processor finished;
            // it holds `payload_bytes_used / 4` block sizes. Making it
            // extended keeps them (and the allocation); the block list is
            // then written by us, so the inode itself carries none.
            unsafe {
                let stored = (*p).payload_bytes_used as usize / 4;
                let sizes = (*p).extra.as_slice(stored).to_vec();
                check(ffi::lib().sqfs_inode_make_extended(p), what)?;
                let (mut frag_index, mut frag_offset) = (0, 0);
                check(
                    ffi::lib().sqfs_inode_get_frag_location(p, &mut frag_index, &mut frag_offset),
                    what,
                )?;
                // With a fragment, the partial last block is in it, not in
                // the list.
                let count = if frag_index == u32::MAX {
                    pf.size.div_ceil(block)
                } else {
                    pf.size / block
                };
                (*p).data.file_ext.file_size = pf.size;
                (*p).data.file_ext.sparse += hole_bytes(&holes, pf.size, block);
                (*p).payload_bytes_used = 0;
                Some(HoleyBlocks {
                    sizes,
                    holes,
                    count,
                })
            }
        };
        if pf.nlink > 1 {
            let p = inode.as_ptr();
            // SAFETY: `p` is a file inode; only extended file inodes have
            // a link count, and making one extended keeps the allocation.
            unsafe {
                check(ffi::lib().sqfs_inode_make_extended(p), what)?;
                (*p).data.file_ext.nlink = pf.nlink;
            }
        }
        let xattr = self.xattr_index(pf.meta, &pf.path)?;
        set_xattr(&mut inode, xattr, &pf.path)?;
        Ok((inode, holey))
    }

    /// Write the listing of a directory to the directory table.
    fn dir_listing(
        &mut self,
        plan: &WritePlan<'_>,
        path: &Path,
        children: &[(&OsStr, usize)],
        refs: &[u64],
    ) -> Result<(), SqfsError> {
        let dw = self.dir_writer.as_ptr();
        let what = || format!("writing the directory listing of {}", shown(path));
        // SAFETY: `dw` is a live directory writer.
        check(unsafe { ffi::lib().sqfs_dir_writer_begin(dw, 0) }, what)?;
        for (name, child) in children {
            let Ok(cname) = CString::new(name.as_bytes()) else {
                return Err(SqfsError::Options(format!(
                    "{}: a name in it contains a NUL byte",
                    shown(path)
                )));
            };
            let mode = item_mode(plan, &plan.items[*child]);
            // SAFETY: `cname` is a C string; the child's inode was written
            // before (children come first), so its reference is known.
            let ret = unsafe {
                ffi::lib().sqfs_dir_writer_add_entry(
                    dw,
                    cname.as_ptr(),
                    *child as u32 + 1,
                    refs[*child],
                    mode,
                )
            };
            check(ret, what)?;
        }
        // SAFETY: a listing was begun on `dw`.
        check(unsafe { ffi::lib().sqfs_dir_writer_end(dw) }, what)?;
        Ok(())
    }

    /// The tables after the directory table, the final super block, and
    /// padding to a multiple of 4 KiB.
    fn write_tables(&mut self) -> Result<(), SqfsError> {
        let fp = self.file.as_ptr();
        let cmp = self.cmp.as_ptr();
        let sb = &mut self.sb;
        // SAFETY: live objects; each call appends its table and records the
        // location (and flags) in `sb`.
        unsafe {
            check(
                ffi::lib().sqfs_frag_table_write(self.frags.as_ptr(), fp, sb, cmp),
                || "writing the fragment table".into(),
            )?;
            check(
                ffi::lib().sqfs_id_table_write(self.ids.as_ptr(), fp, sb, cmp),
                || "writing the ID table".into(),
            )?;
            check(
                ffi::lib().sqfs_xattr_writer_flush(self.xattrs.as_ptr(), fp, sb, cmp),
                || "writing the xattr tables".into(),
            )?;
        }
        sb.bytes_used = self.file.size();
        // SAFETY: `sb` is complete; this rewrites the placeholder at 0.
        check(unsafe { ffi::lib().sqfs_super_write(sb, fp) }, || {
            "writing the super block".into()
        })?;
        let padded = sb
            .bytes_used
            .next_multiple_of(u64::from(ffi::SQFS_DEVBLK_SIZE));
        self.file.set_size(padded).map_err(|source| SqfsError::Io {
            what: "padding the image".into(),
            source,
        })
    }
}

/// The blocks of a file of `size` bytes, in blocks of `block` bytes (the
/// last maybe partial), that hold no byte of `data` (the file's data
/// extents, in order): ranges of block indices, in order.
fn hole_blocks(data: &[(u64, u64)], size: u64, block: u64) -> Vec<Range<u64>> {
    let blocks = size.div_ceil(block);
    let mut holes = Vec::new();
    // Blocks before this one are decided.
    let mut decided = 0;
    for &(at, len) in data {
        if len == 0 || at >= size {
            continue;
        }
        let first = at / block;
        let last = (at + len.min(size - at) - 1) / block;
        if first > decided {
            holes.push(decided..first);
        }
        decided = decided.max(last + 1);
    }
    if decided < blocks {
        holes.push(decided..blocks);
    }
    holes
}

/// The runs of blocks between `holes`, out of `blocks`.
fn data_runs(holes: &[Range<u64>], blocks: u64) -> Vec<Range<u64>> {
    let mut runs = Vec::new();
    let mut at = 0;
    for hole in holes {
        if hole.start > at {
            runs.push(at..hole.start);
        }
        at = hole.end;
    }
    if at < blocks {
        runs.push(at..blocks);
    }
    runs
}

/// The bytes of a file of `size` bytes in its hole blocks.
fn hole_bytes(holes: &[Range<u64>], size: u64, block: u64) -> u64 {
    holes
        .iter()
        .map(|h| (h.end * block).min(size) - h.start * block)
        .sum()
}

/// The block list of a file with holes: the block processor's sizes for
/// the blocks with data (it saw them as one file), and a 0, a sparse block,
/// for each block in `holes`; `count` entries in all.
struct HoleyBlocks {
    sizes: Vec<u32>,
    holes: Vec<Range<u64>>,
    count: u64,
}

impl HoleyBlocks {
    /// Entries written to the inode table at a time.
    const CHUNK: usize = 16 << 10;

    /// Append the list to the inode just written by `im` (the entries
    /// follow an extended file inode's fields), a chunk at a time.
    fn write(&self, im: *mut ffi::sqfs_meta_writer_t, path: &Path) -> Result<(), SqfsError> {
        let what = || format!("writing the block list of {}", shown(path));
        let internal = || SqfsError::Lib {
            what: what(),
            code: ffi::SQFS_ERROR_INTERNAL,
            detail: Some("the blocks with data do not match the holes".into()),
        };
        let mut sizes = self.sizes.iter();
        let mut hole = 0;
        let mut chunk: Vec<u32> = Vec::with_capacity(Self::CHUNK);
        let flush = |chunk: &mut Vec<u32>| {
            // SAFETY: `im` is the live inode table writer; `chunk` holds
            // `len` little-endian words, which it copies.
            let ret = unsafe {
                ffi::lib().sqfs_meta_writer_append(im, chunk.as_ptr().cast(), chunk.len() * 4)
            };
            chunk.clear();
            check(ret, what).map(|_| ())
        };
        for k in 0..self.count {
            while self.holes.get(hole).is_some_and(|h| h.end <= k) {
                hole += 1;
            }
            let word = match self.holes.get(hole) {
                Some(h) if h.start <= k => 0,
                _ => *sizes.next().ok_or_else(internal)?,
            };
            chunk.push(word.to_le());
            if chunk.len() == Self::CHUNK {
                flush(&mut chunk)?;
            }
        }
        if !chunk.is_empty() {
            flush(&mut chunk)?;
        }
        if sizes.next().is_some() {
            return Err(internal());
        }
        Ok(())
    }
}

/// Give `inode` xattr index `xattr` (u32::MAX: none, nothing to do).
fn set_xattr(inode: &mut InodeBuf, xattr: u32, path: &Path) -> Result<(), SqfsError> {
    if xattr == u32::MAX {
        return Ok(());
    }
    // SAFETY: a complete inode; the call switches it to the extended type
    // in place.
    let ret = unsafe { ffi::lib().sqfs_inode_set_xattr_index(inode.as_ptr(), xattr) };
    check(ret, || format!("setting the xattrs of {}", shown(path)))?;
    Ok(())
}

/// Set a directory inode's link count (2 + subdirectories).
///
/// libsquashfs 1.2's `sqfs_dir_writer_create_inode` stores its `hlinks`
/// argument plus the number of entries plus 2, not what it is given, so the
/// count is put right after it.
fn set_dir_nlink(inode: &mut InodeBuf, nlink: u32) {
    let p = inode.as_ptr();
    // SAFETY: `p` is a directory inode from the directory writer; the
    // union member written is the one its type selects.
    unsafe {
        if u32::from((*p).base.type_) == ffi::SQFS_INODE_EXT_DIR {
            (*p).data.dir_ext.nlink = nlink;
        } else {
            (*p).data.dir.nlink = nlink;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::spool::Spool;
    use crate::build::tree::Meta;
    use crate::fuse::{Filesystem, ROOT};
    use crate::squashfs::{DEFAULT_BLOCK_SIZE, ImageFs, Reader};
    use std::fs::File;
    use std::sync::Arc;

    #[test]
    fn holes_and_runs() {
        let pairs = |ranges: Vec<Range<u64>>| -> Vec<(u64, u64)> {
            ranges.into_iter().map(|r| (r.start, r.end)).collect()
        };
        let holes = |data: &[(u64, u64)], size| pairs(hole_blocks(data, size, 4));
        assert_eq!(holes(&[], 0), []);
        assert_eq!(holes(&[], 10), [(0, 3)]);
        assert_eq!(holes(&[(0, 10)], 10), []);
        assert_eq!(holes(&[(5, 1)], 20), [(0, 1), (2, 5)]);
        assert_eq!(holes(&[(4, 4)], 12), [(0, 1), (2, 3)]);
        // Touching two blocks by a byte each.
        assert_eq!(holes(&[(3, 2)], 12), [(2, 3)]);
        assert_eq!(holes(&[(0, 1), (11, 1)], 12), [(1, 2)]);
        // The partial last block is a hole, or has the data.
        assert_eq!(holes(&[(0, 1)], 9), [(1, 3)]);
        assert_eq!(holes(&[(8, 1)], 9), [(0, 2)]);
        // Extents past the end are cut; empty ones ignored.
        assert_eq!(holes(&[(2, 0), (8, 100)], 9), [(0, 2)]);
        assert_eq!(holes(&[(20, 1)], 9), [(0, 3)]);

        assert_eq!(pairs(data_runs(&[], 3)), [(0, 3)]);
        let all = 0..3;
        assert_eq!(pairs(data_runs(std::slice::from_ref(&all), 3)), []);
        assert_eq!(pairs(data_runs(&[0..1, 2..5], 7)), [(1, 2), (5, 7)]);
        assert_eq!(hole_bytes(&[0..1, 2..3], 9, 4), 4 + 1);
    }

    /// Files whose data is in layers are written in layer stream order:
    /// each layer is opened once and read forward, skipping what the tree
    /// no longer has, whatever the paths' order. Identical files are stored
    /// once, a hard link shares its file's data, every file reads back
    /// right, and the bytes do not depend on the thread count.
    #[test]
    fn layer_files_in_stream_order() {
        use std::io::Read;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let bs = u64::from(DEFAULT_BLOCK_SIZE);
        let mut seed = 11u64;
        let stream: Vec<u8> = (0..8 * bs + 5000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let opened = Arc::new(AtomicUsize::new(0));
        let mut spool = Spool::new(tempfile::tempfile().unwrap());
        let mut layers = Vec::new();
        for place in ["layer 1", "layer 2"] {
            let (data, opened) = (Arc::<[u8]>::from(stream.clone()), opened.clone());
            layers.push(spool.add_layer(
                place.into(),
                Box::new(move || {
                    opened.fetch_add(1, Ordering::Relaxed);
                    Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn Read>)
                }),
            ));
        }
        let spool = spool.finish().unwrap();
        // (path, layer, offset, len): paths in the opposite order of the
        // data; "b-dup" has "z-first"'s bytes; 2 * bs..3 * bs of layer 1
        // is not used (a file deleted by a later layer).
        let files = [
            ("a-last", 0, 5 * bs + 7, 3 * bs - 7),
            ("b-dup", 1, 0, bs + 100),
            ("c-small", 1, 3 * bs, 10),
            ("m-middle", 0, 3 * bs, 2 * bs + 1),
            ("z-first", 0, 0, bs + 100),
            ("y-empty", 1, 4 * bs, 0),
        ];
        let mut tree = Tree::default();
        for (name, layer, offset, len) in files {
            tree.insert(
                Path::new(name),
                Node::File {
                    meta: Meta::with_mode(0o644),
                    size: len,
                    content: Content::Layer {
                        layer: layers[layer],
                        offset,
                        len,
                    },
                },
            )
            .unwrap();
        }
        tree.insert(
            Path::new("link"),
            Node::HardLink {
                target: "m-middle".into(),
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        for workers in [1, 3] {
            let img = dir.path().join(format!("{workers}.sqfs"));
            File::create(&img).unwrap();
            let before = opened.load(Ordering::Relaxed);
            let opts = WriteOptions {
                workers,
                ..WriteOptions::default()
            };
            let summary = write_image(&img, &tree, Some(&spool), &opts, &mut |_| {}).unwrap();
            assert_eq!(
                opened.load(Ordering::Relaxed) - before,
                2,
                "each layer once"
            );
            // The duplicate is stored once.
            let data: u64 = files.iter().map(|f| f.3).sum::<u64>() - (bs + 100);
            assert!(summary.bytes < data + (16 << 10), "{}", summary.bytes);
            images.push(std::fs::read(&img).unwrap());
            let reader = Reader::open(File::open(&img).unwrap(), 0).unwrap();
            for (name, _, offset, len) in files {
                let got = reader.read_file(&format!("/{name}"), 1 << 24).unwrap();
                let want = &stream[offset as usize..(offset + len) as usize];
                assert!(got == want, "{name}");
            }
            let e = reader.stat("/link").unwrap();
            assert_eq!((e.size, e.nlink), (2 * bs + 1, 2));
        }
        assert!(images[0] == images[1], "the thread count changed the bytes");
    }

    /// Sparse files of every layout (holes first, last, in the middle, a
    /// hole or data in the partial last block, all hole, whole zero blocks
    /// inside the data, 64 GiB with a hard link and an xattr) written and
    /// read back byte for byte, through the FUSE server's reader and the
    /// Reader; the image holds their data only.
    #[test]
    fn sparse_files_round_trip() {
        let bs = u64::from(DEFAULT_BLOCK_SIZE);
        let mut seed = 7u64;
        let mut noise = |len: u64| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect()
        };
        let size = 5 * bs + 100;
        // Name, size, data chunks (offset, bytes).
        type Layout = (&'static str, u64, Vec<(u64, Vec<u8>)>);
        let layouts: Vec<Layout> = vec![
            ("lead-hole", size, vec![(3 * bs + 10, noise(300))]),
            ("trail-hole", size, vec![(0, noise(bs + 7))]),
            ("tail-data", size, vec![(5 * bs + 50, noise(50))]),
            ("tail-hole", size, vec![(bs, noise(bs))]),
            ("all-hole", 3 * bs, vec![]),
            ("whole-blocks", 4 * bs, vec![(bs, noise(2 * bs))]),
            (
                "zero-blocks",
                size,
                vec![(0, [noise(10), vec![0; 3 * bs as usize]].concat())],
            ),
            (
                "big",
                64 << 30,
                vec![(0, noise(10)), ((64 << 30) - 3, noise(3))],
            ),
        ];
        let mut spool = Spool::new(tempfile::tempfile().unwrap());
        let mut tree = Tree::default();
        let mut expected = Vec::new();
        for (name, size, chunks) in &layouts {
            let data: Vec<u8> = chunks.iter().flat_map(|c| c.1.clone()).collect();
            let map: Vec<(u64, u64)> = chunks.iter().map(|c| (c.0, c.1.len() as u64)).collect();
            let content = spool.append_sparse(&mut &data[..], &map, *size).unwrap();
            let mut meta = Meta::with_mode(0o644);
            if *name == "big" {
                meta.xattrs.insert("user.big".into(), b"yes".to_vec());
            }
            tree.insert(
                Path::new(name),
                Node::File {
                    meta,
                    size: *size,
                    content,
                },
            )
            .unwrap();
            expected.push((*name, *size, chunks.clone()));
        }
        tree.insert(
            Path::new("link"),
            Node::HardLink {
                target: "big".into(),
            },
        )
        .unwrap();
        let spool = spool.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("s.sqfs");
        File::create(&img).unwrap();
        let summary = write_image(
            &img,
            &tree,
            Some(&spool),
            &WriteOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let data_bytes: u64 = layouts
            .iter()
            .flat_map(|l| &l.2)
            .map(|c| c.1.len() as u64)
            .sum();
        assert!(
            summary.bytes < data_bytes + (64 << 10),
            "{} bytes for {data_bytes} of data",
            summary.bytes
        );

        let fs = ImageFs::open(File::open(&img).unwrap(), 0, 1 << 20, "t").unwrap();
        let reader = Reader::open(File::open(&img).unwrap(), 0).unwrap();
        for (name, size, chunks) in expected {
            let (node, attr) = fs.lookup(ROOT, name.as_bytes()).unwrap().unwrap();
            assert_eq!(attr.size, size, "{name}");
            let want_at = |offset: u64, len: u64| {
                let mut want = vec![0u8; len.min(size - offset) as usize];
                for (at, bytes) in &chunks {
                    for (i, b) in bytes.iter().enumerate() {
                        let pos = at + i as u64;
                        if (offset..offset + want.len() as u64).contains(&pos) {
                            want[(pos - offset) as usize] = *b;
                        }
                    }
                }
                want
            };
            if size < 1 << 20 {
                let mut got = Vec::new();
                fs.read(node, 0, size as usize + 10, &mut got).unwrap();
                assert!(got == want_at(0, size), "{name}: FUSE reader");
                let got = reader.read_file(&format!("/{name}"), 1 << 20).unwrap();
                assert!(got == want_at(0, size), "{name}: Reader");
                // And squashfs-tools, another implementation, where it is.
                if let Ok(out) = std::process::Command::new("unsquashfs")
                    .arg("-cat")
                    .arg(&img)
                    .arg(name)
                    .output()
                {
                    assert!(out.status.success(), "unsquashfs -cat {name}");
                    assert!(out.stdout == want_at(0, size), "{name}: unsquashfs");
                }
            } else {
                for offset in [0, 1 << 20, (64 << 30) - bs - 5, (64 << 30) - 8] {
                    let mut got = Vec::new();
                    fs.read(node, offset, 64, &mut got).unwrap();
                    assert!(got == want_at(offset, 64), "{name} at {offset}");
                }
            }
        }
        let e = reader.stat("/link").unwrap();
        assert_eq!((e.size, e.nlink), (64 << 30, 2));
    }
}
