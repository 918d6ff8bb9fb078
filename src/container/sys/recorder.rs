//! A [`Sys`] for unit tests: records every call; performs directory and
//! file creation for real (inside its base directory) so later steps see
//! them, and only writes mounts down, so tests run without privileges.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{FsParam, LinuxSys, MountAttrs, Sys, SysError, SysResult};

/// Records every call; performs directory and file creation for real (in
/// the temporary layout) so later steps see them. Paths in the record are
/// shown relative to the layout's base directory.
pub struct Recorder {
    base: PathBuf,
    calls: RefCell<Vec<String>>,
}

impl Recorder {
    pub fn new(base: &Path) -> Recorder {
        Recorder {
            base: base.to_path_buf(),
            calls: RefCell::new(Vec::new()),
        }
    }

    fn rel(&self, path: &Path) -> String {
        match path.strip_prefix(&self.base) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }

    /// Where a descriptor points (`/proc/self/fd/N`).
    fn fd_path(&self, fd: BorrowedFd<'_>) -> String {
        match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            Ok(p) => self.rel(&p),
            Err(_) => "<unknown>".to_string(),
        }
    }

    fn push(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }

    /// The calls so far, in order (and forget them).
    pub fn take(&self) -> Vec<String> {
        self.calls.borrow_mut().drain(..).collect()
    }
}

pub fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

impl Sys for Recorder {
    fn mount_detached(
        &self,
        fstype: &str,
        params: &[FsParam],
        attrs: MountAttrs,
    ) -> SysResult<OwnedFd> {
        self.push(format!("fsmount {fstype} {params:?} +{attrs}"));
        Ok(dev_null())
    }
    fn move_mount(&self, _mount: &OwnedFd, target: &Path) -> SysResult {
        self.push(format!("move_mount {}", self.rel(target)));
        Ok(())
    }
    fn clone_mount(&self, path: &Path) -> SysResult<OwnedFd> {
        self.push(format!("clone_mount {}", self.rel(path)));
        Err(SysError::new("open_tree", path, nix::errno::Errno::ENOSYS))
    }
    fn unshare(&self, flags: nix::sched::CloneFlags) -> SysResult {
        self.push(format!("unshare {flags:?}"));
        Ok(())
    }
    fn setns(
        &self,
        _ns: BorrowedFd<'_>,
        kind: nix::sched::CloneFlags,
        what: &'static str,
    ) -> SysResult {
        self.push(format!("setns {kind:?} ({what})"));
        Ok(())
    }
    fn sethostname(&self, name: &str) -> SysResult {
        self.push(format!("sethostname {name:?}"));
        Ok(())
    }
    fn loopback_up(&self) -> SysResult {
        self.push("loopback up".to_string());
        Ok(())
    }
    fn write_file(&self, path: &Path, contents: &str) -> SysResult {
        self.push(format!("write {} {contents:?}", self.rel(path)));
        Ok(())
    }
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> SysResult {
        let data = data.map(|d| {
            self.rel(Path::new(d))
                .replace(&*self.base.to_string_lossy(), "")
        });
        self.push(format!(
            "mount {} {} {fstype:?} {flags:?} {data:?}",
            self.rel(source),
            self.rel(target)
        ));
        Ok(())
    }
    fn mount_add_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> SysResult {
        self.push(format!(
            "setattr {} +{attrs} rec={recursive}",
            self.rel(target)
        ));
        Ok(())
    }
    fn umount_detach(&self, target: &Path) -> SysResult {
        self.push(format!("umount {}", self.rel(target)));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.push(format!(
            "pivot_root {} {}",
            self.rel(new_root),
            self.rel(put_old)
        ));
        Ok(())
    }
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult {
        self.push(format!("mkdir {} {mode:o}", self.rel(path)));
        if path.starts_with(&self.base) {
            LinuxSys.mkdir(path, mode)?;
        }
        Ok(())
    }
    fn create_file(&self, path: &Path, mode: u32, contents: &str) -> SysResult {
        self.push(format!("create {} {mode:o}", self.rel(path)));
        LinuxSys.create_file(path, mode, contents)
    }
    fn chdir(&self, path: &Path) -> SysResult {
        self.push(format!("chdir {}", self.rel(path)));
        Ok(())
    }
    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, what: &Path) -> SysResult {
        self.push(format!(
            "mkdirat {}/{} {mode:o}",
            self.fd_path(dir),
            name.display()
        ));
        LinuxSys.mkdir_at(dir, name, mode, what)
    }
    fn create_file_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: u32,
        what: &Path,
    ) -> SysResult {
        self.push(format!(
            "createat {}/{} {mode:o}",
            self.fd_path(dir),
            name.display()
        ));
        LinuxSys.create_file_at(dir, name, mode, what)
    }
    fn symlink_at(
        &self,
        target: &Path,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &Path,
    ) -> SysResult {
        self.push(format!(
            "symlinkat {}/{} -> {}",
            self.fd_path(dir),
            name.display(),
            target.display()
        ));
        LinuxSys.symlink_at(target, dir, name, what)
    }
    fn clone_tree(&self, src: BorrowedFd<'_>, recursive: bool, _what: &Path) -> SysResult<OwnedFd> {
        self.push(format!("open_tree {} rec={recursive}", self.fd_path(src)));
        Ok(dev_null())
    }
    fn add_attrs(
        &self,
        _mount: BorrowedFd<'_>,
        attrs: MountAttrs,
        recursive: bool,
        _what: &Path,
    ) -> SysResult {
        self.push(format!("setattr <mount> +{attrs} rec={recursive}"));
        Ok(())
    }
    fn attach(&self, _mount: BorrowedFd<'_>, target: BorrowedFd<'_>, _what: &Path) -> SysResult {
        self.push(format!("attach -> {}", self.fd_path(target)));
        Ok(())
    }
}
