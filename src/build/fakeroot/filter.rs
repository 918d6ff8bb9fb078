//! The seccomp filter that makes a package manager's calls for ids outside
//! the one-entry map succeed without doing anything (as Charliecloud's
//! `ch-image --force=seccomp`).
//!
//! In a user namespace that maps only the invoking user (to 0), the kernel
//! refuses what a package manager does as root for other ids: `chown` to
//! `_apt` or `messagebus` (EINVAL: the id has no mapping), dropping to such
//! an id with `setresuid` (EINVAL), `setgroups` (EPERM: denied before the
//! gid map could be written, user_namespaces(7)), `mknod` of a device
//! (EPERM). The filter answers those calls with `SECCOMP_RET_ERRNO | 0`: the
//! call returns 0 and the kernel does nothing. Calls that only name ids the
//! map has (0, or -1 for "unchanged") still reach the kernel, so their real
//! errors (ENOENT, EBADF) stay visible; everything else is allowed.
//!
//! What was measured (strace -f on `apt-get update && apt-get install -y
//! openssh-server dbus` in a Debian 12 root, one-entry map, no filter):
//! - apt's download sandbox: `setgroups` (EPERM), `setresgid`/`setresuid`
//!   to `_apt` (EINVAL), `chown` of `lists/partial` to `_apt` (EINVAL);
//! - dpkg maintainer scripts: `fchownat` (systemd-tmpfiles, systemd-sysusers
//!   on `/var/log/journal`, `/run/systemd/netif`), `chown` from
//!   dpkg-statoverride (`dbus-daemon-launch-helper` to group messagebus:
//!   fatal, dbus fails to configure), `chown` of apt's `term.log` to adm.
//! - not faked: `setxattr(system.posix_acl_access)` with a named group
//!   outside the map (EINVAL; systemd-tmpfiles warns and goes on, and a
//!   filter cannot look at the attribute's name), `prlimit64` raising the
//!   hard NOFILE limit and `setsockopt(SO_RCVBUFFORCE)` (EPERM: not about
//!   ids, callers fall back). No `capset` or `kill` failed.
//!
//! The 32-bit calls (`chown32`, `setresuid32`...) exist only in the i386
//! ABI, which this filter (built for the native architecture) does not
//! cover: a foreign-ABI call is allowed unchanged, so it fails as it would
//! without the filter instead of killing the process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// When a faked call is faked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (`setgroups`: denied in the namespace whatever it asks).
    Always,
    /// When one of these arguments is an id other than 0 and -1.
    IdArgs(&'static [u8]),
    /// When the mode argument at this index makes a character or block
    /// device.
    DeviceMode(u8),
}

/// One faked call: its name (for the docs and the tests), number, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faked {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub when: When,
}

const fn faked(name: &'static str, nr: libc::c_long, when: When) -> Faked {
    Faked { name, nr, when }
}

/// The faked calls of the native ABI.
pub fn faked_calls() -> Vec<Faked> {
    use When::{Always, DeviceMode, IdArgs};
    let mut calls = vec![
        // chown(path, uid, gid) and friends; fchownat(dirfd, path, uid, gid, flags).
        faked("fchown", libc::SYS_fchown, IdArgs(&[1, 2])),
        faked("fchownat", libc::SYS_fchownat, IdArgs(&[2, 3])),
        faked("setuid", libc::SYS_setuid, IdArgs(&[0])),
        faked("setgid", libc::SYS_setgid, IdArgs(&[0])),
        faked("setreuid", libc::SYS_setreuid, IdArgs(&[0, 1])),
        faked("setregid", libc::SYS_setregid, IdArgs(&[0, 1])),
        faked("setresuid", libc::SYS_setresuid, IdArgs(&[0, 1, 2])),
        faked("setresgid", libc::SYS_setresgid, IdArgs(&[0, 1, 2])),
        // setfsuid never fails (it returns the previous id, 0 here).
        faked("setfsuid", libc::SYS_setfsuid, IdArgs(&[0])),
        faked("setfsgid", libc::SYS_setfsgid, IdArgs(&[0])),
        faked("setgroups", libc::SYS_setgroups, Always),
        // mknodat(dirfd, path, mode, dev).
        faked("mknodat", libc::SYS_mknodat, DeviceMode(2)),
    ];
    // The legacy calls newer ABIs (aarch64, riscv64) do not have.
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        faked("chown", libc::SYS_chown, IdArgs(&[1, 2])),
        faked("lchown", libc::SYS_lchown, IdArgs(&[1, 2])),
        faked("mknod", libc::SYS_mknod, DeviceMode(1)),
    ]);
    calls
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("the fakeroot seccomp filter is not available on {0}")]
    Arch(&'static str),
    #[error("cannot build the fakeroot seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
}

