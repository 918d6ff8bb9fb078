//! Bind profiles: `[profiles.NAME]` in the configuration, applied by
//! `--profile` or `RFAKE_PROFILE`, listed by `rfake config`.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A site file (and optionally a user file) and a host directory for the
/// profile to bind.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(site: &str) -> Site {
        let dir = tempfile::Builder::new().prefix("prof-").tempdir().unwrap();
        let host = dir.path().join("hostmpi");
        std::fs::create_dir_all(host.join("lib")).unwrap();
        std::fs::write(host.join("lib/libhost.so.1"), "host library\n").unwrap();
        let text = site.replace("@HOST@", host.to_str().unwrap());
        std::fs::write(dir.path().join("site.toml"), text).unwrap();
        Site { dir }
    }

    fn site(&self) -> PathBuf {
        self.dir.path().join("site.toml")
    }

    fn with_user(self, user: &str) -> Site {
        std::fs::write(self.dir.path().join("user.toml"), user).unwrap();
        self
    }

    fn run(&self, t: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = command(t);
        cmd.env("RFAKE_CONFIG", self.site());
        let user = self.dir.path().join("user.toml");
        if user.exists() {
            cmd.env("RFAKE_USER_CONFIG", user);
        }
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn sh(
        &self,
        t: &str,
        env: &[(&str, &str)],
        opts: &[&str],
        image: &Path,
        script: &str,
    ) -> Output {
        let mut args = vec!["exec"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[image.to_str().unwrap(), "sh", "-c", script]);
        self.run(t, env, &args)
    }
}

const SITE: &str = r#"warm_linger = 0

[profiles.hostmpi]
description = "a host MPI"
binds = ["@HOST@:/opt/host:ro"]
library_path = ["/opt/host/lib"]
path = ["/opt/host/bin"]
env = { HOST_MPI = "yes", WHO = "hostmpi" }

[profiles.fabric]
env = { FI_PROVIDER = "tcp", WHO = "fabric" }
"#;

const SCRIPT: &str = "cat /opt/host/lib/libhost.so.1 2>&1; echo LD=$LD_LIBRARY_PATH; \
                      echo PATH=$PATH; echo MPI=$HOST_MPI FI=$FI_PROVIDER WHO=$WHO";

#[test]
fn a_profile_binds_and_sets_variables() {
    let Some(env) = setup() else { return };
    let site = Site::new(SITE);
    let t = tag("profile-apply");
    let image = env.image("demo.sqfs");
    let out = site.sh(&t, &[], &["--profile", "hostmpi,fabric"], &image, SCRIPT);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("host library\n"), "{text}");
    assert!(text.contains("\nLD=/opt/host/lib\n"), "{text}");
    assert!(text.contains("\nPATH=/opt/host/bin:"), "{text}");
    // The later profile's value wins.
    assert!(text.contains("\nMPI=yes FI=tcp WHO=fabric\n"), "{text}");
    // The bind is read-only.
    let out = site.sh(
        &t,
        &[],
        &["--profile", "hostmpi"],
        &image,
        "echo x > /opt/host/new",
    );
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!site.dir.path().join("hostmpi/new").exists());
    assert_nothing_left(&t);
}

#[test]
fn rfake_profile_and_the_flag_over_it() {
    let Some(env) = setup() else { return };
    let site = Site::new(SITE);
    let t = tag("profile-env");
    let image = env.image("demo.sqfs");
    let out = site.sh(&t, &[("RFAKE_PROFILE", "fabric")], &[], &image, SCRIPT);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("MPI= FI=tcp WHO=fabric"),
        "{}",
        stdout(&out)
    );
    // --profile replaces the variable; an empty one asks for none.
    let out = site.sh(
        &t,
        &[("RFAKE_PROFILE", "fabric")],
        &["--profile", "hostmpi"],
        &image,
        SCRIPT,
    );
    assert!(
        stdout(&out).contains("MPI=yes FI= WHO=hostmpi"),
        "{}",
        stdout(&out)
    );
    let out = site.sh(
        &t,
        &[("RFAKE_PROFILE", "fabric")],
        &["--profile", ""],
        &image,
        SCRIPT,
    );
    assert!(stdout(&out).contains("MPI= FI= WHO=\n"), "{}", stdout(&out));
    // The user's own --env wins over a profile's.
    let out = site.sh(
        &t,
        &[],
        &["--profile", "fabric", "--env", "WHO=me"],
        &image,
        SCRIPT,
    );
    assert!(stdout(&out).contains("WHO=me\n"), "{}", stdout(&out));
    assert_nothing_left(&t);
}

