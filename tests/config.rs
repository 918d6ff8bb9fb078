//! The site and user configuration files: each key, each policy refusal,
//! malformed files, and `rfake config`.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A site (and optionally user) configuration for one test.
struct Configs {
    dir: tempfile::TempDir,
}

impl Configs {
    fn new(site: &str) -> Configs {
        let dir = tempfile::Builder::new().prefix("cfg-").tempdir().unwrap();
        std::fs::write(dir.path().join("site.toml"), site).unwrap();
        Configs { dir }
    }

    fn with_user(self, user: &str) -> Configs {
        std::fs::write(self.dir.path().join("user.toml"), user).unwrap();
        self
    }

    fn site(&self) -> PathBuf {
        self.dir.path().join("site.toml")
    }

    fn run(&self, tag: &str, args: &[&str]) -> Output {
        let user = self.dir.path().join("user.toml");
        let mut cmd = command(tag);
        cmd.env("RFAKE_CONFIG", self.site());
        if user.exists() {
            cmd.env("RFAKE_USER_CONFIG", &user);
        }
        cmd.args(args).output().unwrap()
    }

    fn sh(&self, tag: &str, opts: &[&str], image: &Path, script: &str) -> Output {
        let mut args = vec!["exec"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[image.to_str().unwrap(), "sh", "-c", script]);
        self.run(tag, &args)
    }
}

fn user_name() -> String {
    std::env::var("USER").expect("USER set")
}

#[test]
fn scratch_and_home_are_read_write_and_visible_on_the_host() {
    let Some(env) = setup() else { return };
    let scratch = PathBuf::from(format!("/scratch/{}", user_name()));
    if !scratch.is_dir() {
        missing(&format!(
            "{} (tests/setup-host.sh creates it)",
            scratch.display()
        ));
        return;
    }
    let c = Configs::new("scratch = [\"/scratch/$USER\", \"$RFAKE_NO_SUCH_VAR/x\"]\n");
    let t = tag("scratch");
    let name = format!("written-{}", std::process::id());
    let script = format!(
        "echo s > /scratch/$USER/{name} && echo h > $HOME/{name} && cat /scratch/$USER/{name} $HOME/{name}"
    );
    let out = c.sh(&t, &[], &env.image("demo.sqfs"), &script);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "s\nh\n");
    assert_eq!(std::fs::read_to_string(scratch.join(&name)).unwrap(), "s\n");
    assert_eq!(std::fs::read_to_string(home().join(&name)).unwrap(), "h\n");
    std::fs::remove_file(scratch.join(&name)).unwrap();
    std::fs::remove_file(home().join(&name)).unwrap();
    assert_nothing_left(&t);
}

#[test]
fn site_binds_mount_home_and_mount_tmp() {
    let Some(env) = setup() else { return };
    let data = tempfile::Builder::new()
        .prefix("site-bind-")
        .tempdir_in(home())
        .unwrap();
    std::fs::write(data.path().join("f"), "site data\n").unwrap();
    let tmp_marker = tempfile::Builder::new()
        .prefix("tmp-marker-")
        .tempfile_in("/tmp")
        .unwrap();
    let c = Configs::new(&format!(
        "binds = [\"{}:/opt/site:ro\"]\nmount_home = false\nmount_tmp = false\n",
        data.path().display()
    ));
    let script = format!(
        "cat /opt/site/f; touch /opt/site/g 2>/dev/null || echo ro; test -e {} || echo no-home; test -e {} || echo no-host-tmp",
        data.path().display(),
        tmp_marker.path().display()
    );
    // The current directory, the home, would be bound as such (as
    // Apptainer binds it whatever `mount home` says).
    let out = c.sh(
        &tag("sitebind"),
        &["--pwd", "/", "--no-mount", "cwd"],
        &env.image("demo.sqfs"),
        &script,
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "site data\nro\nno-home\nno-host-tmp\n");
}

#[test]
fn squashfuse_and_writable_tmpfs_size() {
    let Some(env) = setup() else { return };
    let c = Configs::new(
        "image_server = \"squashfuse\"\nsquashfuse = \"squashfuse\"\nwritable_tmpfs_size = \"1M\"\n",
    );
    let out = c.run(
        &tag("sqfuse"),
        &[
            "exec",
            "--dry-run",
            "--writable-tmpfs",
            env.image("demo.sqfs").to_str().unwrap(),
            "true",
        ],
    );
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("image server: squashfuse /usr/bin/squashfuse\n"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("writable overlay, 1048576 bytes"),
        "{}",
        stdout(&out)
    );
    let out = c.sh(
        &tag("wsize"),
        &["--writable-tmpfs"],
        &env.image("demo.sqfs"),
        "dd if=/dev/zero of=/big bs=1024 count=2048 2>&1 | grep -o 'No space left on device'",
    );
    assert_eq!(stdout(&out).trim(), "No space left on device");
}

