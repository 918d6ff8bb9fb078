//! Names of the rendezvous sockets: abstract unix sockets named from the
//! user, what the socket is for and the user's secret ([`super::secret`]),
//! so other users cannot compute them.

use std::ffi::OsString;

use sha2::{Digest, Sha256};

use super::secret::{self, SecretError};
use crate::image::Image;

/// The rendezvous socket of the joined container for `key`: per user, per
/// node (host name: the emulated nodes of a test cluster share one network
/// namespace), per image file (device, inode, size, times).
/// `setup` describes the container (identity, mounts): launches that ask
/// for a different one get a different container.
pub fn socket_name(
    uid: u32,
    env: &[(OsString, OsString)],
    key: &str,
    image: &Image,
    hostname: &str,
    setup: &str,
) -> SocketName {
    SocketName::plan(
        "rfake-join",
        uid,
        env,
        format!(
            "{key}\0{hostname}\0{}\0{}\0{setup}",
            image.path.display(),
            image_stamp(image)
        ),
    )
}

/// The rendezvous socket of the warm mount of `image` for user `uid`,
/// served as `server` says: a replaced image (another inode, size or time)
/// gets another.
pub fn warm_socket_name(
    uid: u32,
    env: &[(OsString, OsString)],
    image: &Image,
    server: &str,
) -> SocketName {
    SocketName::plan(
        "rfake-warm",
        uid,
        env,
        format!("{}\0{}\0{server}", image.path.display(), image_stamp(image)),
    )
}

/// The image file's identity: device, inode, size, modification and
/// change times (to the nanosecond).
fn image_stamp(image: &Image) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = match &image.file {
        Some(f) => f.metadata(),
        None => std::fs::metadata(&image.path),
    };
    meta.map(|m| {
        format!(
            "{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
    })
    .unwrap_or_default()
}

/// An abstract socket's name, `PREFIX-UID-HASH`, where the hash covers what
/// the socket is for and the user's secret ([`secret`]): other users
/// cannot compute it. Planned without side effects: the secret is read if
/// it is there, and made when the name is first needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketName {
    prefix: &'static str,
    uid: u32,
    /// What the name is for (hashed).
    material: String,
    secret: PlannedSecret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PlannedSecret {
    Known(secret::Secret),
    /// Not made yet: made there by [`SocketName::resolve`].
    Later(secret::SecretDir),
    Unusable(SecretError),
}

impl SocketName {
    pub fn plan(
        prefix: &'static str,
        uid: u32,
        env: &[(OsString, OsString)],
        material: String,
    ) -> SocketName {
        let secret = match secret::locate(env, uid) {
            Ok(dir) => match dir.read() {
                Ok(Some(s)) => PlannedSecret::Known(s),
                Ok(None) => PlannedSecret::Later(dir),
                Err(e) => PlannedSecret::Unusable(e),
            },
            Err(e) => PlannedSecret::Unusable(e),
        };
        SocketName {
            prefix,
            uid,
            material,
            secret,
        }
    }

    /// The name, with the user's secret (made now if there is none yet).
    pub fn resolve(&self) -> Result<String, SecretError> {
        match &self.secret {
            PlannedSecret::Known(s) => Ok(self.hashed(Some(s))),
            PlannedSecret::Later(dir) => dir.get().map(|s| self.hashed(Some(&s))),
            PlannedSecret::Unusable(e) => Err(e.clone()),
        }
    }

    /// Why the secret cannot be used, known at planning time.
    pub fn unusable(&self) -> Option<&SecretError> {
        match &self.secret {
            PlannedSecret::Unusable(e) => Some(e),
            _ => None,
        }
    }

    /// The name without the secret: anyone can compute it.
    pub fn without_secret(&self) -> String {
        self.hashed(None)
    }

    fn hashed(&self, secret: Option<&secret::Secret>) -> String {
        let mut h = Sha256::new();
        if let Some(s) = secret {
            h.update(s.bytes());
            h.update([0u8]);
        }
        h.update(&self.material);
        let digest = h.finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{hex}", self.prefix, self.uid)
    }
}

impl std::fmt::Display for SocketName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.secret {
            PlannedSecret::Known(s) => write!(f, "@{}", self.hashed(Some(s))),
            PlannedSecret::Later(dir) => write!(
                f,
                "@{}-{}-… (hashed with your secret, made at the first launch in {})",
                self.prefix,
                self.uid,
                dir.file().display()
            ),
            PlannedSecret::Unusable(e) => {
                write!(f, "@{} (without your secret: {e})", self.without_secret())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> (std::ffi::OsString, std::ffi::OsString) {
        (k.into(), v.into())
    }

    #[test]
    fn socket_names_differ_by_key_node_and_image() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.sqfs");
        let b = d.path().join("b.sqfs");
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let img = |p: &std::path::Path| Image {
            path: p.to_path_buf(),
            format: crate::image::ImageFormat::Squashfs,
            squashfs_offset: Some(0),
            squashfs: None,
            arch: None,
            overlay_partition: None,
            file: None,
        };
        let me = nix::unistd::getuid().as_raw();
        let home = d.path().join("home");
        let env = [e("HOME", home.to_str().unwrap())];
        let name = |uid, key, image: &Image, host, setup| {
            socket_name(uid, &env, key, image, host, setup)
                .resolve()
                .unwrap()
        };
        let n1 = name(me, "slurm.1.0", &img(&a), "node1", "s");
        assert_eq!(n1, name(me, "slurm.1.0", &img(&a), "node1", "s"));
        assert_ne!(n1, name(me, "slurm.1.0", &img(&a), "node2", "s"));
        assert_ne!(n1, name(me, "slurm.1.1", &img(&a), "node1", "s"));
        assert_ne!(n1, name(me, "slurm.1.0", &img(&b), "node1", "s"));
        assert_ne!(n1, name(me, "slurm.1.0", &img(&a), "node1", "other binds"));
        assert!(n1.starts_with(&format!("rfake-join-{me}-")));
        // Another secret, another name; without one, the old public name.
        let planned = socket_name(me, &env, "slurm.1.0", &img(&a), "node1", "s");
        assert_eq!(planned.to_string(), format!("@{n1}"));
        let other_home = [e("HOME", d.path().join("other").to_str().unwrap())];
        let other = socket_name(me, &other_home, "slurm.1.0", &img(&a), "node1", "s");
        assert!(
            other.to_string().contains("made at the first launch"),
            "{other}"
        );
        assert_ne!(other.resolve().unwrap(), n1);
        assert_ne!(other.without_secret(), n1);
        let none = socket_name(me, &[], "slurm.1.0", &img(&a), "node1", "s");
        assert!(none.resolve().is_err());
        assert_eq!(none.without_secret(), other.without_secret());
    }
}
