//! The libfuse3 session and its low-level callbacks: each turns one FUSE
//! request into a call of the [`Filesystem`] and exactly one reply.

use std::ffi::{CStr, CString, c_char, c_void};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Attr, Dir, Errno, Filesystem, Listed, ffi};

/// How long the kernel may trust an answer: an image never changes while
/// it is mounted, so for as long as it likes (~115 days).
const FOREVER: f64 = 1.0e7;

/// How requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// Worker threads: 1 serves requests one at a time, in the thread that
    /// reads them; more start libfuse's multi-threaded loop, which adds
    /// threads (up to this many) while requests wait.
    pub threads: u32,
}

/// Serve `fs` on the FUSE device `fuse_fd` (already mounted) until the
/// filesystem is unmounted everywhere. Returns libfuse's complaint if the
/// session cannot start, or why libfuse3 cannot be loaded (normally loaded
/// already: see [`ffi::load`]).
pub fn serve(fs: Arc<dyn Filesystem>, fuse_fd: RawFd, config: LoopConfig) -> Result<(), String> {
    // The callbacks call `ffi::lib()`: loaded from here on.
    ffi::load().map_err(|e| e.to_string())?;
    let ops = operations();
    let progname = c"rfake-fuse";
    let mut argv = [progname.as_ptr().cast_mut(), std::ptr::null_mut()];
    let mut args = ffi::fuse_args {
        argc: 1,
        argv: argv.as_mut_ptr(),
        allocated: 0,
    };
    // Freed never: the session lives until the process ends.
    let userdata = Box::into_raw(Box::new(Session {
        fs: Arc::new(Guarded(fs)),
        kernel_opens: AtomicBool::new(false),
    }))
    .cast::<c_void>();
    // SAFETY: `args` and `ops` are valid for the call (libfuse copies the
    // operations); `userdata` outlives the session (it is leaked).
    let se = unsafe {
        ffi::lib().fuse_session_new(
            &mut args,
            &ops,
            std::mem::size_of::<ffi::fuse_lowlevel_ops>(),
            userdata,
        )
    };
    if se.is_null() {
        return Err("libfuse could not create a session".into());
    }
    let mountpoint =
        CString::new(format!("/dev/fd/{fuse_fd}")).map_err(|e| format!("fuse fd: {e}"))?;
    // SAFETY: a live session; with "/dev/fd/N" libfuse only adopts the fd.
    if unsafe { ffi::lib().fuse_session_mount(se, mountpoint.as_ptr()) } != 0 {
        return Err(format!("libfuse did not accept /dev/fd/{fuse_fd}"));
    }
    let ret = if config.threads <= 1 {
        // SAFETY: a live, mounted session.
        unsafe { ffi::lib().fuse_session_loop(se) }
    } else {
        // SAFETY: a fresh configuration object for a live session.
        unsafe {
            let cfg = ffi::lib().fuse_loop_cfg_create();
            if cfg.is_null() {
                return Err("libfuse could not create a loop configuration".into());
            }
            ffi::lib().fuse_loop_cfg_set_max_threads(cfg, config.threads);
            ffi::lib().fuse_loop_cfg_set_idle_threads(cfg, config.threads);
            let ret = ffi::lib().fuse_session_loop_mt(se, cfg);
            ffi::lib().fuse_loop_cfg_destroy(cfg);
            ret
        }
    };
    // The loop ends when the kernel drops the connection (ENODEV: the last
    // mount is gone), which is the normal end here.
    if ret < 0 && ret != -libc::ENODEV {
        return Err(format!(
            "the FUSE loop failed: {}",
            std::io::Error::from_raw_os_error(-ret)
        ));
    }
    Ok(())
}

fn operations() -> ffi::fuse_lowlevel_ops {
    ffi::fuse_lowlevel_ops {
        init: Some(init),
        lookup: Some(lookup),
        forget: Some(forget),
        forget_multi: Some(forget_multi),
        getattr: Some(getattr),
        readlink: Some(readlink),
        open: Some(open),
        read: Some(read),
        release: Some(release),
        opendir: Some(opendir),
        readdir: Some(readdir),
        readdirplus: Some(readdirplus),
        releasedir: Some(releasedir),
        statfs: Some(statfs),
        getxattr: Some(getxattr),
        listxattr: Some(listxattr),
        ..Default::default()
    }
}

