//! Build sources: what `rfake build OUT SOURCE` reads into a [`Tree`] and
//! [`ImageMeta`].
//!
//! A SOURCE is detected by content, never by name ([`detect`]): a directory
//! (a root filesystem, or an OCI image layout when it holds `oci-layout` and
//! `index.json`), a tar archive (a root filesystem tarball, plain or gzip, xz
//! or zstd compressed; an OCI archive; a `docker save` archive) or a recipe
//! (TOML, see `images/recipes/README.md`). [`load`] then fills the tree:
//!
//! - `dir`: a directory walk; files stay on the host ([`Content::Host`]).
//! - `layer`: tar members into the tree, for root filesystem tarballs and for
//!   image layers (with whiteouts); file bytes go to the spool.
//! - `archive`: random access to the members of an uncompressed tar file.
//! - `oci`: OCI image layouts (directories and archives), and the image
//!   configuration that docker archives share.
//! - `docker`: `docker save` / `podman save` archives.
//! - `recipe`: recipes.
//!
//! Everything in the image is owned by root (an unprivileged build cannot
//! represent other owners); what a source loses that way is reported as a
//! warning, once per source. Device nodes, FIFOs and sockets are refused, or
//! left out with a warning each under `--skip-special`.
//!
//! [`Content::Host`]: super::tree::Content::Host

mod archive;
use crate::text::{io_text, one_line, shown};
mod detect;
mod dir;
mod docker;
#[cfg(test)]
mod fuzz_tests;
mod layer;
mod oci;
mod recipe;
mod tar_reader;
#[cfg(test)]
pub(super) mod testutil;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::ImageMeta;
use super::spool::Spool;
use super::tree::Tree;
use crate::exit::ExitKind;

pub use detect::detect;
pub use recipe::{RunStep, StepRunner};

/// How a tarball is compressed (detected by its magic bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// `1f 8b`
    Gzip,
    /// `fd 37 7a 58 5a 00`
    Xz,
    /// `28 b5 2f fd`
    Zstd,
}

/// What a SOURCE is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory holding a root filesystem.
    Directory,
    /// A tar archive of a root filesystem.
    Tarball(Compression),
    /// A directory in the OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// An uncompressed tar archive of an OCI image layout.
    OciArchive,
    /// An uncompressed `docker save` / `podman save --format docker-archive` tar.
    DockerArchive,
    /// A recipe (TOML with an `[image]` table).
    Recipe,
    /// An Apptainer definition file (a `Bootstrap:` header): built by
    /// [`crate::build::definition`], never loaded here.
    Definition,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Directory => "directory",
            SourceKind::Tarball(Compression::None) => "tarball",
            SourceKind::Tarball(Compression::Gzip) => "gzip-compressed tarball",
            SourceKind::Tarball(Compression::Xz) => "xz-compressed tarball",
            SourceKind::Tarball(Compression::Zstd) => "zstd-compressed tarball",
            SourceKind::OciLayout => "OCI image layout",
            SourceKind::OciArchive => "OCI archive",
            SourceKind::DockerArchive => "docker archive",
            SourceKind::Recipe => "recipe",
            SourceKind::Definition => "definition file",
        })
    }
}

/// How to treat what an image cannot hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Leave device nodes, FIFOs and sockets out (one warning each)
    /// instead of failing.
    pub skip_special: bool,
    /// The most the build's files may add up to.
    pub max_size: SizeLimit,
}

/// The most the regular files of a build may add up to, uncompressed
/// (`build_max_size`, `--max-size`): every file a source supplies counts
/// at its full size, holes included, and so does every archive member or
/// layer file that a later one replaces or deletes (its data was read).
/// Counted as each file is met, before its data is copied, so a build
/// over the limit stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeLimit {
    /// Bytes; `u64::MAX`: no limit.
    pub bytes: u64,
    /// Where it was set, for the message: `build_max_size, default`,
    /// `build_max_size, /etc/rfake/rfake.toml:3`, `--max-size`.
    pub origin: String,
}

impl Default for SizeLimit {
    fn default() -> Self {
        SizeLimit {
            bytes: crate::config::DEFAULT_BUILD_MAX_SIZE,
            origin: "build_max_size, default".to_string(),
        }
    }
}

impl fmt::Display for SizeLimit {
    /// "4T (build_max_size, default)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            crate::config::format_size(self.bytes),
            self.origin
        )
    }
}

