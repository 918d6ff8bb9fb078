//! The user namespaces: one-entry maps, no subuid ranges, no setuid helper.
//!
//! An unprivileged process may create a user namespace and write a map of
//! exactly one entry for its own uid and gid, after denying `setgroups(2)`
//! (user_namespaces(7), "Writing "deny" to the /proc/pid/setgroups file").
//!
//! rfake always builds the container as root of an *outer* user namespace
//! (the invoking user mapped to uid 0), created together with the mount
//! namespace so that it owns it: mounting FUSE, overlays and binds needs
//! root there. With `--keep-id` (and by default under MPI launchers, whose
//! PMIx servers refuse a peer claiming uid 0) the payload then runs in an
//! *inner* user namespace mapping the user's own uid back to the outer 0,
//! so inside it is the user, while every file the image has as root is the
//! user's too (as in Charliecloud). Ranks joining one container share both.
//! A process that only chroot-ed could not create the inner namespace
//! (EPERM); after `pivot_root` it can.

use std::fmt;
use std::path::Path;

use nix::sched::CloneFlags;

use crate::container::sys::{Sys, SysError};
use crate::host;

/// Who the payload is inside and who it stays outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub outside_uid: u32,
    pub outside_gid: u32,
    pub inside_uid: u32,
    pub inside_gid: u32,
}

impl Identity {
    /// "fakeroot": the invoking user appears as uid 0 / gid 0 inside.
    pub fn fakeroot(uid: u32, gid: u32) -> Self {
        Identity {
            outside_uid: uid,
            outside_gid: gid,
            inside_uid: 0,
            inside_gid: 0,
        }
    }

    /// `--keep-id`: the invoking user keeps their own uid and gid inside.
    pub fn keep_id(uid: u32, gid: u32) -> Self {
        Identity {
            outside_uid: uid,
            outside_gid: gid,
            inside_uid: uid,
            inside_gid: gid,
        }
    }

    /// The payload needs an inner namespace (it is not root inside).
    pub fn needs_inner(&self) -> bool {
        self.inside_uid != 0 || self.inside_gid != 0
    }

    /// The outer namespace's maps: the user is root there.
    pub fn outer_uid_map(&self) -> String {
        format!("0 {} 1\n", self.outside_uid)
    }

    pub fn outer_gid_map(&self) -> String {
        format!("0 {} 1\n", self.outside_gid)
    }

    /// The inner namespace's maps: the user's ids onto the outer root.
    pub fn inner_uid_map(&self) -> String {
        format!("{} 0 1\n", self.inside_uid)
    }

    pub fn inner_gid_map(&self) -> String {
        format!("{} 0 1\n", self.inside_gid)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uid {} gid {} inside = uid {} gid {} outside",
            self.inside_uid, self.inside_gid, self.outside_uid, self.outside_gid
        )
    }
}

/// The namespaces a launch adds to the user and mount ones (`--pid`,
/// `--ipc`, `--uts`/`--hostname`, `--net --network none`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// A PID namespace: a forked init is its process 1 (see
    /// `crate::launch`), the payload its child.
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    /// The host name set in the new UTS namespace.
    pub hostname: Option<String>,
    /// A network namespace with only the loopback interface, up.
    pub net: bool,
}

impl Isolation {
    /// Any namespace besides the user and mount ones.
    pub fn any(&self) -> bool {
        self.pid || self.ipc || self.uts || self.net
    }