/// A 32-bit argument compared to `value`.
fn arg(index: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
        .expect("argument indices below 6 are valid")
}

/// The rules (any one matching fakes the call) for `when`.
fn rules(when: When) -> Vec<SeccompRule> {
    let rule = |conds| SeccompRule::new(conds).expect("a rule with conditions");
    match when {
        // An empty rule list matches the call whatever its arguments.
        When::Always => vec![],
        When::IdArgs(args) => args
            .iter()
            .map(|&i| {
                rule(vec![
                    arg(i, SeccompCmpOp::Ne, 0),
                    arg(i, SeccompCmpOp::Ne, u64::from(u32::MAX)),
                ])
            })
            .collect(),
        When::DeviceMode(i) => [libc::S_IFCHR, libc::S_IFBLK]
            .into_iter()
            .map(|kind| {
                rule(vec![arg(
                    i,
                    SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                    u64::from(kind),
                )])
            })
            .collect(),
    }
}

/// The filter as a BPF program for this machine's architecture.
pub fn program() -> Result<BpfProgram, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| FilterError::Arch(std::env::consts::ARCH))?;
    let map: BTreeMap<i64, Vec<SeccompRule>> = faked_calls()
        .into_iter()
        .map(|f| (f.nr, rules(f.when)))
        .collect();
    let filter = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        // errno 0: the call "succeeds".
        SeccompAction::Errno(0),
        arch,
    )?;
    let mut prog: BpfProgram = filter.try_into()?;
    allow_foreign_arch(&mut prog)?;
    Ok(prog)
}

/// seccompiler starts the program with an architecture check that kills
/// the process on a foreign ABI (an i386 program on x86_64); this filter
/// only ever *fakes* calls, so such a call is allowed instead and fails as
/// it would without the filter.
fn allow_foreign_arch(prog: &mut BpfProgram) -> Result<(), FilterError> {
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    match prog.get_mut(2) {
        Some(ins) if ins.code == BPF_RET_K && ins.k == libc::SECCOMP_RET_KILL_PROCESS => {
            ins.k = libc::SECCOMP_RET_ALLOW;
            Ok(())
        }
        _ => Err(FilterError::Arch(
            "this seccompiler version (unexpected architecture check)",
        )),
    }
}

/// Install `prog` on the calling thread (after `PR_SET_NO_NEW_PRIVS`,
/// which seccompiler sets first). Called in the child just before exec.
pub fn install(prog: &BpfProgram) -> std::io::Result<()> {
    seccompiler::apply_filter(prog).map_err(|e| match e {
        seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => io,
        other => std::io::Error::other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_program_builds_and_allows_foreign_abis() {
        let prog = program().unwrap();
        assert_eq!(prog[2].k, libc::SECCOMP_RET_ALLOW);
        let names: Vec<&str> = faked_calls().iter().map(|f| f.name).collect();
        for name in ["fchownat", "setresuid", "setgroups", "mknodat"] {
            assert!(names.contains(&name), "{name}");
        }
    }

    /// In a forked child with the filter: a chown to an id nobody has
    /// "succeeds" and changes nothing; setgroups succeeds; a character
    /// device is "made" and is not there; a chown to the owner's own ids
    /// still reaches the kernel (ENOENT for a missing file).
    #[test]
    fn faked_calls_succeed_and_do_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let before = std::fs::metadata(&file).unwrap();
        let prog = program().unwrap();
        let c_file = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        let c_dev =
            std::ffi::CString::new(dir.path().join("dev").into_os_string().into_vec()).unwrap();
        let c_missing =
            std::ffi::CString::new(dir.path().join("missing").into_os_string().into_vec()).unwrap();
        use std::os::unix::ffi::OsStringExt;
        // SAFETY: the child makes only system calls and exits with _exit.
        match unsafe { libc::fork() } {
            // SAFETY: valid NUL-terminated paths and a live groups array.
            0 => unsafe {
                let mut code = 0;
                if install(&prog).is_err() {
                    code |= 1;
                }
                if libc::chown(c_file.as_ptr(), 54321, 54321) != 0 {
                    code |= 2;
                }
                let groups = [54321 as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) != 0 {
                    code |= 4;
                }
                if libc::mknod(c_dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) != 0 {
                    code |= 8;
                }
                if libc::chown(c_missing.as_ptr(), u32::MAX, u32::MAX) == 0 {
                    code |= 16;
                }
                libc::_exit(code);
            },
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "status {status:#x}");
                assert_eq!(libc::WEXITSTATUS(status), 0, "failed checks (bits)");
            }
        }
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert!(!dir.path().join("dev").exists());
    }
}
