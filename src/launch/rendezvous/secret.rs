//! The per-user secret mixed into rendezvous socket names.
//!
//! Keepers listen on *abstract* Unix sockets ([`super`]): every user on the
//! node can bind any free name. A name made only from public facts (uid,
//! image, job step) can be computed and taken first by another user; rfake
//! then refuses that socket (its peer is not the caller). Hashing a secret
//! that only the user can read into the name makes it unguessable: the
//! first launch makes 32 random bytes, kept in a file nobody else can read,
//! and every later launch of the user's (every rank of a job on the node
//! too: same user, same file) reads the same secret and computes the same
//! names.
//!
//! Where: `$XDG_RUNTIME_DIR/rfake` when `XDG_RUNTIME_DIR` is a directory of
//! the user's own that nobody else may enter (mode 0700, as the XDG base
//! directory spec requires), else `$HOME/.cache/rfake` (on a shared home
//! the same for every node, which is fine: the names also hash the host).
//! The directory must be the user's and closed to group and others (0700),
//! the file the user's, a regular file, closed to group and others (0600):
//! anything else is refused, never repaired, and the caller carries on
//! without the secret (see [`SecretError`]).
//!
//! Made race-free: ranks starting together on a node without
//! `XDG_RUNTIME_DIR` and with a shared home may all find no secret. Each
//! writes a candidate to a temporary file of its own (`O_EXCL`) and links
//! it to the final name (`link(2)` never replaces: atomic on NFS too);
//! exactly one wins, the others get `EEXIST` and read the winner's. A reader
//! never sees a partial file: the name appears only once the content is
//! complete.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::Mode;

/// The file's name in its directory.
pub const FILE_NAME: &str = "secret";
/// Random bytes in a secret.
const LEN: usize = 32;
/// Bytes of the file: the secret in hex and a newline.
const FILE_LEN: u64 = LEN as u64 * 2 + 1;

/// The user's secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn random() -> Result<Secret, String> {
        let mut buf = [0u8; LEN];
        let mut filled = 0;
        while filled < LEN {
            // SAFETY: writing at most LEN - filled bytes into buf[filled..].
            let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), LEN - filled, 0) };
            match n {
                n if n > 0 => filled += n as usize,
                _ if Errno::last() == Errno::EINTR => {}
                _ => return Err(format!("getrandom: {}", Errno::last().desc())),
            }
        }
        Ok(Secret(buf))
    }

    fn to_file_text(&self) -> String {
        let mut text: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        text
    }

    fn from_file_text(text: &[u8]) -> Option<Secret> {
        let hex = text.strip_suffix(b"\n")?;
        if hex.len() != LEN * 2 {
            return None;
        }
        let mut out = [0u8; LEN];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(Secret(out))
    }
}

/// Why there is no usable secret: one sentence naming the path and what is
/// wrong with it, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

/// The directory that holds (or will hold) the user's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDir {
    pub path: PathBuf,
    uid: u32,
}