    /// The namespaces made at once by [`isolate`] (the PID namespace is
    /// made separately, just before its init is forked).
    fn flags(&self) -> CloneFlags {
        let mut flags = CloneFlags::empty();
        for (on, flag) in [
            (self.ipc, CloneFlags::CLONE_NEWIPC),
            (self.uts, CloneFlags::CLONE_NEWUTS),
            (self.net, CloneFlags::CLONE_NEWNET),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        if self.pid {
            words.push("pid".to_string());
        }
        if self.ipc {
            words.push("ipc".to_string());
        }
        match (&self.hostname, self.uts) {
            (Some(name), _) => words.push(format!("uts (hostname {name})")),
            (None, true) => words.push("uts".to_string()),
            _ => {}
        }
        if self.net {
            words.push("net (loopback only)".to_string());
        }
        write!(f, "{}", words.join(", "))
    }
}

/// Enter the IPC, UTS and network namespaces `iso` asks for, as root of
/// the outer user namespace (which then owns them), set the host name and
/// bring the loopback interface up.
pub fn isolate(sys: &dyn Sys, iso: &Isolation) -> Result<(), SysError> {
    let flags = iso.flags();
    if flags.is_empty() {
        return Ok(());
    }
    sys.unshare(flags)?;
    if let Some(name) = &iso.hostname {
        sys.sethostname(name)?;
    }
    if iso.net {
        sys.loopback_up()?;
    }
    Ok(())
}

/// Enter a new PID namespace: the next child forked is its process 1.
pub fn unshare_pid(sys: &dyn Sys) -> Result<(), SysError> {
    sys.unshare(CloneFlags::CLONE_NEWPID)
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Unavailable(#[from] host::HostError),
    #[error("cannot map the user into the new namespace: {0}")]
    Map(SysError),
}

/// Create the outer user namespace and the mount namespace, with the user
/// mapped to root.
///
/// `proc_self` is normally `/proc/self` and `proc_sys` `/proc/sys`; both are
/// parameters so the map writing can be tested against a temp dir.
pub fn enter(
    sys: &dyn Sys,
    id: &Identity,
    proc_self: &Path,
    proc_sys: &Path,
) -> Result<(), NamespaceError> {
    unshare_mapped(sys, CloneFlags::empty(), id, proc_self, proc_sys)
}

/// [`enter`], and a PID namespace owned by the new user namespace for the
/// children to come: the caller's next child is its init (pid 1), and
/// every process of the namespace dies when that init ends
/// (pid_namespaces(7)). The caller itself stays in its PID namespace.
pub fn enter_with_pids(
    sys: &dyn Sys,
    id: &Identity,
    proc_self: &Path,
    proc_sys: &Path,
) -> Result<(), NamespaceError> {
    unshare_mapped(sys, CloneFlags::CLONE_NEWPID, id, proc_self, proc_sys)
}

fn unshare_mapped(
    sys: &dyn Sys,
    more: CloneFlags,
    id: &Identity,
    proc_self: &Path,
    proc_sys: &Path,
) -> Result<(), NamespaceError> {
    // Must happen while rfake is single-threaded: unshare(CLONE_NEWUSER)
    // fails with EINVAL in a multi-threaded process. One call: the user
    // namespace is made first and owns the others.
    sys.unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | more)
        .map_err(|e| host::HostError::UserNamespace {
            errno: e.errno,
            advice: host::userns_advice(e.errno, proc_sys),
        })?;
    write_maps(sys, proc_self, &id.outer_uid_map(), &id.outer_gid_map())
}

/// Enter the inner user namespace (after `pivot_root`): the user's own
/// ids, mapped onto the outer root. Maps only the writer's own outer ids,
/// which any process may do for itself.
pub fn enter_inner(sys: &dyn Sys, id: &Identity, proc_self: &Path) -> Result<(), NamespaceError> {
    sys.unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(NamespaceError::Map)?;
    write_maps(sys, proc_self, &id.inner_uid_map(), &id.inner_gid_map())
}

fn write_maps(
    sys: &dyn Sys,
    proc_self: &Path,
    uid_map: &str,
    gid_map: &str,
) -> Result<(), NamespaceError> {
    // "deny" must precede gid_map for an unprivileged writer.
    sys.write_file(&proc_self.join("setgroups"), "deny")
        .map_err(NamespaceError::Map)?;
    sys.write_file(&proc_self.join("uid_map"), uid_map)
        .map_err(NamespaceError::Map)?;
    sys.write_file(&proc_self.join("gid_map"), gid_map)
        .map_err(NamespaceError::Map)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the namespaces asked for, then the host name, then loopback.
    #[test]
    fn isolate_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let rec = crate::container::sys::recorder::Recorder::new(dir.path());
        isolate(&rec, &Isolation::default()).unwrap();
        assert!(rec.take().is_empty());
        let iso = Isolation {
            pid: true,
            ipc: true,
            uts: true,
            hostname: Some("box".into()),
            net: true,
        };
        isolate(&rec, &iso).unwrap();
        assert_eq!(
            rec.take(),
            vec![
                "unshare CloneFlags(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)",
                "sethostname \"box\"",
                "loopback up",
            ]
        );
        assert_eq!(
            iso.to_string(),
            "pid, ipc, uts (hostname box), net (loopback only)"
        );
    }

    #[test]
    fn maps_have_one_entry() {
        let f = Identity::fakeroot(1000, 100);
        assert_eq!(f.outer_uid_map(), "0 1000 1\n");
        assert_eq!(f.outer_gid_map(), "0 100 1\n");
        assert!(!f.needs_inner());
        let k = Identity::keep_id(1000, 100);
        assert_eq!(k.outer_uid_map(), "0 1000 1\n");
        assert!(k.needs_inner());
        assert_eq!(k.inner_uid_map(), "1000 0 1\n");
        assert_eq!(k.inner_gid_map(), "100 0 1\n");
    }

    /// user_namespaces(7): an unprivileged writer must deny setgroups
    /// before writing gid_map; uid_map comes between. The files are under
    /// an injected proc directory.
    #[test]
    fn setgroups_is_denied_before_the_maps_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let rec = crate::container::sys::recorder::Recorder::new(dir.path());
        let proc_self = dir.path().join("self");
        enter(
            &rec,
            &Identity::keep_id(1000, 100),
            &proc_self,
            &dir.path().join("sys"),
        )
        .unwrap();
        enter_inner(&rec, &Identity::keep_id(1000, 100), &proc_self).unwrap();
        assert_eq!(
            rec.take(),
            vec![
                "unshare CloneFlags(CLONE_NEWNS | CLONE_NEWUSER)",
                "write /self/setgroups \"deny\"",
                "write /self/uid_map \"0 1000 1\\n\"",
                "write /self/gid_map \"0 100 1\\n\"",
                "unshare CloneFlags(CLONE_NEWUSER)",
                "write /self/setgroups \"deny\"",
                "write /self/uid_map \"1000 0 1\\n\"",
                "write /self/gid_map \"100 0 1\\n\"",
            ]
        );
    }
}