/// Why a source could not be read. Every message is one line naming where
/// (a host path, or an archive and the member, blob or layer in it) and why.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A path the build needs does not exist or cannot be read.
    #[error("{place}: {}", io_text(.error))]
    Unreadable { place: String, error: io::Error },
    /// The SOURCE path (or a recipe's base) is a symbolic link to nothing.
    #[error("{place}: a dangling symbolic link (to {target})")]
    Dangling { place: String, target: String },
    /// A device node, FIFO or socket without `--skip-special`.
    #[error(
        "{place}: {what}: an unprivileged build cannot represent it in an image; \
         use --skip-special to leave it out"
    )]
    Special { place: String, what: &'static str },
    /// The source is malformed or uses something rfake does not read: a
    /// corrupt tar, bad OCI JSON, a missing or corrupt blob, a member path
    /// climbing out of the root...
    #[error("{place}: {problem}")]
    Invalid { place: String, problem: String },
    /// A recipe is malformed: the file, line and key.
    #[error("{}:{line}: {key}: {problem}", shown(.path))]
    Recipe {
        path: PathBuf,
        line: usize,
        key: String,
        problem: String,
    },
    /// A recipe is not valid TOML.
    #[error("{}:{line}:{column}: {message}", shown(.path))]
    RecipeSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A recipe names a host file that does not exist or cannot be read.
    #[error("{}:{line}: {key}: {problem}", shown(.path))]
    RecipeInput {
        path: PathBuf,
        line: usize,
        key: String,
        problem: String,
    },
    /// Writing the build's spool file failed (disk full...).
    #[error("writing the build spool (copying {place}): {}", io_text(.error))]
    Spool { place: String, error: io::Error },
    /// A recipe's `[[run]]` step failed, or could not run (its message
    /// names the recipe and the line).
    #[error(transparent)]
    Step(Box<crate::error::Error>),
    /// The files add up to more than the build's size limit; `place` is
    /// the file that went over it.
    #[error(
        "{place}: the image's files would exceed the build size limit of {limit}; \
         raise it with --max-size SIZE or build_max_size in rfake.toml"
    )]
    TooLarge { place: String, limit: SizeLimit },
}

impl SourceError {
    /// The exit status class: a missing or unreadable input is `NoInput`
    /// (66); bad input data (malformed tar, OCI or recipe, a special file) is
    /// `BadImage` (65, EX_DATAERR: "the input data was incorrect"); a spool
    /// that cannot be written is `OsError` (71); a build over its size limit
    /// is `Refused` (77).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            SourceError::Unreadable { .. }
            | SourceError::Dangling { .. }
            | SourceError::RecipeInput { .. } => ExitKind::NoInput,
            SourceError::Special { .. }
            | SourceError::Invalid { .. }
            | SourceError::Recipe { .. }
            | SourceError::RecipeSyntax { .. } => ExitKind::BadImage,
            SourceError::Spool { .. } => ExitKind::OsError,
            SourceError::TooLarge { .. } => ExitKind::Refused,
            SourceError::Step(e) => e.exit_kind(),
        }
    }

    fn unreadable(path: &Path, error: io::Error) -> SourceError {
        SourceError::Unreadable {
            place: shown(path),
            error,
        }
    }

    fn invalid(place: impl Into<String>, problem: impl Into<String>) -> SourceError {
        SourceError::Invalid {
            place: place.into(),
            problem: problem.into(),
        }
    }
}

