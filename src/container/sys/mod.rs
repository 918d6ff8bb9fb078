//! The one seam between rfake and the kernel for container set-up.
//!
//! Every mount-namespace operation the launcher performs goes through the
//! [`Sys`] trait, passed in explicitly. [`LinuxSys`] makes the real calls;
//! unit tests pass a recorder and assert the exact sequence of operations
//! without any privilege.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

#[cfg(test)]
pub mod recorder;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// A failed kernel call: the operation, what it was about, and errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysError {
    pub op: &'static str,
    pub subject: Subject,
    pub errno: Errno,
}

/// What a failed call was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A file or directory.
    Path(PathBuf),
    /// Something without a path (a namespace handed over by a keeper, an
    /// fsconfig key), described.
    Named(&'static str),
    /// Nothing but the process itself (`unshare`, `prctl`, `fork`).
    Process,
}

impl SysError {
    /// A call about the file at `path`.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        SysError {
            op,
            subject: Subject::Path(path.into()),
            errno,
        }
    }

    /// A call about something without a path.
    pub fn about(op: &'static str, what: &'static str, errno: Errno) -> Self {
        SysError {
            op,
            subject: Subject::Named(what),
            errno,
        }
    }

    /// A call about the process itself.
    pub fn process(op: &'static str, errno: Errno) -> Self {
        SysError {
            op,
            subject: Subject::Process,
            errno,
        }
    }

    /// The same from a failed `std` call (EIO if it carries no errno).
    pub fn from_io(op: &'static str, path: impl Into<PathBuf>, err: &std::io::Error) -> Self {
        SysError::new(op, path, errno_of(err))
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        match &self.subject {
            Subject::Path(p) => write!(f, " {}", crate::text::shown(p))?,
            Subject::Named(what) => write!(f, " ({what})")?,
            Subject::Process => {}
        }
        // errno's symbolic name once, after its description: "Permission
        // denied (EACCES)".
        write!(f, ": {} ({:?})", self.errno.desc(), self.errno)
    }
}

impl std::error::Error for SysError {}

pub type SysResult<T = ()> = Result<T, SysError>;

/// Mount attributes that may only ever be *added* to a mount (see
/// `mount_setattr(2)`): rfake never clears a flag, so a flag locked by the
/// host (inherited from a more privileged namespace) is never touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttrs {
    pub rdonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
}

impl MountAttrs {
    fn bits(self) -> u64 {
        const RDONLY: u64 = 0x1; // MOUNT_ATTR_RDONLY
        const NOSUID: u64 = 0x2; // MOUNT_ATTR_NOSUID
        const NODEV: u64 = 0x4; // MOUNT_ATTR_NODEV
        let mut bits = 0;
        if self.rdonly {
            bits |= RDONLY;
        }
        if self.nosuid {
            bits |= NOSUID;
        }
        if self.nodev {
            bits |= NODEV;
        }
        bits
    }
}

impl fmt::Display for MountAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.rdonly {
            names.push("ro");
        }
        if self.nosuid {
            names.push("nosuid");
        }
        if self.nodev {
            names.push("nodev");
        }
        write!(f, "{}", names.join(","))
    }
}