#[test]
fn an_unknown_profile_is_exit_64_naming_the_file() {
    let Some(env) = setup() else { return };
    let site = Site::new(SITE);
    let t = tag("profile-unknown");
    let image = env.image("demo.sqfs");
    for (envs, opts, from) in [
        (vec![], vec!["--profile", "hostmpi,nope"], "--profile"),
        (vec![("RFAKE_PROFILE", "nope")], vec![], "RFAKE_PROFILE"),
    ] {
        let out = site.sh(&t, &envs, &opts, &image, "true");
        assert_exit(&out, ExitKind::Usage);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "error: {from} nope: no such profile in {} (defined: hostmpi, fabric)",
                site.site().display()
            )),
            "{err}"
        );
    }
    assert_nothing_left(&t);
}

#[test]
fn rfake_config_lists_the_profiles() {
    let site = Site::new(SITE);
    let t = tag("profile-config");
    let out = site.run(&t, &[], &["config"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let at = format!("# {}:3", site.site().display());
    assert!(
        text.lines()
            .any(|l| l.starts_with("[profiles.hostmpi]") && l.ends_with(&at)),
        "{text}"
    );
    assert!(text.contains("description = \"a host MPI\"\n"), "{text}");
    assert!(
        text.contains("env = { FI_PROVIDER = \"tcp\", WHO = \"fabric\" }\n"),
        "{text}"
    );
}

#[test]
fn profile_errors_in_files_are_exit_78() {
    let t = tag("profile-bad");
    // A user's profile is a user bind: refused where the site forbids them.
    let site = Site::new(&format!("allow_user_binds = false\n{SITE}"))
        .with_user("[profiles.mine]\nbinds = [\"/data\"]\n");
    let out = site.run(&t, &[], &["config"]);
    assert_exit(&out, ExitKind::Config);
    let err = stderr(&out);
    assert!(
        err.contains("user.toml:1: profiles: the site configuration"),
        "{err}"
    );
    assert!(err.contains("does not allow user binds"), "{err}");
    let site = Site::new("[profiles.a]\nbinds = [\"relative\"]\n");
    let out = site.run(&t, &[], &["config"]);
    assert_exit(&out, ExitKind::Config);
    assert!(
        stderr(&out).contains("site.toml:2: profiles.a.binds: "),
        "{}",
        stderr(&out)
    );
}

/// The example `host-openmpi` profile of docs/rfake.toml.example, as a
/// site file.
fn example_profile() -> String {
    let text = include_str!("../docs/rfake.toml.example");
    let start = text
        .find("#  [profiles.host-openmpi]")
        .expect("the example profile");
    let block: Vec<&str> = text[start..]
        .lines()
        .take_while(|l| l.starts_with("#  "))
        .map(|l| &l[3..])
        .collect();
    format!("warm_linger = 0\n{}\n", block.join("\n"))
}

#[test]
fn the_example_host_openmpi_profile_runs_the_mpi_test_under_mpirun() {
    let Some(image) = std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) else {
        return missing("the MPI test image, RFAKE_MPI_IMAGE unset");
    };
    if setup().is_none() {
        return;
    }
    if !have("mpirun") || !Path::new("/usr/lib/x86_64-linux-gnu/libmpi.so.40").exists() {
        return missing("the host's Open MPI (openmpi-bin, tests/setup-host.sh)");
    }
    let site = Site::new(&example_profile());
    let t = tag("profile-bind-model");
    // Each rank checks that its program resolves the host's libmpi, then
    // runs the ring, allreduce and 16 MiB test with it.
    let script = "ldd /opt/mpi-test/mpi-test | grep -q 'libmpi.so.40 => /opt/host/lib/libmpi.so.40' \
                  || { echo 'not the host libmpi' >&2; exit 9; }; exec /opt/mpi-test/mpi-test";
    let rfake_path = rfake_bin();
    let mut cmd = scrubbed("mpirun", &t);
    cmd.env("RFAKE_CONFIG", site.site())
        .args(["-n", "2", "--oversubscribe"])
        .arg(&rfake_path)
        .args(["exec", "--profile", "host-openmpi"])
        .arg(&image)
        .args(["sh", "-c", script])
        .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    assert_eq!(
        text.matches(": ok\n").count(),
        2,
        "{text}\n{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}
