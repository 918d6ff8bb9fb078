//! Read-only access to a SquashFS image, possibly at an offset in a file.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::sync::{Mutex, MutexGuard};

use super::file::SqfsFile;
use super::obj::{Malloced, Obj, check};
use super::{EntryInfo, EntryKind, SqfsError, SuperInfo, ffi};

/// Symbolic links followed in one lookup before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

type Inode = Malloced<ffi::sqfs_inode_generic_t>;

/// Read-only access to a SquashFS that starts at `offset` inside `file`
/// (0 for a bare SquashFS; the SIF partition offset otherwise).
///
/// Paths are inside the image: "/" or "" is the root, "." and ".." work,
/// symbolic links are followed inside the image (absolute ones from the
/// image root), never out of it. Calls are serialized internally, so a
/// `Reader` can be shared between threads.
pub struct Reader {
    inner: Mutex<Inner>,
    info: SuperInfo,
}

/// The libsquashfs objects of an open image. Fields drop in declaration
/// order: each reader before the compressor, super block and file it uses.
struct Inner {
    xattrs: Option<Obj<ffi::sqfs_xattr_reader_t>>,
    data: Obj<ffi::sqfs_data_reader_t>,
    dirs: Obj<ffi::sqfs_dir_reader_t>,
    /// The ID table: index → uid/gid.
    ids: Vec<u32>,
    /// Used by the readers above.
    _cmp: Obj<ffi::sqfs_compressor_t>,
    /// Boxed: the directory reader keeps a pointer to it.
    _sb: Box<ffi::sqfs_super_t>,
    file: SqfsFile,
}

// SAFETY: libsquashfs reader objects hold no thread-affine state (no
// thread-locals, no threads of their own); `Reader` only touches them with
// its mutex held, one thread at a time.
unsafe impl Send for Inner {}

