//! The user namespace: a one-entry map, no subuid ranges, no setuid helper.
//!
//! An unprivileged process may create a user namespace and write a map of
//! exactly one entry for its own uid and gid, after denying `setgroups(2)`
//! (user_namespaces(7), "Writing "deny" to the /proc/pid/setgroups file").
//! The mount namespace is created in the same `unshare(2)` call, so it is
//! owned by the new user namespace and rfake may mount in it.

use std::fmt;
use std::path::Path;

use nix::sched::CloneFlags;

use crate::host;
use crate::sys::{Sys, SysError};

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

    pub fn uid_map(&self) -> String {
        format!("{} {} 1\n", self.inside_uid, self.outside_uid)
    }

    pub fn gid_map(&self) -> String {
        format!("{} {} 1\n", self.inside_gid, self.outside_gid)
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

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Unavailable(#[from] host::HostError),
    #[error("cannot map the user into the new namespace: {0}")]
    Map(SysError),
}

/// Create the user and mount namespaces and map `id` into them.
///
/// `proc_self` is normally `/proc/self` and `proc_sys` `/proc/sys`; both are
/// parameters so the map writing can be tested against a temp dir.
pub fn enter(
    sys: &dyn Sys,
    id: &Identity,
    proc_self: &Path,
    proc_sys: &Path,
) -> Result<(), NamespaceError> {
    // Must happen while rfake is single-threaded: unshare(CLONE_NEWUSER)
    // fails with EINVAL in a multi-threaded process.
    sys.unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| host::HostError::UserNamespace {
            errno: e.errno,
            advice: host::userns_advice(e.errno, proc_sys),
        })?;
    // "deny" must precede gid_map for an unprivileged writer.
    sys.write_file(&proc_self.join("setgroups"), "deny")
        .map_err(NamespaceError::Map)?;
    sys.write_file(&proc_self.join("uid_map"), &id.uid_map())
        .map_err(NamespaceError::Map)?;
    sys.write_file(&proc_self.join("gid_map"), &id.gid_map())
        .map_err(NamespaceError::Map)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_have_one_entry() {
        let f = Identity::fakeroot(1000, 100);
        assert_eq!(f.uid_map(), "0 1000 1\n");
        assert_eq!(f.gid_map(), "0 100 1\n");
        let k = Identity::keep_id(1000, 100);
        assert_eq!(k.uid_map(), "1000 1000 1\n");
        assert_eq!(k.gid_map(), "100 100 1\n");
    }
}