/// What the callbacks share.
struct Session {
    fs: Arc<dyn Filesystem>,
    /// Set in `init` when the kernel can open files and directories without
    /// asking: `open` and `opendir` then answer ENOSYS once, and the kernel
    /// stops sending OPEN, RELEASE, OPENDIR and RELEASEDIR (two round trips
    /// per file a payload opens) and caches as if they had answered
    /// `keep_cache` and `cache_readdir`.
    kernel_opens: AtomicBool,
}

/// The file system as the callbacks see it. A panic must not unwind into
/// libfuse's C frames (Rust would abort the server, and every container
/// using the image would lose its files): a panicking call answers EIO,
/// with one log line.
struct Guarded(Arc<dyn Filesystem>);

fn guarded<T>(op: &'static str, fallback: T, call: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        log::error!("image server: {op} panicked; answered EIO");
        fallback
    })
}

impl Filesystem for Guarded {
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Attr)>, Errno> {
        guarded("lookup", Err(libc::EIO), || self.0.lookup(parent, name))
    }
    fn getattr(&self, node: u64) -> Result<Attr, Errno> {
        guarded("getattr", Err(libc::EIO), || self.0.getattr(node))
    }
    fn readlink(&self, node: u64) -> Result<Vec<u8>, Errno> {
        guarded("readlink", Err(libc::EIO), || self.0.readlink(node))
    }
    fn read(&self, node: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<(), Errno> {
        guarded("read", Err(libc::EIO), || {
            self.0.read(node, offset, size, out)
        })
    }
    fn dir(&self, node: u64) -> Result<Arc<Dir>, Errno> {
        guarded("readdir", Err(libc::EIO), || self.0.dir(node))
    }
    fn xattrs(&self, node: u64) -> Result<Vec<super::Xattr>, Errno> {
        guarded("getxattr", Err(libc::EIO), || self.0.xattrs(node))
    }
    fn has_xattrs(&self) -> bool {
        guarded("getxattr", false, || self.0.has_xattrs())
    }
    fn stats(&self) -> super::FsStats {
        guarded("statfs", super::FsStats::default(), || self.0.stats())
    }
}

/// The session `req` came from.
///
/// # Safety
/// `req` is a live request of a session made by [`serve`].
unsafe fn session<'a>(req: ffi::fuse_req_t) -> &'a Session {
    // SAFETY: the userdata is the leaked `Session` `serve` passed in.
    unsafe { &*ffi::lib().fuse_req_userdata(req).cast::<Session>() }
}

/// The filesystem of the session `req` came from.
///
/// # Safety
/// As for [`session`].
unsafe fn fs<'a>(req: ffi::fuse_req_t) -> &'a dyn Filesystem {
    // SAFETY: per the contract.
    unsafe { &*session(req).fs }
}

/// Reply with `errno` (libfuse reports a reply it could not send by its
/// return value; the kernel has then given up on the request already).
unsafe fn reply_err(req: ffi::fuse_req_t, errno: Errno) {
    // SAFETY: a live request, answered once.
    unsafe { ffi::lib().fuse_reply_err(req, errno) };
}

fn stat_of(a: &Attr) -> ffi::stat {
    // SAFETY: plain integers; all-zero is a valid `struct stat`.
    let mut st: ffi::stat = unsafe { std::mem::zeroed() };
    st.st_ino = a.ino;
    st.st_mode = a.mode;
    st.st_nlink = u64::from(a.nlink);
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_size = a.size as i64;
    st.st_blocks = a.size.div_ceil(512) as i64;
    st.st_blksize = 4096;
    st.st_rdev = a.rdev;
    st.st_mtim.tv_sec = a.mtime;
    st.st_atim.tv_sec = a.mtime;
    st.st_ctim.tv_sec = a.mtime;
    st
}

