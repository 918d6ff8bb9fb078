//! `Bootstrap: debootstrap`: a Debian (or Ubuntu) root made with the host's
//! debootstrap, without root.
//!
//! Apptainer runs, as real root, `debootstrap --variant=minbase
//! --exclude=openssl,udev,debconf-i18n,e2fsprogs --include=apt,INCLUDE
//! --arch=ARCH OSVERSION ROOT MIRRORURL` and then sets the root's mode to
//! 0755; rfake runs the same command in two halves, both as fakeroot
//! ([`fakeroot`]: the invoking user as root of a one-entry user namespace,
//! the seccomp filter faking the chowns to other ids that unpacking
//! packages does):
//!
//! 1. `debootstrap --foreign ...` on the host's file system
//!    ([`Place::Host`]): downloads and unpacks the essential packages into
//!    the root and copies itself to `/debootstrap` there;
//! 2. `/debootstrap/debootstrap --second-stage` in the root
//!    ([`Place::Tree`], as `%post` runs): configures and installs every
//!    package with the root's own dpkg.
//!
//! Each runs in a PID namespace of its own with a new `/proc`: the second
//! stage unmounts the `/proc` it is given, finds the second procfs the
//! runner stacks under it, and so does not need to mount its own (which
//! it could); the package scripts see only the step's processes, and what
//! they leave running dies with the stage.
//!
//! Device nodes: debootstrap makes `/dev/null` and others with `mknod -m
//! 666`. The filter fakes the mknod (nothing is made), and mknod's
//! following chmod then fails (ENOENT), which ends debootstrap. rfake puts
//! empty regular files in their place first (debootstrap only makes the
//! ones that are missing) and removes them at the end: the image's `/dev`
//! keeps debootstrap's directories and symlinks, and every container gets
//! its own `/dev` anyway.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::steps::Tail;
use super::{DefinitionOptions, failed, refused};
use crate::build::deffile::Definition;
use crate::build::fakeroot::{self, FakerootMode, Place, RunSpec};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::{one_line, shown};

/// What Apptainer leaves out of every debootstrap root (and so rfake too).
const EXCLUDE: &str = "openssl,udev,debconf-i18n,e2fsprogs";

/// The device nodes debootstrap's `setup_devices_simple` makes, which
/// rfake stands in for with empty files (see the module comment).
const DEVICES: [&str; 8] = [
    "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
];

/// Where debootstrap is installed, which a user's PATH often lacks.
const SBIN: &str = "/usr/sbin:/sbin:/usr/local/sbin";

/// The host's debootstrap: on PATH, else in `sbin`.
fn find_debootstrap(path: Option<&OsStr>, sbin: &OsStr) -> Option<PathBuf> {
    let name = OsStr::new("debootstrap");
    crate::host::search_path(name, path).or_else(|| crate::host::search_path(name, Some(sbin)))
}

/// A host prerequisite, missing.
fn no_debootstrap(def: &Definition, line: usize) -> Error {
    Error::Failed {
        kind: ExitKind::HostUnavailable,
        message: format!(
            "{}:{line}: Bootstrap: debootstrap: the host has no debootstrap (apt-get install \
             debootstrap, or build on a Debian root made elsewhere with Bootstrap: localimage)",
            shown(&def.path)
        ),
    }
}

/// The header's values.
pub struct Request<'a> {
    pub os_version: &'a str,
    pub mirror: &'a str,
    pub include: &'a [String],
    /// The `Bootstrap:` line.
    pub line: usize,
}

/// The Debian architecture name of this machine (as Apptainer maps Go's).
fn debian_arch() -> Option<&'static str> {
    Some(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64" if cfg!(target_endian = "little") => "mips64el",
        _ => return None,
    })
}

/// The `--include=` value: apt first (Apptainer always adds it), then the
/// header's packages.
fn include_arg(include: &[String]) -> String {
    let mut all = vec!["apt"];
    all.extend(include.iter().map(String::as_str).filter(|p| *p != "apt"));
    all.join(",")
}

/// The environment of both stages: every build step's clean one
/// ([`super::steps::clean_env`]: the sbin directories on `PATH`, where
/// debootstrap and dpkg look for programs, and the proxies), and the
/// header's values (the scripts read them from there, so no value is ever
/// parsed by a shell).
fn stage_env(env: &[(OsString, OsString)], extra: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    let mut out = super::steps::clean_env(env);
    for (k, v) in extra {
        out.retain(|(name, _)| name != k);
        out.push(((*k).into(), (*v).into()));
    }
    out
}

