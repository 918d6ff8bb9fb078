//! apt's download sandbox under the filter.
//!
//! apt runs its download methods as `_apt`: `setgroups`, `setresgid`,
//! `setresuid`, then it checks that the ids really changed ("Could not
//! switch group"). The filter makes the calls succeed but the ids stay 0,
//! so the check fails. For the step only, rfake puts a configuration file
//! in the tree's `/etc/apt/apt.conf.d` that runs the methods as root
//! (`APT::Sandbox::User "root"`, as Charliecloud does) and removes it
//! afterwards: the image is left as it was.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::container::paths;

const DIR: &str = "/etc/apt/apt.conf.d";
const NAME: &str = "99zz-rfake-fakeroot";
const TEXT: &str = "// Made by rfake for one build step; removed after it.\n\
                    APT::Sandbox::User \"root\";\n";

/// The file while it exists; removed on drop.
pub struct AptSandboxOff {
    dir: OwnedFd,
}

/// Add the file when the tree has apt's configuration directory (resolved
/// inside the tree: no symlink leads out) and not the file already.
pub fn disable_sandbox(root: &Path) -> std::io::Result<Option<AptSandboxOff>> {
    let Ok(root_fd) = paths::open_root(root) else {
        return Ok(None);
    };
    let Ok(walk) = paths::walk(root_fd.as_fd(), Path::new(DIR)) else {
        return Ok(None);
    };
    let Some(dir) = walk.fd() else {
        return Ok(None);
    };
    // The walk's descriptors are O_PATH; one that can be written in.
    let dir = rustix::fs::openat(
        dir,
        ".",
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let file = rustix::fs::openat(
        &dir,
        NAME,
        rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::EXCL
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::WRONLY
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    );
    let file = match file {
        Ok(f) => f,
        Err(rustix::io::Errno::EXIST) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let off = AptSandboxOff { dir };
    std::fs::File::from(file).write_all(TEXT.as_bytes())?;
    Ok(Some(off))
}

impl Drop for AptSandboxOff {
    fn drop(&mut self) {
        if let Err(e) =
            rustix::fs::unlinkat(&self.dir, OsStr::new(NAME), rustix::fs::AtFlags::empty())
        {
            log::warn!("{DIR}/{NAME} left in the build tree: {e}");
        }
    }
}