fn compression_name(id: u16) -> String {
    // SAFETY: returns a static string or NULL for unknown IDs.
    let name = unsafe { ffi::sqfs_compressor_name_from_id(u32::from(id)) };
    if name.is_null() {
        format!("unknown ({id})")
    } else {
        // SAFETY: a NUL-terminated static string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A decompressor for the image whose super block is `sb` in `fp`, with
/// the image's compressor options read.
pub(super) fn decompressor(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
) -> Result<Obj<ffi::sqfs_compressor_t>, SqfsError> {
    let comp = compression_name(sb.compression_id);
    // SAFETY: plain integers and a union of them; all-zero is valid (and
    // what compressor.h asks for before filling it in).
    let mut cfg: ffi::sqfs_compressor_config_t = unsafe { std::mem::zeroed() };
    let what = || format!("creating the {comp} decompressor");
    // SAFETY: `cfg` is a valid struct to fill in.
    let ret = unsafe {
        ffi::sqfs_compressor_config_init(
            &mut cfg,
            u32::from(sb.compression_id),
            sb.block_size as usize,
            ffi::SQFS_COMP_FLAG_UNCOMPRESS as u16,
        )
    };
    check(ret, what)?;
    let mut cmp = std::ptr::null_mut();
    // SAFETY: `cfg` is initialized; `cmp` receives the new object.
    check(unsafe { ffi::sqfs_compressor_create(&cfg, &mut cmp) }, what)?;
    // SAFETY: a fresh object with one owner.
    let cmp = unsafe { Obj::from_raw(cmp, &what())? };
    if u32::from(sb.flags) & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS != 0 {
        // SAFETY: `read_options` is a method of the live compressor; `fp`
        // is a live file.
        let ret = unsafe {
            let c = cmp.as_ptr();
            match (*c).read_options {
                Some(read_options) => read_options(c, fp),
                None => 0,
            }
        };
        check(ret, || "reading the compressor options".into())?;
    }
    Ok(cmp)
}

/// The file object for the SquashFS at `offset` in `file`, and its super
/// block (boxed: readers keep a pointer to it).
pub(super) fn open_super(
    file: File,
    offset: u64,
) -> Result<(SqfsFile, Box<ffi::sqfs_super_t>), SqfsError> {
    let file = SqfsFile::reader(file, offset).map_err(|source| SqfsError::Io {
        what: format!("opening the SquashFS at offset {offset}"),
        source,
    })?;
    // SAFETY: the super block struct is plain integers; all-zero is valid.
    let mut sb: Box<ffi::sqfs_super_t> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: `sb` is a valid struct to fill in, the file a live one.
    let ret = unsafe { ffi::sqfs_super_read(&mut *sb, file.as_ptr()) };
    check(ret, || {
        format!("reading the super block at offset {offset}")
    })
    .map_err(|e| file.explain(e))?;
    Ok((file, sb))
}

/// A data reader (file blocks and fragments), with the fragment table read.
/// The caller keeps `sb`, `fp` and `cmp` alive for as long as the reader.
pub(super) fn data_reader(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
    cmp: &Obj<ffi::sqfs_compressor_t>,
) -> Result<Obj<ffi::sqfs_data_reader_t>, SqfsError> {
    // SAFETY: constructor and loader calls with live arguments; the result
    // gets one owner.
    unsafe {
        let data = Obj::from_raw(
            ffi::sqfs_data_reader_create(fp, sb.block_size as usize, cmp.as_ptr(), 0),
            "creating the data reader",
        )?;
        let ret = ffi::sqfs_data_reader_load_fragment_table(data.as_ptr(), sb);
        check(ret, || "reading the fragment table".into())?;
        Ok(data)
    }
}

/// The ID table: index → uid/gid.
pub(super) fn read_ids(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
    cmp: &Obj<ffi::sqfs_compressor_t>,
) -> Result<Vec<u32>, SqfsError> {
    // SAFETY: constructor and loader calls with live arguments; the table
    // is dropped before `cmp`; `id` receives a plain integer.
    unsafe {
        let ids = Obj::from_raw(ffi::sqfs_id_table_create(0), "creating the ID table")?;
        let ret = ffi::sqfs_id_table_read(ids.as_ptr(), fp, sb, cmp.as_ptr());
        check(ret, || "reading the ID table".into())?;
        let mut out = Vec::with_capacity(usize::from(sb.id_count));
        for i in 0..sb.id_count {
            let mut id = 0;
            let ret = ffi::sqfs_id_table_index_to_id(ids.as_ptr(), i, &mut id);
            check(ret, || format!("reading ID {i}"))?;
            out.push(id);
        }
        Ok(out)
    }
}

/// An xattr reader with its tables read; `None` if the image has none.
/// The caller keeps `sb`, `fp` and `cmp` alive for as long as the reader.
pub(super) fn xattr_reader(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
    cmp: &Obj<ffi::sqfs_compressor_t>,
) -> Result<Option<Obj<ffi::sqfs_xattr_reader_t>>, SqfsError> {
    if u32::from(sb.flags) & ffi::SQFS_FLAG_NO_XATTRS != 0 || sb.xattr_id_table_start == u64::MAX {
        return Ok(None);
    }
    // SAFETY: constructor and loader calls with live arguments; the result
    // gets one owner.
    unsafe {
        let xr = Obj::from_raw(
            ffi::sqfs_xattr_reader_create(0),
            "creating the xattr reader",
        )?;
        let ret = ffi::sqfs_xattr_reader_load(xr.as_ptr(), sb, fp, cmp.as_ptr());
        check(ret, || "reading the xattr tables".into())?;
        Ok(Some(xr))
    }
}

impl Reader {
    /// Open the SquashFS at `offset` in `file`: read the super block, the
    /// compressor options, the ID, fragment and xattr tables.
    pub fn open(file: File, offset: u64) -> Result<Reader, SqfsError> {
        let (file, sb) = open_super(file, offset)?;
        let fp = file.as_ptr();
        let with_io = |e: SqfsError| file.explain(e);
        let comp = compression_name(sb.compression_id);
        let cmp = decompressor(&sb, fp).map_err(with_io)?;

        let ids = read_ids(&sb, fp, &cmp).map_err(with_io)?;
        // SAFETY: a constructor call with live arguments that outlive the
        // result (field order of `Inner`); the result gets one owner.
        let dirs = unsafe {
            Obj::from_raw(
                ffi::sqfs_dir_reader_create(&*sb, cmp.as_ptr(), fp, 0),
                "creating the directory reader",
            )?
        };
        let data = data_reader(&sb, fp, &cmp).map_err(with_io)?;
        let xattrs = xattr_reader(&sb, fp, &cmp).map_err(with_io)?;
        let info = SuperInfo {
            compression: comp,
            block_size: sb.block_size,
            inode_count: sb.inode_count,
            bytes_used: sb.bytes_used,
            mtime: sb.modification_time,
            flags: sb.flags,
            fragment_count: sb.fragment_entry_count,
            id_count: sb.id_count,
        };
        Ok(Reader {
            inner: Mutex::new(Inner {
                xattrs,
                data,
                dirs,
                ids,
                _cmp: cmp,
                _sb: sb,
                file,
            }),
            info,
        })
    }

    /// Facts from the super block.
    pub fn info(&self) -> SuperInfo {
        self.info.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry at `path`; a symlink as the last component is not followed.
    pub fn stat(&self, path: &str) -> Result<EntryInfo, SqfsError> {
        let mut inner = self.lock();
        inner.run(|inner| {
            let (name, inode, shown) = inner.resolve(path, false)?;
            inner.entry_info(name, &inode, &shown)
        })
    }

    /// The entries of directory `dir` (following symlinks), sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<EntryInfo>, SqfsError> {
        let mut inner = self.lock();
        inner.run(|inner| {
            let (_, inode, shown) = inner.resolve(dir, true)?;
            let entries = inner.entries(&inode, &shown)?;
            let mut out = Vec::with_capacity(entries.len());
            for (name, child) in entries {
                let child_path = join(&shown, &name);
                out.push(inner.entry_info(name, &child, &child_path)?);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    /// Call `f` for everything below directory `dir` (following symlinks
    /// for `dir` itself, not below), parents before children, in name
    /// order. Paths are absolute in the image ("/etc/passwd").
    pub fn walk(&self, dir: &str, f: &mut dyn FnMut(&str, &EntryInfo)) -> Result<(), SqfsError> {
        let mut inner = self.lock();
        inner.run(|inner| {
            let (_, inode, shown) = inner.resolve(dir, true)?;
            inner.walk(&inode, &shown, f)
        })
    }

    /// The contents of the regular file at `path`, following symlinks
    /// inside the image; fails if it is bigger than `max` bytes.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, SqfsError> {
        let mut inner = self.lock();
        inner.run(|inner| {
            let (_, inode, shown) = inner.resolve(path, true)?;
            inner.read_all(&inode, &shown, max)
        })
    }
}

/// "/a" + "b" = "/a/b".
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn kind_of(inode: &ffi::sqfs_inode_generic_t) -> Option<EntryKind> {
    Some(match u32::from(inode.base.type_) {
        ffi::SQFS_INODE_DIR | ffi::SQFS_INODE_EXT_DIR => EntryKind::Dir,
        ffi::SQFS_INODE_FILE | ffi::SQFS_INODE_EXT_FILE => EntryKind::File,
        ffi::SQFS_INODE_SLINK | ffi::SQFS_INODE_EXT_SLINK => EntryKind::Symlink,
        ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_EXT_BDEV => EntryKind::BlockDev,
        ffi::SQFS_INODE_CDEV | ffi::SQFS_INODE_EXT_CDEV => EntryKind::CharDev,
        ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_EXT_FIFO => EntryKind::Fifo,
        ffi::SQFS_INODE_SOCKET | ffi::SQFS_INODE_EXT_SOCKET => EntryKind::Socket,
        _ => return None,
    })
}

/// The target of a symlink inode (raw bytes).
pub(super) fn symlink_target(inode: &ffi::sqfs_inode_generic_t) -> &[u8] {
    // SAFETY: for symlink inodes, `slink` and `slink_ext` share their
    // first fields, and the target (`target_size` bytes, checked against
    // the payload size) follows the struct in `extra` (inode.h).
    unsafe {
        let len = (inode.data.slink.target_size as usize).min(inode.payload_bytes_used as usize);
        std::slice::from_raw_parts(inode.extra.as_ptr().cast::<u8>(), len)
    }
}

/// The extended attributes of `inode` (full names, in stored order),
/// through the xattr reader `xr` (`None`: the image has none).
pub(super) fn read_xattrs(
    xr: Option<*mut ffi::sqfs_xattr_reader_t>,
    inode: &ffi::sqfs_inode_generic_t,
    what: &dyn Fn() -> String,
) -> Result<Vec<(String, Vec<u8>)>, SqfsError> {
    let mut index = u32::MAX;
    // SAFETY: a complete inode; `index` receives its xattr index.
    let ret = unsafe { ffi::sqfs_inode_get_xattr_index(inode, &mut index) };
    check(ret, what)?;
    let Some(xr) = xr else {
        return Ok(Vec::new());
    };
    if index == u32::MAX {
        return Ok(Vec::new());
    }
    let mut desc = ffi::sqfs_xattr_id_t {
        xattr: 0,
        count: 0,
        size: 0,
    };
    // SAFETY: live xattr reader; `desc` receives the descriptor.
    unsafe {
        check(ffi::sqfs_xattr_reader_get_desc(xr, index, &mut desc), what)?;
        check(ffi::sqfs_xattr_reader_seek_kv(xr, &desc), what)?;
    }
    let mut out = Vec::with_capacity(desc.count as usize);
    for _ in 0..desc.count {
        let mut key = std::ptr::null_mut();
        // SAFETY: the reader is positioned on a key; `key` receives a
        // fresh entry that we free.
        let ret = unsafe { ffi::sqfs_xattr_reader_read_key(xr, &mut key) };
        check(ret, what)?;
        // SAFETY: on success `key` is ours.
        let Some(key) = (unsafe { Malloced::from_raw(key) }) else {
            break;
        };
        let mut value = std::ptr::null_mut();
        // SAFETY: the value follows the key just read; `value` receives
        // a fresh value that we free.
        let ret = unsafe { ffi::sqfs_xattr_reader_read_value(xr, key.as_ptr(), &mut value) };
        check(ret, what)?;
        // SAFETY: on success `value` is ours.
        let Some(value) = (unsafe { Malloced::from_raw(value) }) else {
            break;
        };
        // SAFETY: the decoded key is the full name ("user.foo", the
        // prefix put back; `size` still counts only the suffix),
        // NUL-terminated; the value has `size` bytes after its header.
        let (k, v) = unsafe {
            (
                CStr::from_ptr(key.key.as_ptr().cast()),
                std::slice::from_raw_parts(value.value.as_ptr(), value.size as usize),
            )
        };
        out.push((k.to_string_lossy().into_owned(), v.to_vec()));
    }
    Ok(out)
}

/// The link count and the size `stat` shows of an inode.
pub(super) fn nlink_and_size(inode: &ffi::sqfs_inode_generic_t) -> (u32, u64) {
    let d = &inode.data;
    // SAFETY: each arm reads the union member that the inode type
    // selects (inode.h).
    unsafe {
        match u32::from(inode.base.type_) {
            ffi::SQFS_INODE_DIR => (d.dir.nlink, u64::from(d.dir.size)),
            ffi::SQFS_INODE_EXT_DIR => (d.dir_ext.nlink, u64::from(d.dir_ext.size)),
            ffi::SQFS_INODE_FILE => (1, u64::from(d.file.file_size)),
            ffi::SQFS_INODE_EXT_FILE => (d.file_ext.nlink, d.file_ext.file_size),
            ffi::SQFS_INODE_SLINK => (d.slink.nlink, u64::from(d.slink.target_size)),
            ffi::SQFS_INODE_EXT_SLINK => (d.slink_ext.nlink, u64::from(d.slink_ext.target_size)),
            ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_CDEV => (d.dev.nlink, 0),
            ffi::SQFS_INODE_EXT_BDEV | ffi::SQFS_INODE_EXT_CDEV => (d.dev_ext.nlink, 0),
            ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_SOCKET => (d.ipc.nlink, 0),
            _ => (d.ipc_ext.nlink, 0),
        }
    }
}

impl Inner {
    /// Run `f`, adding the file's I/O error to a failed library call.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Inner) -> Result<T, SqfsError>,
    ) -> Result<T, SqfsError> {
        f(self).map_err(|e| self.file.explain(e))
    }

    fn root(&mut self) -> Result<Inode, SqfsError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: live directory reader; `out` receives a fresh inode.
        let ret = unsafe { ffi::sqfs_dir_reader_get_root_inode(self.dirs.as_ptr(), &mut out) };
        check(ret, || "reading the root inode".into())?;
        // SAFETY: on success `out` is ours to free.
        Ok(unsafe { Malloced::from_raw(out) }.expect("libsquashfs returned a NULL root inode"))
    }

    fn open_dir(&mut self, dir: &Inode, shown: &str) -> Result<(), SqfsError> {
        if kind_of(dir) != Some(EntryKind::Dir) {
            return Err(SqfsError::NotDir { path: shown.into() });
        }
        // SAFETY: live reader and a directory inode.
        let ret = unsafe { ffi::sqfs_dir_reader_open_dir(self.dirs.as_ptr(), dir.as_ptr(), 0) };
        check(ret, || format!("opening the directory {shown}"))?;
        Ok(())
    }

    /// The inode of the entry `name` in directory `dir`; None if absent.
    fn lookup(&mut self, dir: &Inode, name: &str, shown: &str) -> Result<Option<Inode>, SqfsError> {
        self.open_dir(dir, shown)?;
        let Ok(cname) = CString::new(name) else {
            return Ok(None);
        };
        let rd = self.dirs.as_ptr();
        let child = join(shown, name);
        // SAFETY: `rd` is open on `dir`; `cname` is a C string.
        let ret = unsafe { ffi::sqfs_dir_reader_find(rd, cname.as_ptr()) };
        if ret == ffi::SQFS_ERROR_NO_ENTRY {
            return Ok(None);
        }
        check(ret, || format!("looking up {child}"))?;
        let mut out = std::ptr::null_mut();
        // SAFETY: `find` leaves the reader on the entry it found.
        let ret = unsafe { ffi::sqfs_dir_reader_get_inode(rd, &mut out) };
        check(ret, || format!("reading the inode of {child}"))?;
        // SAFETY: on success `out` is ours to free.
        Ok(unsafe { Malloced::from_raw(out) })
    }

    /// Resolve `path` to (name, inode, normalized path).
    fn resolve(
        &mut self,
        path: &str,
        follow_last: bool,
    ) -> Result<(String, Inode, String), SqfsError> {
        let root = self.root()?;
        // The directories walked into, with their names; empty = root.
        let mut stack: Vec<(String, Inode)> = Vec::new();
        let mut pending: VecDeque<String> = components(path).collect();
        let mut links = 0;
        let shown = |stack: &[(String, Inode)]| {
            let mut s = String::new();
            for (name, _) in stack {
                s.push('/');
                s.push_str(name);
            }
            if s.is_empty() { "/".to_owned() } else { s }
        };
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                stack.pop();
                continue;
            }
            let here = shown(&stack);
            let dir = stack.last().map_or(&root, |(_, i)| i);
            let Some(inode) = self.lookup(dir, &name, &here)? else {
                return Err(SqfsError::NotFound {
                    path: join(&here, &name),
                });
            };
            let last = pending.is_empty();
            if kind_of(&inode) == Some(EntryKind::Symlink) && (follow_last || !last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(SqfsError::SymlinkLoop { path: path.into() });
                }
                let target = String::from_utf8_lossy(symlink_target(&inode)).into_owned();
                if target.starts_with('/') {
                    stack.clear();
                }
                for (i, c) in components(&target).enumerate() {
                    pending.insert(i, c);
                }
                continue;
            }
            stack.push((name, inode));
        }
        let shown = shown(&stack);
        Ok(match stack.pop() {
            Some((name, inode)) => (name, inode, shown),
            None => ("/".to_owned(), root, shown),
        })
    }

    /// The entries of a directory with their inodes, in stored order.
    fn entries(&mut self, dir: &Inode, shown: &str) -> Result<Vec<(String, Inode)>, SqfsError> {
        self.open_dir(dir, shown)?;
        let rd = self.dirs.as_ptr();
        let mut out = Vec::new();
        loop {
            let mut ent = std::ptr::null_mut();
            // SAFETY: `rd` is open on `dir`; `ent` receives a fresh entry.
            let ret = unsafe { ffi::sqfs_dir_reader_read(rd, &mut ent) };
            if check(ret, || format!("reading the directory {shown}"))? > 0 {
                break;
            }
            // SAFETY: on success `ent` is ours to free.
            let Some(ent) = (unsafe { Malloced::from_raw(ent) }) else {
                break;
            };
            // SAFETY: a decoded entry's name is NUL-terminated.
            let name = unsafe { CStr::from_ptr(ent.name.as_ptr().cast()) }
                .to_string_lossy()
                .into_owned();
            let mut inode = std::ptr::null_mut();
            // SAFETY: the reader is positioned on the entry just read.
            let ret = unsafe { ffi::sqfs_dir_reader_get_inode(rd, &mut inode) };
            check(ret, || {
                format!("reading the inode of {}", join(shown, &name))
            })?;
            // SAFETY: on success `inode` is ours to free.
            if let Some(inode) = unsafe { Malloced::from_raw(inode) } {
                out.push((name, inode));
            }
        }
        Ok(out)
    }

    fn walk(
        &mut self,
        dir: &Inode,
        shown: &str,
        f: &mut dyn FnMut(&str, &EntryInfo),
    ) -> Result<(), SqfsError> {
        for (name, inode) in self.entries(dir, shown)? {
            let path = join(shown, &name);
            let info = self.entry_info(name, &inode, &path)?;
            f(&path, &info);
            if info.kind == EntryKind::Dir {
                self.walk(&inode, &path, f)?;
            }
        }
        Ok(())
    }

    fn id(&self, index: u16, shown: &str) -> Result<u32, SqfsError> {
        self.ids
            .get(usize::from(index))
            .copied()
            .ok_or_else(|| SqfsError::Lib {
                what: format!("looking up the owner of {shown}"),
                code: ffi::SQFS_ERROR_OUT_OF_BOUNDS,
                detail: None,
            })
    }

    fn entry_info(
        &mut self,
        name: String,
        inode: &Inode,
        shown: &str,
    ) -> Result<EntryInfo, SqfsError> {
        let kind = kind_of(inode).ok_or_else(|| SqfsError::Lib {
            what: format!("reading the inode of {shown}"),
            code: ffi::SQFS_ERROR_CORRUPTED,
            detail: Some(format!("unknown inode type {}", inode.base.type_)),
        })?;
        let (nlink, size) = nlink_and_size(inode);
        let symlink_target = (kind == EntryKind::Symlink)
            .then(|| String::from_utf8_lossy(symlink_target(inode)).into_owned());
        Ok(EntryInfo {
            name,
            kind,
            mode: inode.base.mode & 0o7777,
            uid: self.id(inode.base.uid_idx, shown)?,
            gid: self.id(inode.base.gid_idx, shown)?,
            size,
            mtime: inode.base.mod_time,
            nlink,
            inode: inode.base.inode_number,
            symlink_target,
            xattrs: self.xattrs(inode, shown)?,
        })
    }

    fn xattrs(&mut self, inode: &Inode, shown: &str) -> Result<Vec<(String, Vec<u8>)>, SqfsError> {
        let xr = self.xattrs.as_ref().map(|x| x.as_ptr());
        read_xattrs(xr, inode, &|| format!("reading the xattrs of {shown}"))
    }

    fn read_all(&mut self, inode: &Inode, shown: &str, max: u64) -> Result<Vec<u8>, SqfsError> {
        if kind_of(inode) != Some(EntryKind::File) {
            return Err(SqfsError::NotFile { path: shown.into() });
        }
        let mut size = 0;
        // SAFETY: a file inode; `size` receives its size.
        let ret = unsafe { ffi::sqfs_inode_get_file_size(inode.as_ptr(), &mut size) };
        check(ret, || format!("reading the inode of {shown}"))?;
        if size > max {
            return Err(SqfsError::TooLarge {
                path: shown.into(),
                size,
                max,
            });
        }
        let mut out = vec![0u8; size as usize];
        let mut done = 0usize;
        while done < out.len() {
            let chunk = (out.len() - done).min(1 << 30) as u32;
            // SAFETY: `out[done..]` has at least `chunk` writable bytes.
            let ret = unsafe {
                ffi::sqfs_data_reader_read(
                    self.data.as_ptr(),
                    inode.as_ptr(),
                    done as u64,
                    out.as_mut_ptr().add(done).cast(),
                    chunk,
                )
            };
            let n = check(ret, || format!("reading the data of {shown}"))?;
            if n == 0 {
                return Err(SqfsError::Lib {
                    what: format!("reading the data of {shown}"),
                    code: ffi::SQFS_ERROR_CORRUPTED,
                    detail: Some(format!("the data ends after {done} of {size} bytes")),
                });
            }
            done += n as usize;
        }
        Ok(out)
    }
}

/// The names in a path inside the image, "." and empty parts dropped.
fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
}