fn entry_of(node: u64, attr: &Attr) -> ffi::fuse_entry_param {
    ffi::fuse_entry_param {
        ino: node,
        generation: 0,
        attr: stat_of(attr),
        attr_timeout: FOREVER,
        entry_timeout: FOREVER,
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn init(userdata: *mut c_void, conn: *mut ffi::fuse_conn_info) {
    // SAFETY: libfuse passes its live connection info and our userdata.
    let (conn, session) = unsafe { (&mut *conn, &*userdata.cast::<Session>()) };
    let no_open = ffi::FUSE_CAP_NO_OPEN_SUPPORT | ffi::FUSE_CAP_NO_OPENDIR_SUPPORT;
    if conn.capable & no_open == no_open {
        conn.want |= no_open;
        session.kernel_opens.store(true, Ordering::Relaxed);
    }
    let wanted = ffi::FUSE_CAP_CACHE_SYMLINKS
        | ffi::FUSE_CAP_READDIRPLUS
        | ffi::FUSE_CAP_PARALLEL_DIROPS
        | ffi::FUSE_CAP_ASYNC_READ;
    conn.want |= wanted & conn.capable;
    // Always readdirplus: a listing is nearly always followed by stats.
    conn.want &= !(ffi::FUSE_CAP_READDIRPLUS_AUTO);
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn lookup(req: ffi::fuse_req_t, parent: u64, name: *const c_char) {
    // SAFETY: a live request and the NUL-terminated name libfuse decoded.
    let (fs, name) = unsafe { (fs(req), CStr::from_ptr(name)) };
    match fs.lookup(parent, name.to_bytes()) {
        Ok(found) => {
            // A miss is a negative entry (node 0) the kernel may cache.
            let e = match found {
                Some((node, attr)) => entry_of(node, &attr),
                None => entry_of(0, &Attr::default()),
            };
            // SAFETY: a live request answered once.
            unsafe { ffi::lib().fuse_reply_entry(req, &e) };
        }
        // SAFETY: as above.
        Err(errno) => unsafe { reply_err(req, errno) },
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn forget(req: ffi::fuse_req_t, _node: u64, _nlookup: u64) {
    // Node IDs are stable; nothing is kept per lookup.
    // SAFETY: a live request; forget is answered with no reply.
    unsafe { ffi::lib().fuse_reply_none(req) };
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn forget_multi(
    req: ffi::fuse_req_t,
    _count: usize,
    _forgets: *mut ffi::fuse_forget_data,
) {
    // SAFETY: as in `forget`.
    unsafe { ffi::lib().fuse_reply_none(req) };
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn getattr(req: ffi::fuse_req_t, node: u64, _fi: *mut ffi::fuse_file_info) {
    // SAFETY: a live request answered once.
    unsafe {
        match fs(req).getattr(node) {
            Ok(attr) => {
                ffi::lib().fuse_reply_attr(req, &stat_of(&attr), FOREVER);
            }
            Err(errno) => reply_err(req, errno),
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn readlink(req: ffi::fuse_req_t, node: u64) {
    // SAFETY: a live request answered once.
    unsafe {
        match fs(req).readlink(node).map(CString::new) {
            Ok(Ok(target)) => {
                ffi::lib().fuse_reply_readlink(req, target.as_ptr());
            }
            Ok(Err(_)) => reply_err(req, libc::EIO),
            Err(errno) => reply_err(req, errno),
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn open(req: ffi::fuse_req_t, _node: u64, fi: *mut ffi::fuse_file_info) {
    // SAFETY: libfuse's file info for this request, answered once.
    unsafe {
        let fi = &mut *fi;
        if fi.flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply_err(req, libc::EROFS);
        }
        if session(req).kernel_opens.load(Ordering::Relaxed) {
            return reply_err(req, libc::ENOSYS);
        }
        // The image does not change: keep the page cache across opens.
        fi.set_keep_cache(1);
        fi.set_noflush(1);
        ffi::lib().fuse_reply_open(req, fi);
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn read(
    req: ffi::fuse_req_t,
    node: u64,
    size: usize,
    offset: i64,
    _fi: *mut ffi::fuse_file_info,
) {
    let mut out = Vec::with_capacity(size);
    // SAFETY: a live request answered once; `out` outlives the reply call.
    unsafe {
        let Ok(offset) = u64::try_from(offset) else {
            return reply_err(req, libc::EINVAL);
        };
        match fs(req).read(node, offset, size, &mut out) {
            Ok(()) => {
                ffi::lib().fuse_reply_buf(req, out.as_ptr().cast(), out.len());
            }
            Err(errno) => reply_err(req, errno),
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn release(req: ffi::fuse_req_t, _node: u64, _fi: *mut ffi::fuse_file_info) {
    // SAFETY: a live request answered once.
    unsafe { reply_err(req, 0) };
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn opendir(req: ffi::fuse_req_t, node: u64, fi: *mut ffi::fuse_file_info) {
    // SAFETY: libfuse's file info for this request, answered once; the
    // handle is a leaked box that `releasedir` (or a failed reply) frees.
    unsafe {
        if session(req).kernel_opens.load(Ordering::Relaxed) {
            return reply_err(req, libc::ENOSYS);
        }
        match fs(req).dir(node) {
            Ok(dir) => {
                let fi = &mut *fi;
                let handle = Box::into_raw(Box::new(dir));
                fi.fh = handle as u64;
                fi.set_cache_readdir(1);
                fi.set_keep_cache(1);
                if ffi::lib().fuse_reply_open(req, fi) != 0 {
                    drop(Box::from_raw(handle));
                }
            }
            Err(errno) => reply_err(req, errno),
        }
    }
}

/// The listing of directory `node`: the one behind its `opendir` handle, or
/// (no handle: the kernel opened it without asking) the filesystem's.
///
/// # Safety
/// `req` is a live request; `fi` is the file info of a directory opened by
/// [`opendir`] and not yet released, or one with no handle (`fh` 0).
unsafe fn dir_of(
    req: ffi::fuse_req_t,
    node: u64,
    fi: *mut ffi::fuse_file_info,
) -> Result<Arc<Dir>, Errno> {
    // SAFETY: per the contract, a non-zero `fh` is our leaked `Box<Arc<Dir>>`.
    unsafe {
        match (*fi).fh {
            0 => fs(req).dir(node),
            fh => Ok(Arc::clone(&*(fh as *const Arc<Dir>))),
        }
    }
}

/// Fill a reply buffer of `size` bytes with the listing from position
/// `offset` on ([`Dir::positions_from`]); `add` appends one position and
/// returns the bytes it needs (more than offered: it did not fit).
fn fill_listing(
    dir: &Dir,
    offset: i64,
    size: usize,
    mut add: impl FnMut(&mut [u8], Listed<'_>) -> usize,
) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    let mut used = 0;
    for listed in dir.positions_from(u64::try_from(offset).unwrap_or(0)) {
        let need = add(&mut buf[used..], listed);
        if need > size - used {
            break;
        }
        used += need;
    }
    buf.truncate(used);
    buf
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn readdir(
    req: ffi::fuse_req_t,
    node: u64,
    size: usize,
    offset: i64,
    fi: *mut ffi::fuse_file_info,
) {
    // SAFETY: `fi` is an open directory of ours; the request is live and
    // answered once.
    unsafe {
        let dir = match dir_of(req, node, fi) {
            Ok(dir) => dir,
            Err(errno) => return reply_err(req, errno),
        };
        let buf = fill_listing(&dir, offset, size, |out, listed| {
            let Ok(cname) = CString::new(listed.name) else {
                return 0;
            };
            let mut st: ffi::stat = std::mem::zeroed();
            st.st_ino = listed.ino;
            st.st_mode = listed.entry.map_or(libc::S_IFDIR, |e| e.kind);
            ffi::lib().fuse_add_direntry(
                req,
                out.as_mut_ptr().cast(),
                out.len(),
                cname.as_ptr(),
                &st,
                listed.next as i64,
            )
        });
        ffi::lib().fuse_reply_buf(req, buf.as_ptr().cast(), buf.len());
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn readdirplus(
    req: ffi::fuse_req_t,
    node: u64,
    size: usize,
    offset: i64,
    fi: *mut ffi::fuse_file_info,
) {
    // SAFETY: as in `readdir`.
    unsafe {
        let dir = match dir_of(req, node, fi) {
            Ok(dir) => dir,
            Err(errno) => return reply_err(req, errno),
        };
        let fs = fs(req);
        let mut failed = None;
        let buf = fill_listing(&dir, offset, size, |out, listed| {
            let Ok(cname) = CString::new(listed.name) else {
                return 0;
            };
            // `.` and `..` carry no entry (node 0: the kernel links none).
            let e = match listed.entry {
                Some(ent) => match fs.getattr(ent.node) {
                    Ok(attr) => entry_of(ent.node, &attr),
                    Err(errno) => {
                        failed = Some(errno);
                        return usize::MAX;
                    }
                },
                None => {
                    let mut e = entry_of(0, &Attr::default());
                    e.attr.st_ino = listed.ino;
                    e.attr.st_mode = libc::S_IFDIR;
                    e
                }
            };
            ffi::lib().fuse_add_direntry_plus(
                req,
                out.as_mut_ptr().cast(),
                out.len(),
                cname.as_ptr(),
                &e,
                listed.next as i64,
            )
        });
        match failed {
            Some(errno) if buf.is_empty() => reply_err(req, errno),
            _ => {
                ffi::lib().fuse_reply_buf(req, buf.as_ptr().cast(), buf.len());
            }
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn releasedir(req: ffi::fuse_req_t, _node: u64, fi: *mut ffi::fuse_file_info) {
    // SAFETY: the handle `opendir` leaked (if any), released exactly once.
    unsafe {
        if (*fi).fh != 0 {
            drop(Box::from_raw((*fi).fh as *mut Arc<Dir>));
        }
        reply_err(req, 0);
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn statfs(req: ffi::fuse_req_t, _node: u64) {
    // SAFETY: a live request answered once; the statvfs is plain integers.
    unsafe {
        let s = fs(req).stats();
        let mut st: ffi::statvfs = std::mem::zeroed();
        st.f_bsize = u64::from(s.block_size);
        st.f_frsize = u64::from(s.block_size);
        st.f_blocks = s.blocks;
        st.f_files = s.files;
        st.f_namemax = 255;
        ffi::lib().fuse_reply_statfs(req, &st);
    }
}

/// Reply to a getxattr/listxattr with `value`: its size when the caller
/// asks for the size (0), ERANGE when it does not fit.
unsafe fn reply_sized(req: ffi::fuse_req_t, size: usize, value: &[u8]) {
    // SAFETY: a live request answered once.
    unsafe {
        if size == 0 {
            ffi::lib().fuse_reply_xattr(req, value.len());
        } else if size < value.len() {
            reply_err(req, libc::ERANGE);
        } else {
            ffi::lib().fuse_reply_buf(req, value.as_ptr().cast(), value.len());
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn getxattr(req: ffi::fuse_req_t, node: u64, name: *const c_char, size: usize) {
    // SAFETY: a live request, the name libfuse decoded; answered once.
    unsafe {
        let name = CStr::from_ptr(name).to_bytes();
        let fs = fs(req);
        if !fs.has_xattrs() {
            // The kernel stops asking (no round trip per exec for
            // security.capability).
            return reply_err(req, libc::ENOSYS);
        }
        match fs.xattrs(node) {
            Ok(all) => match all.iter().find(|(k, _)| k == name) {
                Some((_, v)) => reply_sized(req, size, v),
                None => reply_err(req, libc::ENODATA),
            },
            Err(errno) => reply_err(req, errno),
        }
    }
}

/// # Safety
/// Called by libfuse only, with a live request (or, for `init`, the
/// connection) of a session made by [`serve`]; answers it exactly once.
unsafe extern "C" fn listxattr(req: ffi::fuse_req_t, node: u64, size: usize) {
    // SAFETY: a live request answered once.
    unsafe {
        match fs(req).xattrs(node) {
            Ok(all) => {
                let mut names = Vec::new();
                for (k, _) in &all {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                reply_sized(req, size, &names);
            }
            Err(errno) => reply_err(req, errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panics;
    impl Filesystem for Panics {
        fn lookup(&self, _: u64, _: &[u8]) -> Result<Option<(u64, Attr)>, Errno> {
            panic!("corrupt table")
        }
        fn getattr(&self, _: u64) -> Result<Attr, Errno> {
            panic!("corrupt table")
        }
        fn readlink(&self, _: u64) -> Result<Vec<u8>, Errno> {
            panic!("corrupt table")
        }
        fn read(&self, _: u64, _: u64, _: usize, _: &mut Vec<u8>) -> Result<(), Errno> {
            panic!("corrupt table")
        }
        fn dir(&self, _: u64) -> Result<Arc<Dir>, Errno> {
            panic!("corrupt table")
        }
        fn xattrs(&self, _: u64) -> Result<Vec<crate::fuse::Xattr>, Errno> {
            panic!("corrupt table")
        }
        fn has_xattrs(&self) -> bool {
            panic!("corrupt table")
        }
        fn stats(&self) -> crate::fuse::FsStats {
            panic!("corrupt table")
        }
    }

    /// STYLE.md 15: no panic unwinds into C; the callbacks see EIO.
    #[test]
    fn a_panicking_file_system_answers_eio() {
        let fs = Guarded(Arc::new(Panics));
        assert_eq!(fs.lookup(1, b"x"), Err(libc::EIO));
        assert_eq!(fs.getattr(1), Err(libc::EIO));
        assert_eq!(fs.readlink(1), Err(libc::EIO));
        assert_eq!(fs.read(1, 0, 10, &mut Vec::new()), Err(libc::EIO));
        assert!(matches!(fs.dir(1), Err(libc::EIO)));
        assert_eq!(fs.xattrs(1), Err(libc::EIO));
        assert!(!fs.has_xattrs());
        assert_eq!(fs.stats(), crate::fuse::FsStats::default());
    }
}