/// Make the stage's root in `root` (an empty directory in `work`).
pub fn debootstrap(
    def: &Definition,
    req: &Request,
    opts: &DefinitionOptions,
    env: &[(OsString, OsString)],
    root: &Path,
    work: &Path,
) -> Result<(), Error> {
    // Validate before any side effect.
    let Some(program) = find_debootstrap(crate::env::get(env, "PATH"), SBIN.as_ref()) else {
        return Err(no_debootstrap(def, req.line));
    };
    let Some(arch) = debian_arch() else {
        return Err(refused(
            def,
            req.line,
            "Header",
            format!(
                "Bootstrap: debootstrap: no Debian architecture known for {}",
                std::env::consts::ARCH
            ),
        ));
    };
    let program = program.to_string_lossy().into_owned();
    let root_text = root.to_string_lossy().into_owned();
    let include = include_arg(req.include);
    log::info!(
        "Bootstrap: debootstrap {} from {} (--include={include}, --arch={arch})",
        one_line(req.os_version),
        one_line(req.mirror)
    );
    let dev = root.join("dev");
    fs::create_dir(&dev).map_err(|e| failed(&dev, "creating /dev in the build root", &e))?;
    for name in DEVICES {
        let file = dev.join(name);
        fs::File::create(&file).map_err(|e| failed(&file, "creating a stand-in file", &e))?;
    }

    let log_path = work.join("debootstrap.log");
    let mut log = Tail::new(fs::File::create(&log_path).ok());
    // HOME: dpkg-deb reads $HOME/.dpkg.cfg, and the host's /root is not
    // the user's to read; the work directory is.
    let home = work.to_string_lossy().into_owned();
    let first = stage_env(
        env,
        &[
            ("HOME", &home),
            ("RFAKE_DEBOOTSTRAP", &program),
            ("RFAKE_SUITE", req.os_version),
            ("RFAKE_TARGET", &root_text),
            ("RFAKE_MIRROR", req.mirror),
            ("RFAKE_INCLUDE", &include),
            ("RFAKE_ARCH", arch),
            ("RFAKE_EXCLUDE", EXCLUDE),
        ],
    );
    let script = "exec \"$RFAKE_DEBOOTSTRAP\" --foreign --variant=minbase \
                  --exclude=\"$RFAKE_EXCLUDE\" --include=\"$RFAKE_INCLUDE\" \
                  --arch=\"$RFAKE_ARCH\" \"$RFAKE_SUITE\" \"$RFAKE_TARGET\" \"$RFAKE_MIRROR\"";
    let stage = Stage {
        def,
        line: req.line,
        mode: opts.fakeroot,
        work,
        log_path: &log_path,
        root,
    };
    stage.run("first stage", script, first, Place::Host, &mut log)?;
    // On a host debootstrap takes for a Docker container (it has
    // /.dockerenv), the first stage makes /proc a symlink to the host's;
    // its second stage would make it a directory again before mounting
    // there, but the runner mounts first.
    let proc = root.join("proc");
    if fs::symlink_metadata(&proc).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&proc).map_err(|e| failed(&proc, "replacing the /proc symlink", &e))?;
        fs::create_dir(&proc).map_err(|e| failed(&proc, "creating /proc", &e))?;
    }
    stage.run(
        "second stage",
        "exec /debootstrap/debootstrap --second-stage",
        stage_env(env, &[]),
        Place::Tree,
        &mut log,
    )?;

    // The stand-ins that are still regular files (the second stage may
    // have put something else there: left alone).
    for name in DEVICES {
        let file = dev.join(name);
        if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file() && m.len() == 0) {
            fs::remove_file(&file).map_err(|e| failed(&file, "removing a stand-in file", &e))?;
        }
    }
    // debootstrap copied the build host's resolver and name into the root
    // (with their modes: 0755 on some hosts): not the image's business (it
    // would differ from host to host, and rfake binds the running host's
    // /etc/resolv.conf anyway).
    for (name, text) in [("etc/resolv.conf", ""), ("etc/hostname", "localhost\n")] {
        let file = root.join(name);
        if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            fs::write(&file, text)
                .and_then(|()| fs::set_permissions(&file, fs::Permissions::from_mode(0o644)))
                .map_err(|e| failed(&file, "replacing the host's copy", &e))?;
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .map_err(|e| failed(root, "setting the root's mode", &e))?;
    Ok(())
}