#[test]
fn policy_refusals_name_the_site_file() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let img = img.to_str().unwrap();

    let c = Configs::new("allow_user_binds = false\n");
    let t = tag("policy");
    let out = c.run(&t, &["exec", "-B", "/tmp:/mnt", img, "true"]);
    assert_exit(&out, ExitKind::Refused);
    let err = stderr(&out);
    assert!(err.contains("user binds are disabled"), "{err}");
    assert!(err.contains(&format!("{}:1", c.site().display())), "{err}");
    let out = c.run(&t, &["exec", img, "true"]);
    assert_status(&out, 0);

    let c = Configs::new("allow_fakeroot = false\n");
    let out = c.run(&t, &["exec", img, "id", "-u"]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        nix::unistd::getuid().as_raw().to_string()
    );

    let c = Configs::new("allowed_image_paths = [\"/nonexistent/images\"]\n");
    let out = c.run(&t, &["exec", img, "true"]);
    assert_exit(&out, ExitKind::Refused);
    let err = stderr(&out);
    assert!(
        err.contains("outside the directories the site allows"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:1", c.site().display())), "{err}");
    let images = env.images.canonicalize().unwrap();
    let c = Configs::new(&format!(
        "allowed_image_paths = [\"{}\"]\n",
        images.display()
    ));
    let out = c.run(&t, &["exec", img, "true"]);
    assert_status(&out, 0);

    let c = Configs::new("user_may_set = [\"binds\"]\n").with_user("mount_home = false\n");
    let out = c.run(&t, &["exec", img, "true"]);
    assert_exit(&out, ExitKind::Config);
    let err = stderr(&out);
    assert!(err.contains("user.toml:1: mount_home"), "{err}");
    assert!(err.contains("does not allow users to set it"), "{err}");

    let c = Configs::new("").with_user("allow_fakeroot = false\n");
    let out = c.run(&t, &["exec", img, "true"]);
    assert_exit(&out, ExitKind::Config);
    assert!(
        stderr(&out).contains("only the site configuration"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}

#[test]
fn malformed_files_give_file_and_line() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    for (text, want) in [
        (
            "mount_home = true\nmount_tmp = \"yes\"\n",
            ":2: mount_tmp: expected a boolean",
        ),
        ("binds = [\n  \"/a\",\n  \"/b:/c:rx\",\n]\n", ":3: binds"),
        ("mount_home = tru\n", ":1:"),
        (
            "mount-home = true\n",
            ":1: mount-home: unknown key (did you mean mount_home?)",
        ),
        ("writable_tmpfs_size = \"12Q\"\n", ":1: writable_tmpfs_size"),
    ] {
        let c = Configs::new(text);
        let t = tag("malformed");
        let out = c.run(&t, &["exec", img.to_str().unwrap(), "true"]);
        assert_exit(&out, ExitKind::Config);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{}{want}", c.site().display())),
            "{text:?}: {err}"
        );
        assert_nothing_left(&t);
    }
}

#[test]
fn config_command_shows_values_and_origins() {
    let c = Configs::new("mount_tmp = false\nscratch = [\"/scratch/$USER\"]\n")
        .with_user("writable_tmpfs_size = \"1G\"\n");
    let out = c.run(&tag("config"), &["config"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let site = c.site().display().to_string();
    assert!(text.contains(&format!("# site file: {site}")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("mount_tmp = false") && l.contains(&format!("{site}:1"))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("mount_home = true") && l.ends_with("# default")),
        "{text}"
    );
    assert!(
        text.contains(&format!("-> /scratch/{}", user_name())),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("writable_tmpfs_size = \"1G\"") && l.contains("user.toml:1")),
        "{text}"
    );
}

/// `binds` entries that are empty or have an empty field: the file, line
/// and entry, exit 78, as `-B` refuses them with 64.
#[test]
fn empty_and_degenerate_bind_entries_are_refused() {
    for (entry, problem) in [
        ("", "SRC is empty"),
        (":", "SRC is empty"),
        ("::ro", "SRC is empty"),
        (":/mnt", "SRC is empty"),
        (
            "/tmp:",
            "DST after ':' is empty (write SRC alone to bind it at the same path)",
        ),
        ("/tmp::", "the mode must be ro or rw, found \"\""),
    ] {
        let c = Configs::new(&format!("mount_tmp = true\nbinds = [\"{entry}\"]\n"));
        let out = c.run(&tag("cfg-bind"), &["config"]);
        assert_exit(&out, ExitKind::Config);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.trim_end().ends_with(&format!(
                ": error: {}:2: binds: \"{entry}\": {problem}",
                c.site().display()
            )),
            "{entry:?}: {err}"
        );
    }
}

/// A configuration file over 1 MiB is refused, even one that is valid TOML
/// (issue 19, defect 6); one of exactly 1 MiB is read.
#[test]
fn an_oversized_configuration_file_is_refused() {
    const LIMIT: usize = 1 << 20;
    let mut text = "# padding\n".repeat(LIMIT / 10);
    text.push_str("mount_tmp = false\n");
    let c = Configs::new(&text);
    let t = tag("oversize");
    let out = c.run(&t, &["config"]);
    assert_exit(&out, ExitKind::Config);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            ": error: {}: larger than 1 MiB, too large for a configuration file",
            c.site().display()
        )),
        "{err}"
    );
    // The user file too.
    let c = Configs::new("").with_user(&text);
    let out = c.run(&t, &["config"]);
    assert_exit(&out, ExitKind::Config);
    assert!(
        stderr(&out).contains("user.toml: larger than 1 MiB"),
        "{}",
        stderr(&out)
    );
    // Exactly the limit is fine.
    let line = "mount_tmp = false\n";
    let mut text = "#".repeat(LIMIT - line.len() - 1);
    text.push('\n');
    text.push_str(line);
    assert_eq!(text.len(), LIMIT);
    let c = Configs::new(&text);
    let out = c.run(&t, &["config"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("mount_tmp = false")),
        "{}",
        stdout(&out)
    );
}
