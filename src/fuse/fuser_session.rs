//! The same callbacks as [`super::session`], on the `fuser` crate's session
//! loop instead of libfuse3's: built only with the `fuser-bench` feature,
//! for `benches/fuse-library.sh`, which measures the two against each other.
//!
//! One difference is fuser's, not ours: it reports the node ID as `st_ino`
//! (hard links still share one), where libfuse3 lets the image's inode
//! numbers through.

use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request, SessionACL,
};

use super::{Attr, Dir, Filesystem, LoopConfig};

/// As in `session`: the image never changes while it is mounted.
const FOREVER: Duration = Duration::from_secs(10_000_000);

struct Adapter {
    fs: Arc<dyn Filesystem>,
    kernel_opens: AtomicBool,
}

/// Serve `fs` on the FUSE device `fuse_fd` (already mounted), as
/// [`super::session::serve`] does, with `config.threads` fuser workers.
pub fn serve(fs: Arc<dyn Filesystem>, fuse_fd: RawFd, config: LoopConfig) -> Result<(), String> {
    // SAFETY: the server owns the FUSE descriptor from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fuse_fd) };
    let mut cfg = Config::default();
    cfg.acl = SessionACL::All;
    cfg.n_threads = Some(config.threads.max(1) as usize);
    cfg.clone_fd = config.threads > 1;
    let adapter = Adapter {
        fs,
        kernel_opens: AtomicBool::new(false),
    };
    let session = fuser::Session::from_fd(adapter, fd, SessionACL::All, cfg)
        .map_err(|e| format!("fuser could not start a session: {e}"))?;
    match session.run() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(format!("the fuser loop failed: {e}")),
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn file_attr(node: u64, a: &Attr) -> FileAttr {
    let time = UNIX_EPOCH + Duration::from_secs(a.mtime.max(0) as u64);
    FileAttr {
        ino: INodeNo(node),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: kind_of(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// A negative entry (node 0), which the kernel may cache.
fn negative() -> FileAttr {
    file_attr(0, &Attr::default())
}

impl Adapter {
    fn listing(&self, node: u64) -> Result<Arc<Dir>, Errno> {
        self.fs.dir(node).map_err(errno)
    }

    /// Answer an open (of a file or a directory): ENOSYS when the kernel
    /// can open without asking, else no handle, `keep_cache` and `extra`.
    fn opened(&self, reply: ReplyOpen, extra: FopenFlags) {
        if self.kernel_opens.load(Ordering::Relaxed) {
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | extra);
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let no_open = InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT;
        if config.capabilities().contains(no_open) {
            let _ = config.add_capabilities(no_open);
            self.kernel_opens.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(Some((node, attr))) => reply.entry(&FOREVER, &file_attr(node, &attr), Generation(0)),
            Ok(None) => reply.entry(&FOREVER, &negative(), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&FOREVER, &file_attr(ino.0, &attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.opened(reply, FopenFlags::FOPEN_NOFLUSH);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Nothing to flush; the kernel stops asking.
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut out = Vec::with_capacity(size as usize);
        match self.fs.read(ino.0, offset, size as usize, &mut out) {
            Ok(()) => reply.data(&out),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.opened(reply, FopenFlags::FOPEN_CACHE_DIR);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.listing(ino.0) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        for listed in dir.from_offset(offset) {
            let (node, kind) = match listed.entry {
                Some(e) => (e.node, kind_of(e.kind)),
                None => (listed.ino, FileType::Directory),
            };
            let name = OsStr::from_bytes(listed.name);
            if reply.add(INodeNo(node), listed.next, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.listing(ino.0) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        for listed in dir.from_offset(offset) {
            let name = OsStr::from_bytes(listed.name);
            let (node, attr) = match listed.entry {
                Some(e) => match self.fs.getattr(e.node) {
                    Ok(attr) => (INodeNo(e.node), file_attr(e.node, &attr)),
                    Err(err) => return reply.error(errno(err)),
                },
                // fuser shows the node ID as the inode number, and one of 0
                // would hide the entry: `.` and `..` show the directory's
                // own (the kernel links neither name).
                None => {
                    let mut a = negative();
                    a.ino = ino;
                    a.kind = FileType::Directory;
                    (ino, a)
                }
            };
            if reply.add(node, listed.next, name, &FOREVER, &attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.stats();
        reply.statfs(s.blocks, 0, 0, s.files, 0, s.block_size, 255, s.block_size);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.fs.has_xattrs() {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.xattrs(ino.0) {
            Ok(all) => match all.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, v)) if size == 0 => reply.size(v.len() as u32),
                Some((_, v)) if (size as usize) < v.len() => reply.error(errno(libc::ERANGE)),
                Some((_, v)) => reply.data(v),
                None => reply.error(errno(libc::ENODATA)),
            },
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.xattrs(ino.0) {
            Ok(all) => {
                let mut names = Vec::new();
                for (k, _) in &all {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                if size == 0 {
                    reply.size(names.len() as u32);
                } else if (size as usize) < names.len() {
                    reply.error(errno(libc::ERANGE));
                } else {
                    reply.data(&names);
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }
}