/// What both stages share.
struct Stage<'a> {
    def: &'a Definition,
    line: usize,
    mode: FakerootMode,
    work: &'a Path,
    log_path: &'a Path,
    root: &'a Path,
}

impl Stage<'_> {
    fn run(
        &self,
        what: &str,
        script: &str,
        env: Vec<(OsString, OsString)>,
        place: Place,
        log: &mut Tail,
    ) -> Result<(), Error> {
        let here = format!(
            "{}:{}: Bootstrap: debootstrap",
            shown(&self.def.path),
            self.line
        );
        log::info!("debootstrap: {what}");
        let status = fakeroot::run_in(
            RunSpec {
                root: self.root,
                shell: "/bin/sh",
                script,
                env,
                mode: self.mode,
                log,
            },
            place,
        )
        .map_err(|e| Error::Failed {
            kind: e.exit_kind(),
            message: format!("{here}: {what}: {e}"),
        })?;
        if status.success() {
            return Ok(());
        }
        let code = super::steps::failed_status(status, "debootstrap");
        // debootstrap's own log says more than its output (which names it
        // by its path inside the root): it goes at the end of the kept log.
        let own_log = self.root.join("debootstrap/debootstrap.log");
        if let Ok(text) = fs::read(&own_log) {
            log.file_only();
            let _ = log.write_all(b"\n== debootstrap/debootstrap.log\n");
            let _ = log.write_all(&text);
        }
        let kept = super::steps::keep_log(&self.def.path, "debootstrap", self.work, self.log_path);
        Err(Error::Failed {
            kind: ExitKind::BadImage,
            message: format!(
                "{here}: debootstrap's {what} failed ({code}); its last lines: {}{}",
                log.last_lines(3),
                kept.map(|k| format!(" (the whole log: {})", shown(&k)))
                    .unwrap_or_default()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host without debootstrap (here: PATH and the sbin directories
    /// empty): the definition's file and line, the host-prerequisite code.
    #[test]
    fn no_debootstrap_is_a_missing_host_prerequisite() {
        let empty = tempfile::tempdir().unwrap();
        let dirs = empty.path().as_os_str();
        assert_eq!(find_debootstrap(Some(dirs), dirs), None);
        let bin = empty.path().join("debootstrap");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_debootstrap(None, dirs), Some(bin));
        let file = empty.path().join("app.def");
        fs::write(
            &file,
            "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://m/\n",
        )
        .unwrap();
        let def = crate::build::deffile::parse(&file).unwrap();
        let e = no_debootstrap(&def, 1);
        assert_eq!(e.exit_kind(), ExitKind::HostUnavailable);
        let text = e.to_string();
        assert!(
            text.contains("app.def:1: Bootstrap: debootstrap: the host has no debootstrap"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn include_puts_apt_first_once() {
        assert_eq!(include_arg(&[]), "apt");
        let pkgs = ["openmpi-bin".to_string(), "apt".into(), "less".into()];
        assert_eq!(include_arg(&pkgs), "apt,openmpi-bin,less");
    }

    #[test]
    fn the_header_reaches_the_script_through_the_environment() {
        let env = stage_env(
            &[("http_proxy".into(), "http://p:3128".into())],
            &[("RFAKE_SUITE", "bookworm; rm -rf /")],
        );
        let get = |k: &str| crate::env::get(&env, k).map(|v| v.to_string_lossy().into_owned());
        assert_eq!(get("RFAKE_SUITE").as_deref(), Some("bookworm; rm -rf /"));
        assert_eq!(get("http_proxy").as_deref(), Some("http://p:3128"));
        assert!(get("PATH").unwrap().contains("/usr/sbin"));
    }

    #[test]
    fn the_last_lines_leave_out_the_appended_log() {
        let mut t = Tail::new(None);
        t.write_all(b"I: one\n\nE: Failed getting release file\n")
            .unwrap();
        t.file_only();
        t.write_all(b"\n== debootstrap/debootstrap.log\nnoise\n")
            .unwrap();
        assert_eq!(t.last_lines(3), "I: one | E: Failed getting release file");
    }
}