/// One parameter for a new filesystem context (`fsconfig(2)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsParam {
    /// A boolean option (`allow_other`).
    Flag(&'static str),
    /// A key with a value (`rootmode=40000`).
    Value(&'static str, String),
}

/// Kernel operations used to build the container's mount tree.
pub trait Sys {
    /// Create a filesystem of `fstype` with `params` and return it as a
    /// *detached* mount (new mount API: fsopen/fsconfig/fsmount), with
    /// `attrs` set; attach it later with [`Sys::move_mount`].
    fn mount_detached(
        &self,
        fstype: &str,
        params: &[FsParam],
        attrs: MountAttrs,
    ) -> SysResult<OwnedFd>;
    /// Attach a detached mount at `target` (`move_mount(2)`).
    fn move_mount(&self, mount: &OwnedFd, target: &Path) -> SysResult;
    /// A detached copy of the mount at `path` (open_tree with
    /// OPEN_TREE_CLONE), to attach elsewhere with [`Sys::move_mount`].
    fn clone_mount(&self, path: &Path) -> Result<OwnedFd, SysError>;
    fn unshare(&self, flags: CloneFlags) -> SysResult;
    /// Enter the namespace `ns` refers to (`setns(2)`); `what` names it in
    /// errors.
    fn setns(&self, ns: BorrowedFd<'_>, kind: CloneFlags, what: &'static str) -> SysResult;
    /// Write `contents` to an existing file (procfs maps, sysctls).
    fn write_file(&self, path: &Path, contents: &str) -> SysResult;
    /// Set the host name of the current UTS namespace.
    fn sethostname(&self, name: &str) -> SysResult;
    /// Bring the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> SysResult;
    /// `mount(2)`: the propagation change, the staging and overlay mounts
    /// and moves of rfake's own places (never a path inside the image).
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> SysResult;
    /// Add `attrs` to the mount at `target` (and all mounts below it when
    /// `recursive`), never clearing anything.
    fn mount_add_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> SysResult;
    fn umount_detach(&self, target: &Path) -> SysResult;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult;
    /// Create (or truncate) a regular file holding `contents`.
    fn create_file(&self, path: &Path, mode: u32, contents: &str) -> SysResult;
    fn chdir(&self, path: &Path) -> SysResult;

    // Operations on descriptors from a confined resolution (crate::container::paths):
    // nothing below is resolved by name again. `what` names the object in
    // errors.

    /// Create the directory `name` in `dir` (`mkdirat(2)`).
    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, what: &Path) -> SysResult;
    /// Create the new empty file `name` in `dir` (`O_CREAT | O_EXCL |
    /// O_NOFOLLOW`).
    fn create_file_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: u32,
        what: &Path,
    ) -> SysResult;
    /// Create the symlink `name` in `dir` pointing at `target`
    /// (`symlinkat(2)`).
    fn symlink_at(
        &self,
        target: &Path,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &Path,
    ) -> SysResult;
    /// A detached copy of the mount tree at `src` (`open_tree(2)` with
    /// `OPEN_TREE_CLONE`, and `AT_RECURSIVE` when `recursive`): a bind
    /// mount not yet attached anywhere.
    fn clone_tree(&self, src: BorrowedFd<'_>, recursive: bool, what: &Path) -> SysResult<OwnedFd>;
    /// Add `attrs` to a (detached) mount, never clearing anything.
    fn add_attrs(
        &self,
        mount: BorrowedFd<'_>,
        attrs: MountAttrs,
        recursive: bool,
        what: &Path,
    ) -> SysResult;
    /// Attach a detached mount onto the object `target` refers to
    /// (`move_mount(2)` with `MOVE_MOUNT_T_EMPTY_PATH`).
    fn attach(&self, mount: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> SysResult;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSys;

fn errno_of(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

impl Sys for LinuxSys {
    fn mount_detached(
        &self,
        fstype: &str,
        params: &[FsParam],
        attrs: MountAttrs,
    ) -> SysResult<OwnedFd> {
        use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
        let what = Path::new(fstype);
        let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| SysError::new("fsopen", what, errno(e)))?;
        for param in params {
            let (key, done) = match param {
                FsParam::Flag(k) => (*k, rustix::mount::fsconfig_set_flag(&fs, *k)),
                FsParam::Value(k, v) => {
                    (*k, rustix::mount::fsconfig_set_string(&fs, *k, v.as_str()))
                }
            };
            done.map_err(|e| SysError::about("fsconfig", key, errno(e)))?;
        }
        rustix::mount::fsconfig_create(&fs)
            .map_err(|e| SysError::new("fsconfig(create)", what, errno(e)))?;
        rustix::mount::fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::from_bits_retain(attrs.bits() as _),
        )
        .map_err(|e| SysError::new("fsmount", what, errno(e)))
    }

    fn move_mount(&self, mount: &OwnedFd, target: &Path) -> SysResult {
        use rustix::mount::MoveMountFlags;
        rustix::mount::move_mount(
            mount,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| SysError::new("move_mount", target, errno(e)))
    }

    fn clone_mount(&self, path: &Path) -> Result<OwnedFd, SysError> {
        use rustix::mount::OpenTreeFlags;
        rustix::mount::open_tree(
            rustix::fs::CWD,
            path,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| SysError::new("open_tree", path, errno(e)))
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult {
        nix::sched::unshare(flags).map_err(|e| SysError::process("unshare", e))
    }

    fn setns(&self, ns: BorrowedFd<'_>, kind: CloneFlags, what: &'static str) -> SysResult {
        nix::sched::setns(ns, kind).map_err(|e| SysError::about("setns", what, e))
    }

    fn sethostname(&self, name: &str) -> SysResult {
        nix::unistd::sethostname(name).map_err(|e| SysError::process("sethostname", e))
    }

    fn loopback_up(&self) -> SysResult {
        // netdevice(7): SIOCGIFFLAGS then SIOCSIFFLAGS with IFF_UP, on any
        // socket of the namespace.
        // SAFETY: plain system calls on a descriptor we own; `req` is a
        // zeroed ifreq with a NUL-terminated name.
        unsafe {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if sock < 0 {
                return Err(SysError::about("socket", "lo", Errno::last()));
            }
            let sock = OwnedFd::from_raw_fd(sock);
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(SysError::about("ioctl(SIOCGIFFLAGS)", "lo", Errno::last()));
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(SysError::about("ioctl(SIOCSIFFLAGS)", "lo", Errno::last()));
            }
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &str) -> SysResult {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| SysError::new("open", path, errno_of(&e)))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| SysError::new("write", path, errno_of(&e)))
    }

    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> SysResult {
        nix::mount::mount(Some(source), target, fstype, flags, data)
            .map_err(|e| SysError::new("mount", target, e))
    }

    fn mount_add_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> SysResult {
        let c_target = CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| SysError::new("mount_setattr", target, Errno::EINVAL))?;
        let flags = libc::AT_SYMLINK_NOFOLLOW | if recursive { libc::AT_RECURSIVE } else { 0 };
        mount_setattr(libc::AT_FDCWD, &c_target, flags, attrs)
            .map_err(|e| SysError::new("mount_setattr", target, e))
    }

    fn umount_detach(&self, target: &Path) -> SysResult {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| SysError::new("umount", target, e))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(|e| SysError::new("pivot_root", new_root, e))
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult {
        fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::new("mkdir", path, errno_of(&e)))
    }

    fn create_file(&self, path: &Path, mode: u32, contents: &str) -> SysResult {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| SysError::new("create", path, errno_of(&e)))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| SysError::new("write", path, errno_of(&e)))
    }

    fn chdir(&self, path: &Path) -> SysResult {
        nix::unistd::chdir(path).map_err(|e| SysError::new("chdir", path, e))
    }

    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, what: &Path) -> SysResult {
        rustix::fs::mkdirat(dir, name, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| SysError::new("mkdir", what, errno(e)))
    }

    fn create_file_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: u32,
        what: &Path,
    ) -> SysResult {
        use rustix::fs::OFlags;
        rustix::fs::openat(
            dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(mode),
        )
        .map(drop)
        .map_err(|e| SysError::new("create", what, errno(e)))
    }

    fn symlink_at(
        &self,
        target: &Path,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &Path,
    ) -> SysResult {
        rustix::fs::symlinkat(target, dir, name)
            .map_err(|e| SysError::new("symlink", what, errno(e)))
    }

    fn clone_tree(&self, src: BorrowedFd<'_>, recursive: bool, what: &Path) -> SysResult<OwnedFd> {
        use rustix::mount::OpenTreeFlags;
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        rustix::mount::open_tree(src, "", flags)
            .map_err(|e| SysError::new("open_tree", what, errno(e)))
    }

    fn add_attrs(
        &self,
        mount: BorrowedFd<'_>,
        attrs: MountAttrs,
        recursive: bool,
        what: &Path,
    ) -> SysResult {
        let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
        mount_setattr(mount.as_raw_fd(), c"", flags, attrs)
            .map_err(|e| SysError::new("mount_setattr", what, e))
    }

    fn attach(&self, mount: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> SysResult {
        use rustix::mount::MoveMountFlags;
        rustix::mount::move_mount(
            mount,
            "",
            target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| SysError::new("move_mount", what, errno(e)))
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// `mount_setattr(2)` adding `attrs` (`attr_set` only: flags inherited
/// from the host are locked, and clearing one would fail with EPERM).
fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    attrs: MountAttrs,
) -> Result<(), Errno> {
    // struct mount_attr from <linux/mount.h>.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attrs.bits(),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid NUL-terminated path and a correctly sized struct that
    // outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}