/// Where user `uid` keeps the secret, from `XDG_RUNTIME_DIR` and `HOME` in
/// `env` (only absolute values count). Reads the runtime directory's
/// status; creates nothing.
pub fn locate(env: &[(OsString, OsString)], uid: u32) -> Result<SecretDir, SecretError> {
    let absolute = |name: &str| {
        crate::env::get(env, name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(run) = absolute("XDG_RUNTIME_DIR") {
        match std::fs::metadata(&run) {
            Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 => {
                return Ok(SecretDir {
                    path: run.join("rfake"),
                    uid,
                });
            }
            Ok(m) => log::debug!(
                "XDG_RUNTIME_DIR {} is not a directory of yours closed to others \
                 (uid {}, mode {:04o}): the rendezvous secret is kept under HOME",
                run.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
            Err(e) => log::debug!(
                "XDG_RUNTIME_DIR {}: {e}: the rendezvous secret is kept under HOME",
                run.display()
            ),
        }
    }
    match absolute("HOME") {
        Some(home) => Ok(SecretDir {
            path: home.join(".cache").join("rfake"),
            uid,
        }),
        None => Err(SecretError(
            "no place for the rendezvous secret: neither XDG_RUNTIME_DIR (a directory of yours, \
             mode 0700) nor HOME is set to an absolute path"
                .into(),
        )),
    }
}

impl SecretDir {
    /// The secret file's path.
    pub fn file(&self) -> PathBuf {
        self.path.join(FILE_NAME)
    }

    /// The secret if it is there; `None` if the directory or the file does
    /// not exist yet. Creates nothing.
    pub fn read(&self) -> Result<Option<Secret>, SecretError> {
        let dir = match self.open_dir() {
            Ok(dir) => dir,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.io_error("open", &self.path, e)),
        };
        self.check(&dir, &self.path, true)?;
        self.read_in(&dir)
    }

    /// The secret, made first if there is none (the directory too, mode
    /// 0700). Safe against other launches making it at the same time.
    pub fn get(&self) -> Result<Secret, SecretError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| SecretError(format!("cannot create {}: {e}", self.path.display())))?;
        let dir = self
            .open_dir()
            .map_err(|e| self.io_error("open", &self.path, e))?;
        self.check(&dir, &self.path, true)?;
        // Each round either finds a complete secret or links one of its
        // own; losing a race means the next round finds the winner's. A
        // round can only fail to find one if the file is removed again in
        // between.
        for _ in 0..5 {
            if let Some(secret) = self.read_in(&dir)? {
                return Ok(secret);
            }
            if let Some(secret) = self.make_in(&dir)? {
                return Ok(secret);
            }
        }
        Err(SecretError(format!(
            "{}: appeared and disappeared again while rfake made it",
            self.file().display()
        )))
    }

    fn open_dir(&self) -> Result<OwnedFd, Errno> {
        nix::fcntl::open(
            &self.path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn io_error(&self, what: &str, path: &Path, e: Errno) -> SecretError {
        let hint = if e == Errno::ELOOP || e == Errno::ENOTDIR {
            " (a symbolic link or not a directory: rfake follows none here)"
        } else {
            ""
        };
        SecretError(format!(
            "cannot {what} {}: {}{hint}",
            path.display(),
            e.desc()
        ))
    }

    /// Refuse what is not the user's, or what group or others may use.
    fn check(&self, fd: &impl AsFd, path: &Path, dir: bool) -> Result<(), SecretError> {
        let st = nix::sys::stat::fstat(fd).map_err(|e| self.io_error("stat", path, e))?;
        let kind = st.st_mode & libc::S_IFMT;
        let (want_kind, what, fix) = if dir {
            (libc::S_IFDIR, "directory", 0o700)
        } else {
            (libc::S_IFREG, "regular file", 0o600)
        };
        if kind != want_kind {
            return Err(SecretError(format!(
                "{}: not a {what}; remove it and rfake makes a new one",
                path.display()
            )));
        }
        if st.st_uid != self.uid {
            return Err(SecretError(format!(
                "{}: owned by uid {}, not by you (uid {}): rfake keeps its rendezvous secret \
                 only where nobody else can read or replace it",
                path.display(),
                st.st_uid,
                self.uid
            )));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError(format!(
                "{}: group or others have access (mode {mode:04o}): rfake keeps its rendezvous \
                 secret only where nobody else can read it (chmod {fix:o} {})",
                path.display(),
                path.display()
            )));
        }
        Ok(())
    }

    /// The secret in `dir`, if its file is there.
    fn read_in(&self, dir: &OwnedFd) -> Result<Option<Secret>, SecretError> {
        let path = self.file();
        // O_NONBLOCK: a FIFO in its place must not block the open.
        let fd = match nix::fcntl::openat(
            dir,
            FILE_NAME,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY
                | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.io_error("open", &path, e)),
        };
        self.check(&fd, &path, false)?;
        let mut text = Vec::new();
        File::from(fd)
            .take(FILE_LEN + 1)
            .read_to_end(&mut text)
            .map_err(|e| SecretError(format!("cannot read {}: {e}", path.display())))?;
        Secret::from_file_text(&text).map(Some).ok_or_else(|| {
            SecretError(format!(
                "{}: not a secret rfake made (64 hex digits and a newline); remove it and rfake \
                 makes a new one",
                path.display()
            ))
        })
    }

    /// Write a new secret to a temporary file and link it to the final
    /// name. `None`: another launch linked its own first (read that one).
    fn make_in(&self, dir: &OwnedFd) -> Result<Option<Secret>, SecretError> {
        let secret = Secret::random().map_err(SecretError)?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nonce = Secret::random().map_err(SecretError)?.0;
        let tmp = format!(
            ".{FILE_NAME}.{host}.{}.{:02x}{:02x}{:02x}{:02x}",
            std::process::id(),
            nonce[0],
            nonce[1],
            nonce[2],
            nonce[3]
        );
        let failed = |what: &str, e: Errno| {
            SecretError(format!(
                "cannot make {}: {what}: {}",
                self.file().display(),
                e.desc()
            ))
        };
        let fd = nix::fcntl::openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| failed("creating a temporary file", e))?;
        let remove_tmp = || {
            let _ =
                nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        };
        let mut file = File::from(fd);
        if let Err(e) = file
            .write_all(secret.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
        {
            remove_tmp();
            return Err(SecretError(format!(
                "cannot make {}: writing it: {e}",
                self.file().display()
            )));
        }
        drop(file);
        // link(2) fails with EEXIST instead of replacing: the first one
        // wins. Where hard links are not supported, rename without
        // replacing (RENAME_NOREPLACE, Linux 3.15; not on NFS).
        let linked = match nix::unistd::linkat(
            dir,
            tmp.as_str(),
            dir,
            FILE_NAME,
            nix::fcntl::AtFlags::empty(),
        ) {
            Err(Errno::EEXIST) => Ok(false),
            Err(_) => match nix::fcntl::renameat2(
                dir,
                tmp.as_str(),
                dir,
                FILE_NAME,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => return Ok(Some(secret)),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(failed("linking it into place", e)),
            },
            Ok(()) => Ok(true),
        };
        remove_tmp();
        Ok(linked?.then_some(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &Path)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), v.as_os_str().to_owned()))
            .collect()
    }

    fn me() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn private(path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn runtime_dir_first_when_it_is_private() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let home = d.path().join("home");
        private(&run);
        let both = env(&[("XDG_RUNTIME_DIR", &run), ("HOME", &home)]);
        assert_eq!(locate(&both, me()).unwrap().path, run.join("rfake"));
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate(&both, me()).unwrap().path, home.join(".cache/rfake"));
        // Another uid's runtime directory is not used either.
        private(&run);
        assert_eq!(
            locate(&both, me() + 1).unwrap().path,
            home.join(".cache/rfake")
        );
        let relative = env(&[("HOME", Path::new("home"))]);
        assert!(locate(&relative, me()).is_err());
        assert!(locate(&[], me()).is_err());
    }

    #[test]
    fn made_once_then_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = locate(&env(&[("HOME", d.path())]), me()).unwrap();
        assert_eq!(dir.read().unwrap(), None, "nothing made by reading");
        assert!(!dir.path.exists());
        let secret = dir.get().unwrap();
        assert_eq!(dir.read().unwrap(), Some(secret.clone()));
        assert_eq!(dir.get().unwrap(), secret);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir.path), 0o700);
        assert_eq!(mode(&dir.file()), 0o600);
        assert_eq!(std::fs::read_dir(&dir.path).unwrap().count(), 1);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn concurrent_makers_agree() {
        let d = tempfile::tempdir().unwrap();
        let dir = locate(&env(&[("HOME", d.path())]), me()).unwrap();
        let secrets: Vec<Secret> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| dir.get().unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| *s == secrets[0]));
        assert_eq!(std::fs::read_dir(&dir.path).unwrap().count(), 1);
    }

    #[test]
    fn refused_when_others_have_access_or_it_is_not_a_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = locate(&env(&[("HOME", d.path())]), me()).unwrap();
        dir.get().unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&dir.path, 0o750);
        let e = dir.read().unwrap_err().to_string();
        assert!(e.contains("mode 0750") && e.contains("chmod 700"), "{e}");
        assert!(dir.get().is_err());
        set(&dir.path, 0o700);
        set(&dir.file(), 0o604);
        let e = dir.get().unwrap_err().to_string();
        assert!(e.contains("mode 0604") && e.contains("chmod 600"), "{e}");
        // A symbolic link in its place is not followed.
        std::fs::remove_file(dir.file()).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.file()).unwrap();
        let e = dir.get().unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // Nor a FIFO opened (it would block).
        std::fs::remove_file(dir.file()).unwrap();
        nix::unistd::mkfifo(&dir.file(), Mode::from_bits_truncate(0o600)).unwrap();
        let e = dir.read().unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Damaged content.
        std::fs::remove_file(dir.file()).unwrap();
        std::fs::write(dir.file(), "short\n").unwrap();
        set(&dir.file(), 0o600);
        let e = dir.read().unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn refused_when_another_uid_owns_it() {
        // Seen as another user: the same files checked for uid + 1.
        let d = tempfile::tempdir().unwrap();
        let home = env(&[("HOME", d.path())]);
        locate(&home, me()).unwrap().get().unwrap();
        let other = locate(&home, me() + 1).unwrap();
        let e = other.read().unwrap_err().to_string();
        assert!(e.contains(&format!("owned by uid {}", me())), "{e}");
    }

    #[test]
    fn file_text_round_trip() {
        let s = Secret::random().unwrap();
        assert_eq!(Secret::from_file_text(s.to_file_text().as_bytes()), Some(s));
        assert_eq!(Secret::from_file_text(b"zz\n"), None);
        assert_eq!(Secret::from_file_text(&[b'0'; 64]), None, "no newline");
    }
}
