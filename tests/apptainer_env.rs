//! Apptainer's environment variables, end to end as an unprivileged user:
//! `APPTAINERENV_`/`SINGULARITYENV_` (set inside, `PREPEND_PATH`,
//! `APPEND_PATH`, evaluation), the variables rfake sets inside, the
//! `APPTAINER_<FLAG>` table and its precedence (`APPTAINER_` over
//! `SINGULARITY_`, `RFAKE_` over both, the command line over all),
//! `APPTAINER_CACHEDIR`, `APPTAINER_TMPDIR`, and what `rfake config` and
//! `-v` say about where a value came from.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::Path;
use std::process::{Output, Stdio};

/// `sh -c SCRIPT` in the demo image, with host variables and options.
fn run(tag_name: &str, vars: &[(&str, &str)], opts: &[&str], script: &str) -> Output {
    let Some(env) = setup() else {
        panic!("checked by the caller")
    };
    let img = env.image("demo.sqfs");
    command(&tag(tag_name))
        .envs(vars.iter().copied())
        .arg("exec")
        .args(opts)
        .args([img.to_str().unwrap(), "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The payload's one line of output, the run asserted successful.
#[track_caller]
fn line(out: &Output) -> String {
    assert_status(out, 0);
    stdout(out).trim_end_matches('\n').to_string()
}

/// Host variables, options, the expected output.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

#[test]
fn apptainerenv_sets_a_variable_with_rfake_and_flags_winning() {
    if setup().is_none() {
        return;
    }
    let show = "echo \"$FOO\"";
    let cases: &[Case] = &[
        (&[("SINGULARITYENV_FOO", "s")], &[], "s"),
        (&[("APPTAINERENV_FOO", "a")], &[], "a"),
        // Both: APPTAINERENV_ wins (with a warning when they differ).
        (
            &[("SINGULARITYENV_FOO", "s"), ("APPTAINERENV_FOO", "a")],
            &[],
            "a",
        ),
        // rfake's own name wins over both.
        (
            &[("APPTAINERENV_FOO", "a"), ("RFAKE_ENV_FOO", "r")],
            &[],
            "r",
        ),
        // And the command line over everything.
        (
            &[("APPTAINERENV_FOO", "a"), ("RFAKE_ENV_FOO", "r")],
            &["--env", "FOO=cli"],
            "cli",
        ),
        // The host's own FOO is overridden too.
        (&[("FOO", "host"), ("APPTAINERENV_FOO", "a")], &[], "a"),
    ];
    for (vars, opts, want) in cases {
        let out = run("appenv", vars, opts, show);
        assert_eq!(line(&out), *want, "{vars:?} {opts:?}");
    }
    let out = run(
        "appenv-warn",
        &[("SINGULARITYENV_FOO", "s"), ("APPTAINERENV_FOO", "a")],
        &[],
        show,
    );
    assert!(
        stderr(&out).contains(
            "SINGULARITYENV_FOO and APPTAINERENV_FOO have different values, using APPTAINERENV_FOO"
        ),
        "{}",
        stderr(&out)
    );
    // HOME cannot be set this way (Apptainer refuses it too).
    let out = run(
        "appenv-home",
        &[("APPTAINERENV_HOME", "/elsewhere")],
        &[],
        "echo $HOME",
    );
    assert_eq!(line(&out), home().to_str().unwrap());
    assert!(
        stderr(&out).contains("APPTAINERENV_HOME: setting HOME this way is not permitted"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn apptainerenv_values_are_evaluated_after_the_image_environment() {
    if setup().is_none() {
        return;
    }
    // The demo image's env script exports RFAKE_DEMO=1: the value sees it.
    let out = run(
        "appenv-eval",
        &[
            ("APPTAINERENV_X", "$RFAKE_DEMO-${RFAKE_DEMO}x \\$lit"),
            ("RFAKE_ENV_Y", "$RFAKE_DEMO"),
        ],
        &[],
        "echo \"$X|$Y\"",
    );
    // RFAKE_ENV_ values stay literal.
    assert_eq!(line(&out), "1-1x $lit|$RFAKE_DEMO");
}

#[test]
fn prepend_append_and_path() {
    if setup().is_none() {
        return;
    }
    let out = run(
        "appenv-path",
        &[
            ("APPTAINERENV_PREPEND_PATH", "/pre"),
            ("SINGULARITYENV_APPEND_PATH", "/app"),
        ],
        &[],
        "echo $PATH",
    );
    let path = line(&out);
    assert!(
        path.starts_with("/pre:/usr/local/bin:/usr/bin:/bin:") && path.contains(":/app"),
        "{path}"
    );
    // Through --env as well, as in Apptainer.
    let out = run(
        "appenv-path",
        &[],
        &["--env", "PREPEND_PATH=/cli"],
        "echo $PATH",
    );
    assert!(
        line(&out).starts_with("/cli:/usr/local/bin:"),
        "{}",
        stdout(&out)
    );
    // PATH itself replaces (rfake then completes it with the standard
    // directories), and wins over PREPEND_PATH.
    let out = run(
        "appenv-path",
        &[
            ("APPTAINERENV_PATH", "/only"),
            ("APPTAINERENV_PREPEND_PATH", "/pre"),
        ],
        &[],
        "echo $PATH",
    );
    assert_eq!(
        line(&out),
        "/only:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn variables_set_inside_and_apptainer_ones_not_passed() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let out = command(&tag("appenv-inside"))
        .env("APPTAINER_BIND", "/tmp")
        .env("SINGULARITY_FOO", "x")
        .env("APPTAINERENV_BAR", "bar")
        .env("APPTAINER_CONTAINER", "/stale.sif")
        .args([
            "exec",
            img.to_str().unwrap(),
            "sh",
            "-c",
            "env | grep -E '^(APPTAINER|SINGULARITY|RFAKE_(NAME|CONTAINER)|BAR|PS1)' | sort",
        ])
        .output()
        .unwrap();
    assert_status(&out, 0);
    let canonical = std::fs::canonicalize(&img).unwrap();
    let c = canonical.to_str().unwrap();
    let want = format!(
        "APPTAINER_CONTAINER={c}\nAPPTAINER_ENVIRONMENT=/.singularity.d/env/91-environment.sh\n\
         APPTAINER_NAME=demo.sqfs\nBAR=bar\nPS1=rfake> \nRFAKE_CONTAINER={c}\nRFAKE_NAME=demo.sqfs\n\
         SINGULARITY_CONTAINER={c}\nSINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh\n\
         SINGULARITY_NAME=demo.sqfs\n"
    );
    assert_eq!(stdout(&out), want);
    // A prompt set by the user stays (Apptainer keeps the image's too).
    let out = run(
        "appenv-ps1",
        &[("APPTAINERENV_PS1", "job> ")],
        &[],
        "echo \"$PS1\"",
    );
    assert_eq!(line(&out), "job> ");
}

/// Directories `a`, `b`, ... each holding a file `which` naming it.
fn marked_dirs(names: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for n in names {
        let dir = d.path().join(n);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("which"), n).unwrap();
    }
    d
}

#[test]
fn bind_variables_and_their_precedence() {
    if setup().is_none() {
        return;
    }
    let d = marked_dirs(&["a", "s", "p", "r", "c"]);
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let at = |n: &str, dst: &str| format!("{}:{dst}", p(n));
    // Each variable binds; APPTAINER_BIND and APPTAINER_BINDPATH both count.
    let out = run(
        "appbind",
        &[
            ("APPTAINER_BIND", &at("a", "/mnt/a")),
            (
                "SINGULARITY_BINDPATH",
                &format!("{},{}", at("p", "/mnt/p"), at("s", "/mnt/s")),
            ),
        ],
        &[],
        "cat /mnt/a/which /mnt/p/which /mnt/s/which",
    );
    assert_eq!(line(&out), "aps");
    // SINGULARITY_BIND is read only without APPTAINER_BIND.
    let out = run(
        "appbind",
        &[("SINGULARITY_BIND", &at("s", "/mnt/x"))],
        &[],
        "cat /mnt/x/which",
    );
    assert_eq!(line(&out), "s");
    let out = run(
        "appbind",
        &[
            ("SINGULARITY_BIND", &at("s", "/mnt/x")),
            ("APPTAINER_BIND", &at("a", "/mnt/x")),
        ],
        &[],
        "cat /mnt/x/which",
    );
    assert_eq!(line(&out), "a");
    // At one destination: RFAKE_BIND over APPTAINER_BIND, --bind over both.
    let vars = [
        ("APPTAINER_BIND", at("a", "/mnt/x")),
        ("RFAKE_BIND", at("r", "/mnt/x")),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run("appbind", &vars, &[], "cat /mnt/x/which");
    assert_eq!(line(&out), "r");
    let out = run(
        "appbind",
        &vars,
        &["-B", &at("c", "/mnt/x")],
        "cat /mnt/x/which",
    );
    assert_eq!(line(&out), "c");
    // -v says where each came from; a bad one names its variable.
    let out = run(
        "appbind",
        &[("APPTAINER_BIND", &at("a", "/mnt/a"))],
        &["--dry-run"],
        "true",
    );
    assert!(
        stdout(&out).contains(&format!(
            "bind {} -> /mnt/a (nosuid,nodev) [APPTAINER_BIND]",
            p("a")
        )),
        "{}",
        stdout(&out)
    );
    let out = run(
        "appbind",
        &[("APPTAINER_BINDPATH", "relative/dir")],
        &[],
        "true",
    );
    assert_exit(&out, ExitKind::Usage);
    assert!(
        stderr(&out).contains("APPTAINER_BINDPATH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn flag_variables_and_the_command_line_winning() {
    if setup().is_none() {
        return;
    }
    // --pwd / --cwd: the variable, unless the command line says.
    let out = run("appflag", &[("APPTAINER_PWD", "/etc")], &[], "pwd");
    assert_eq!(line(&out), "/etc");
    let out = run("appflag", &[("SINGULARITY_CWD", "/usr")], &[], "pwd");
    assert_eq!(line(&out), "/usr");
    let out = run(
        "appflag",
        &[("APPTAINER_PWD", "/etc")],
        &["--pwd", "/usr"],
        "pwd",
    );
    assert_eq!(line(&out), "/usr");
    // --cleanenv: the host's FOO is gone.
    let out = run(
        "appflag",
        &[("FOO", "host"), ("SINGULARITY_CLEANENV", "1")],
        &[],
        "echo \"[$FOO]\"",
    );
    assert_eq!(line(&out), "[]");
    let out = run(
        "appflag",
        &[
            ("FOO", "host"),
            ("APPTAINER_CLEANENV", "false"),
            ("SINGULARITY_CLEANENV", "1"),
        ],
        &[],
        "echo \"[$FOO]\"",
    );
    assert_eq!(
        line(&out),
        "[host]",
        "APPTAINER_CLEANENV=false wins over SINGULARITY_"
    );
    // --contain: the host's /tmp is not there.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("mark"), "x").unwrap();
    let probe = format!(
        "test -e {}/mark && echo host || echo private",
        d.path().display()
    );
    assert_eq!(line(&run("appflag", &[], &[], &probe)), "host");
    assert_eq!(
        line(&run("appflag", &[("APPTAINER_CONTAIN", "1")], &[], &probe)),
        "private"
    );
    assert_eq!(
        line(&run(
            "appflag",
            &[("APPTAINER_CONTAINALL", "true"), ("FOO", "h")],
            &[],
            &format!("{probe}; echo \"[$FOO]\"")
        )),
        "private\n[]"
    );
    // --writable-tmpfs: the root takes a new file.
    let write = "touch /newfile 2>/dev/null && echo wrote || echo read-only";
    assert_eq!(line(&run("appflag", &[], &[], write)), "read-only");
    assert_eq!(
        line(&run(
            "appflag",
            &[("APPTAINER_WRITABLE_TMPFS", "1")],
            &[],
            write
        )),
        "wrote"
    );
    // --no-home.
    let has_home = "grep -q \" $HOME \" /proc/self/mountinfo && echo bound || echo none";
    assert_eq!(line(&run("appflag", &[], &[], has_home)), "bound");
    assert_eq!(
        line(&run(
            "appflag",
            &[("APPTAINER_NO_HOME", "1")],
            &[],
            has_home
        )),
        "none"
    );
    // --home SRC: the variable's directory is the home.
    let out = run(
        "appflag",
        &[("APPTAINER_HOME", d.path().to_str().unwrap())],
        &[],
        "echo $HOME; cat $HOME/mark",
    );
    assert_eq!(line(&out), format!("{}\nx", d.path().display()));
    // --env-file.
    let file = d.path().join("vars.env");
    std::fs::write(&file, "FROMFILE=yes\n").unwrap();
    let out = run(
        "appflag",
        &[("APPTAINER_ENV_FILE", file.to_str().unwrap())],
        &[],
        "echo $FROMFILE",
    );
    assert_eq!(line(&out), "yes");
    // -v names the variable.
    let out = command(&tag("appflag"))
        .env("APPTAINER_CONTAIN", "1")
        .args([
            "-v",
            "exec",
            "--dry-run",
            setup().unwrap().image("demo.sqfs").to_str().unwrap(),
            "true",
        ])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert!(
        stderr(&out).contains("--contain (from APPTAINER_CONTAIN)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_and_unsupported_flag_variables() {
    if setup().is_none() {
        return;
    }
    let out = run("appbad", &[("APPTAINER_CONTAIN", "yes")], &[], "true");
    assert_exit(&out, ExitKind::Usage);
    assert!(
        stderr(&out).contains("APPTAINER_CONTAIN=yes: not a boolean (1, t, true or 0, f, false)"),
        "{}",
        stderr(&out)
    );
    // A flag rfake does not have: a warning with the advice, then it runs.
    let out = run("appbad", &[("APPTAINER_NVCCLI", "1")], &[], "echo ran");
    assert_eq!(line(&out), "ran");
    assert!(
        stderr(&out).contains("APPTAINER_NVCCLI is set, but rfake has no --nvccli:"),
        "{}",
        stderr(&out)
    );
    // APPTAINER_WRITABLE is --writable: refused for an image without an
    // overlay partition to write into.
    let out = run("appbad", &[("APPTAINER_WRITABLE", "1")], &[], "echo ran");
    assert_exit(&out, ExitKind::Refused);
    assert!(
        stderr(&out).contains("--writable: ") && stderr(&out).contains("has no overlay partition"),
        "{}",
        stderr(&out)
    );
    // Empty counts as unset, as in Apptainer.
    let out = run("appbad", &[("APPTAINER_CONTAIN", "")], &[], "echo ran");
    assert_eq!(line(&out), "ran");
}

#[test]
fn cachedir_and_config_origins() {
    if setup().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = d.path().to_str().unwrap();
    let config = |vars: &[(&str, &str)]| {
        let out = command(&tag("appconfig"))
            .envs(vars.iter().copied())
            .arg("config")
            .output()
            .unwrap();
        assert_status(&out, 0);
        stdout(&out)
    };
    let text = config(&[
        ("SINGULARITY_CACHEDIR", "/elsewhere"),
        ("APPTAINER_CACHEDIR", c),
        ("APPTAINER_BIND", "/data"),
        ("APPTAINER_CONTAIN", "1"),
        ("APPTAINERENV_OMP_NUM_THREADS", "4"),
    ]);
    for want in [
        "# binds: /data (APPTAINER_BIND)\n".to_string(),
        "# --contain (APPTAINER_CONTAIN=1)\n".to_string(),
        format!("# cache_dir: {c}/rfake (APPTAINER_CACHEDIR)\n"),
        "# inside: OMP_NUM_THREADS=4 (APPTAINERENV_OMP_NUM_THREADS)\n".to_string(),
    ] {
        assert!(text.contains(&want), "{want} in:\n{text}");
    }
    // The output is still TOML: the additions are comments.
    assert!(
        text.lines()
            .skip_while(|l| !l.starts_with("# environment"))
            .all(|l| l.starts_with('#')),
        "{text}"
    );
    let text = config(&[("APPTAINER_CACHEDIR", c), ("RFAKE_CACHEDIR", "/mine")]);
    assert!(
        text.contains("# cache_dir: /mine (RFAKE_CACHEDIR)\n"),
        "{text}"
    );
    // The cache really is there: `cache list` on it creates it.
    let out = command(&tag("appconfig"))
        .env("APPTAINER_CACHEDIR", c)
        .args(["cache", "list"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert!(
        Path::new(c).join("rfake").is_dir() || stdout(&out).contains(&format!("{c}/rfake")),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn tmpdir_for_builds() {
    let Some(env) = setup() else { return };
    let d = tempfile::tempdir().unwrap();
    let def = d.path().join("x.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%post\n    echo built > /built\n",
            env.image("demo.sqfs").display()
        ),
    )
    .unwrap();
    let build = |vars: &[(&str, &str)], out: &str| {
        command(&tag("apptmp"))
            .envs(vars.iter().copied())
            .args([
                "build",
                d.path().join(out).to_str().unwrap(),
                def.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // A missing APPTAINER_TMPDIR is named: it is where the build works.
    let out = build(&[("APPTAINER_TMPDIR", "/nonexistent/apptmp")], "a.sqfs");
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/apptmp"),
        "{}",
        stderr(&out)
    );
    // RFAKE_TMPDIR wins over it.
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = build(
        &[
            ("APPTAINER_TMPDIR", "/nonexistent/apptmp"),
            ("RFAKE_TMPDIR", work.to_str().unwrap()),
        ],
        "b.sqfs",
    );
    assert_status(&out, 0);
    assert!(d.path().join("b.sqfs").is_file());
}

/// The variables of the namespace and containment flags: a job script
/// that sets `APPTAINER_CONTAINALL` or `APPTAINER_UNSHARE_PID` gets the
/// namespaces, and `APPTAINER_HOSTNAME` the name; the command line wins.
#[test]
fn namespace_flag_variables() {
    if setup().is_none() {
        return;
    }
    let out = run(
        "appns",
        &[("APPTAINER_CONTAINALL", "1")],
        &[],
        "echo $$ ${CONTAINALL_PROBE:-clean}",
    );
    assert_eq!(line(&out), "2 clean");
    let out = run(
        "appns",
        &[("SINGULARITY_UNSHARE_PID", "true")],
        &[],
        "echo $$",
    );
    assert_eq!(line(&out), "2");
    let out = run(
        "appns",
        &[("APPTAINER_HOSTNAME", "from-env")],
        &[],
        "cat /proc/sys/kernel/hostname",
    );
    assert_eq!(line(&out), "from-env");
    let out = run(
        "appns",
        &[("APPTAINER_HOSTNAME", "from-env")],
        &["--hostname", "from-flag"],
        "cat /proc/sys/kernel/hostname",
    );
    assert_eq!(line(&out), "from-flag");
    let out = run("appns", &[("APPTAINER_APP", "foo")], &[], "true");
    assert_exit(&out, ExitKind::Refused);
    assert_nothing_left(&tag("appns"));
}