/// Fill `tree` and `meta` from the source at `path`, of the `kind`
/// [`detect`] found; file bytes that cannot stay on the host (tar members,
/// layers) are copied to `spool`. Returns the warnings for the caller to
/// print: special files left out under `--skip-special`, and one summary
/// each of owners and attributes the image cannot keep.
pub fn load(
    path: &Path,
    kind: SourceKind,
    opts: &Options,
    spool: &mut Spool,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<Vec<String>, SourceError> {
    let mut cx = Cx::new(opts, spool);
    cx.load(path, kind, tree, meta)?;
    Ok(cx.finish())
}

/// [`load`], with `steps` to run a recipe's `[[run]]` steps (without it
/// they are refused).
pub fn load_with_steps(
    path: &Path,
    kind: SourceKind,
    opts: &Options,
    spool: &mut Spool,
    tree: &mut Tree,
    meta: &mut ImageMeta,
    steps: &mut dyn StepRunner,
) -> Result<Vec<String>, SourceError> {
    let mut cx = Cx::new(opts, spool);
    cx.steps = Some(steps);
    cx.load(path, kind, tree, meta)?;
    Ok(cx.finish())
}

/// Fill `tree` and `meta` from an image pulled from a registry: its
/// manifest (checked against its digest), whose blobs are in `blobs_root`
/// (the image cache, laid out as `blobs/<algorithm>/<hex>`). `place` names
/// the image in messages (its reference). Layers are read, checked and
/// applied as [`load`] does for an OCI layout.
pub fn load_pulled(
    blobs_root: &Path,
    manifest: &[u8],
    place: &str,
    opts: &Options,
    spool: &mut Spool,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<Vec<String>, SourceError> {
    let mut cx = Cx::new(opts, spool);
    oci::load_manifest(&mut cx, blobs_root, manifest, place, tree, meta)?;
    Ok(cx.finish())
}

/// The state of one [`load`]: options, the spool, warnings so far.
struct Cx<'a> {
    opts: &'a Options,
    spool: &'a mut Spool,
    warnings: Vec<String>,
    /// Entries owned by someone else (directory: not the caller; archive:
    /// not root), all owned by root in the image.
    foreign_owners: u64,
    /// Extended attributes left out ([`keep_xattr`]).
    dropped_xattrs: u64,
    /// The recipes being loaded (canonical paths), to refuse a base cycle.
    recipes: Vec<PathBuf>,
    /// The sizes of the files met so far ([`SizeLimit`]).
    total_size: u64,
    /// What runs a recipe's `[[run]]` steps, if anything may.
    steps: Option<&'a mut dyn StepRunner>,
}

impl<'a> Cx<'a> {
    fn new(opts: &'a Options, spool: &'a mut Spool) -> Cx<'a> {
        Cx {
            opts,
            spool,
            warnings: Vec::new(),
            foreign_owners: 0,
            dropped_xattrs: 0,
            recipes: Vec::new(),
            total_size: 0,
            steps: None,
        }
    }

    fn load(
        &mut self,
        path: &Path,
        kind: SourceKind,
        tree: &mut Tree,
        meta: &mut ImageMeta,
    ) -> Result<(), SourceError> {
        match kind {
            SourceKind::Directory => dir::load(self, path, tree),
            SourceKind::Tarball(compression) => layer::load_tarball(self, path, compression, tree),
            SourceKind::OciLayout => oci::load_layout_dir(self, path, tree, meta),
            SourceKind::OciArchive => oci::load_archive(self, path, tree, meta),
            SourceKind::DockerArchive => docker::load(self, path, tree, meta),
            SourceKind::Recipe => recipe::load(self, path, tree, meta),
            SourceKind::Definition => Err(SourceError::invalid(
                shown(path),
                "a definition file cannot be a base here (build it into an image first)",
            )),
        }
    }

    /// A device node, FIFO or socket at `place`: an error, or a warning and
    /// `Ok` (leave it out) under `--skip-special`.
    fn special(&mut self, place: String, what: &'static str) -> Result<(), SourceError> {
        if self.opts.skip_special {
            self.warnings
                .push(format!("{place}: {what} left out (--skip-special)"));
            Ok(())
        } else {
            Err(SourceError::Special { place, what })
        }
    }

    /// Count a file of `size` bytes at `place` against the size limit,
    /// before anything is copied.
    fn charge(&mut self, place: &str, size: u64) -> Result<(), SourceError> {
        self.total_size = self.total_size.saturating_add(size);
        if self.total_size > self.opts.max_size.bytes {
            return Err(SourceError::TooLarge {
                place: place.to_string(),
                limit: self.opts.max_size.clone(),
            });
        }
        Ok(())
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    fn finish(mut self) -> Vec<String> {
        if self.foreign_owners > 0 {
            let n = self.foreign_owners;
            self.warnings.push(format!(
                "{n} {} owned by other users {} owned by root in the image \
                 (an unprivileged build cannot preserve owners)",
                plural(n, "entry", "entries"),
                plural(n, "is", "are"),
            ));
        }
        if self.dropped_xattrs > 0 {
            let n = self.dropped_xattrs;
            self.warnings.push(format!(
                "{n} extended {} left out (SELinux labels, which belong to \
                 the host, and POSIX ACLs, which SquashFS cannot hold)",
                plural(n, "attribute", "attributes"),
            ));
        }
        self.warnings
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// Which extended attributes go into the image: `user.*`, `trusted.*` and
/// `security.*` (file capabilities) except `security.selinux`, a label of the
/// host's policy (the image gets its mount's label). `system.*` (POSIX ACLs)
/// cannot be stored in SquashFS.
fn keep_xattr(name: &str) -> bool {
    (name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security."))
        && name != "security.selinux"
}

/// [`set_env`] for the definition-file build.
pub(crate) fn set_env_pub(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    set_env(env, name, value)
}

/// Set `name` in `env`: replace its value where it is, or append it.
fn set_env(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{TarMaker, link_of, load_source, paths};
    use super::*;
    use std::fs;
    use std::process::Command;

    #[test]
    fn xattr_policy() {
        assert!(keep_xattr("user.test"));
        assert!(keep_xattr("security.capability"));
        assert!(keep_xattr("trusted.overlay.x"));
        assert!(!keep_xattr("security.selinux"));
        assert!(!keep_xattr("system.posix_acl_access"));
    }

    #[test]
    fn env_replaces_in_place() {
        let mut env = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        set_env(&mut env, "A", "3");
        set_env(&mut env, "C", "4");
        assert_eq!(
            env,
            [("A", "3"), ("B", "2"), ("C", "4")].map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(shown(Path::new("a\nb")), "a\\nb");
        let e =
            SourceError::unreadable(Path::new("/x"), io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.to_string(), "/x: Permission denied (EACCES)");
        assert_eq!(e.exit_kind(), ExitKind::NoInput);
        let e = SourceError::Special {
            place: "/d/fifo".into(),
            what: "FIFO",
        };
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
        assert!(e.to_string().contains("--skip-special"));
    }

    /// Images saved by podman (as the test user, rootless, with its own
    /// storage in a temporary directory) load as docker and OCI archives.
    #[test]
    fn podman_saved_archives() {
        let podman = Path::new("/usr/bin/podman");
        if !crate::testing::have(podman, "the Debian package podman") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let rootfs = TarMaker::default()
            .dir("./", 0o755)
            .dir("./etc/", 0o755)
            .file("./etc/hello", b"hello from podman\n", 0o644)
            .symlink("./etc/link", "hello")
            .dir("./srv/", 0o750)
            .finish();
        fs::write(dir.join("rootfs.tar"), rootfs).unwrap();
        for sub in ["root", "run", "xdg-runtime", "xdg-config"] {
            fs::create_dir(dir.join(sub)).unwrap();
        }
        let podman = |args: &[&str]| {
            let mut cmd = Command::new("timeout");
            cmd.arg("120")
                .arg(podman)
                .arg("--root")
                .arg(dir.join("root"))
                .arg("--runroot")
                .arg(dir.join("run"))
                .args([
                    "--storage-driver",
                    "vfs",
                    "--events-backend",
                    "none",
                    "--cgroup-manager",
                    "cgroupfs",
                ])
                .args(args)
                .current_dir(dir)
                .env_clear()
                .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
                .env("HOME", dir)
                .env("XDG_RUNTIME_DIR", dir.join("xdg-runtime"))
                .env("XDG_CONFIG_HOME", dir.join("xdg-config"));
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "podman {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        podman(&[
            "import",
            "--change",
            "ENV GREETING=hello",
            "--change",
            "CMD [\"/bin/sh\", \"-c\", \"cat /etc/hello\"]",
            "--change",
            "WORKDIR /srv",
            "--change",
            "LABEL org.example.test=podman",
            "rootfs.tar",
            "localhost/rfake-source-test:1",
        ]);
        for (format, kind) in [
            ("docker-archive", SourceKind::DockerArchive),
            ("oci-archive", SourceKind::OciArchive),
        ] {
            let out = dir.join(format!("{format}.tar"));
            podman(&[
                "save",
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
                "localhost/rfake-source-test:1",
            ]);
            assert_eq!(detect(&out).unwrap(), kind, "{format}");
            let l = load_source(&out, &Options::default()).unwrap();
            assert_eq!(paths(&l.tree), ["", "etc", "etc/hello", "etc/link", "srv"]);
            assert_eq!(l.text("etc/hello"), "hello from podman\n", "{format}");
            assert_eq!(link_of(&l.tree, "etc/link"), "hello");
            assert!(
                l.meta
                    .env
                    .contains(&("GREETING".to_string(), "hello".to_string())),
                "{format}: {:?}",
                l.meta.env
            );
            assert_eq!(l.meta.cmd, ["/bin/sh", "-c", "cat /etc/hello"], "{format}");
            assert_eq!(l.meta.workdir.as_deref(), Some("/srv"), "{format}");
            assert_eq!(l.meta.labels["org.example.test"], "podman", "{format}");
            assert!(l.warnings.is_empty(), "{format}: {:?}", l.warnings);
        }
    }
}
