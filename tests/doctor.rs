//! `rfake doctor --image`: the image's MPI stack against this host's, and
//! the same check under a launcher, once per node and join key.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn mpi_image() -> Option<PathBuf> {
    match std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            missing("the MPI test image (images/mpi/build-mpi-image.sh), RFAKE_MPI_IMAGE unset");
            None
        }
    }
}

/// The host's upstream version of a Debian package, if installed.
fn host_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || v.is_empty() {
        return None;
    }
    let v = v.split_once(':').map_or(v.as_str(), |(_, v)| v);
    Some(v.rsplit_once('-').map_or(v, |(v, _)| v).to_string())
}

/// A directory image: the demo root with a package database listing
/// `packages` (name, version).
fn fake_image(env: &Env, packages: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("doctor-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(env.image("demo"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    let text: Vec<String> = packages
        .iter()
        .map(|(p, v)| format!("Package: {p}\nStatus: install ok installed\nVersion: {v}\n"))
        .collect();
    std::fs::write(root.join("var/lib/dpkg/status"), text.join("\n")).unwrap();
    dir
}

fn root(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("root")
}

fn doctor(t: &str, image: &Path) -> Output {
    rfake(t, &["doctor", "--image", image.to_str().unwrap()])
}

/// The row of `name` in the table: (image column, host column).
fn row(out: &str, name: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{name:<11}")))
        .unwrap_or_else(|| panic!("no {name} row in\n{out}"));
    let rest = &line[11..];
    (rest[..28].trim().to_string(), rest[28..].trim().to_string())
}

#[test]
fn the_mpi_image_against_this_host() {
    let Some(image) = mpi_image() else { return };
    let t = tag("doctor-mpi");
    let out = doctor(&t, &image);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("Debian GNU/Linux 12"), "{text}");
    assert_eq!(row(&text, "Open MPI").0, "4.1.4", "{text}");
    assert_eq!(row(&text, "PMIx").0, "4.2.2", "{text}");
    assert_eq!(row(&text, "MPICH").0, "none", "{text}");
    assert_eq!(row(&text, "glibc").0, "2.36", "{text}");
    // The host column is the host's package database.
    for (name, package) in [
        ("Open MPI", "libopenmpi3"),
        ("PMIx", "libpmix2"),
        ("glibc", "libc6"),
    ] {
        let want = host_version(package).unwrap_or_else(|| "none".into());
        assert_eq!(row(&text, name).1, want, "{name}\n{text}");
    }
    // This host is Debian 12 with Open MPI 4.1 and PMIx (tests/setup-host.sh).
    if host_version("libopenmpi3").is_some_and(|v| v.starts_with("4.1."))
        && host_version("libpmix2").is_some()
    {
        assert!(text.contains("\nhybrid:    works\n"), "{text}");
        assert!(text.contains("the same 4.1 series"), "{text}");
        assert!(text.contains("\nbind:      works\n"), "{text}");
    } else {
        missing("Open MPI 4.1 and PMIx on the host (tests/setup-host.sh)");
    }
    assert_nothing_left(&t);
}

#[test]
fn a_newer_open_mpi_on_an_older_glibc_says_why() {
    let Some(env) = setup() else { return };
    if host_version("libopenmpi3").is_none() || host_version("libpmix2").is_none() {
        return missing("Open MPI and PMIx on the host (tests/setup-host.sh)");
    }
    let dir = fake_image(
        &env,
        &[
            ("libc6", "2.31-13"),
            ("libopenmpi40", "5.0.3-1"),
            ("libpmix2t64", "5.0.1-4"),
        ],
    );
    let t = tag("doctor-ompi5");
    let out = doctor(&t, &root(&dir));
    // The hybrid model may work (srun --mpi=pmix): not an error.
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("\nhybrid:    MAY FAIL\n"), "{text}");
    assert!(
        text.contains("cannot start ranks of the image's Open MPI 5.0.3"),
        "{text}"
    );
    assert!(
        text.contains("serves the image's PMIx 5.0.1 client"),
        "{text}"
    );
    assert!(text.contains("\nbind:      FAILS\n"), "{text}");
    assert!(
        text.contains("glibc 2.31 in the image is older than the host's"),
        "{text}"
    );
}

#[test]
fn neither_model_is_exit_65() {
    let Some(env) = setup() else { return };
    if host_version("libopenmpi3").is_none() || host_version("libpmix2").is_none() {
        return missing("Open MPI and PMIx on the host (tests/setup-host.sh)");
    }
    let dir = fake_image(
        &env,
        &[
            ("libc6", "2.27-3ubuntu1"),
            ("libopenmpi2", "2.1.1-8"),
            ("libpmix1", "1.2.5-1"),
        ],
    );
    let t = tag("doctor-old");
    let out = doctor(&t, &root(&dir));
    assert_exit(&out, ExitKind::BadImage);
    let text = stdout(&out);
    assert!(text.contains("\nhybrid:    FAILS\n"), "{text}");
    assert!(
        text.contains("PMIx 1.x talks to no other version"),
        "{text}"
    );
    assert!(text.contains("the ABI libmpi.so.20"), "{text}");
}

#[test]
fn an_image_without_mpi_and_a_missing_image() {
    let Some(env) = setup() else { return };
    let t = tag("doctor-none");
    let out = doctor(&t, &env.image("demo.sqfs"));
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("the image has no MPI library"),
        "{}",
        stdout(&out)
    );
    let out = doctor(&t, Path::new("/nonexistent/x.sqfs"));
    assert_exit(&out, ExitKind::NoInput);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/x.sqfs"), "{err}");
}

/// The warnings of `outs` (not the copies repeated at exit).
fn mpi_warnings(outs: &[Output]) -> usize {
    outs.iter()
        .map(|o| {
            stderr(o)
                .lines()
                .filter(|l| l.contains("warning: MPI: "))
                .count()
        })
        .sum()
}

/// Four ranks of one "step" (one join key) started together, each lasting
/// long enough for the others to join its container (as ranks do).
fn ranks(t: &str, key: &str, image: &Path) -> Vec<Output> {
    let children: Vec<_> = (0..4)
        .map(|_| {
            command(t)
                .args(["exec", "--join-key", key, image.to_str().unwrap()])
                .args(["sleep", "1"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn under_a_launcher_one_warning_per_node_and_step() {
    let Some(env) = setup() else { return };
    if host_version("libopenmpi3").is_none() {
        return missing("Open MPI on the host (tests/setup-host.sh)");
    }
    let dir = fake_image(&env, &[("libc6", "2.36-9"), ("libopenmpi40", "5.0.3-1")]);
    let image = root(&dir);
    let t = tag("doctor-once");
    let key = format!("doctor-{}", std::process::id());
    let first = ranks(&t, &key, &image);
    for o in &first {
        assert_status(o, 0);
    }
    assert_eq!(mpi_warnings(&first), 1, "{first:?}");
    let warning = first
        .iter()
        .flat_map(|o| stderr(o).lines().map(str::to_string).collect::<Vec<_>>())
        .find(|l| l.contains("warning: MPI: "))
        .unwrap();
    assert!(
        warning.contains("the hybrid model may not work")
            && warning.contains("rfake doctor --image"),
        "{warning}"
    );
    // Another step: one warning again.
    assert_eq!(mpi_warnings(&ranks(&t, &format!("{key}-2"), &image)), 1);
    // With a bind profile the bind model is judged: the host's Open MPI
    // is older than the image's.
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        "warm_linger = 0\n[profiles.p]\nenv = { A = \"1\" }\n",
    )
    .unwrap();
    let out = command(&t)
        .env("RFAKE_CONFIG", &site)
        .args(["exec", "--profile", "p", "--join-key", &format!("{key}-3")])
        .arg(&image)
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_status(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("warning: MPI: the bind model may not work")
            && err.contains("the host's Open MPI 4.1"),
        "{err}"
    );
    // Not joining (no launcher): no check.
    let out = rfake(&t, &["exec", image.to_str().unwrap(), "true"]);
    assert_status(&out, 0);
    assert_eq!(mpi_warnings(&[out]), 0);
    assert_nothing_left(&t);
}

#[test]
fn the_mpi_image_under_a_launcher_is_quiet() {
    let Some(image) = mpi_image() else { return };
    if setup().is_none() {
        return;
    }
    let t = tag("doctor-quiet");
    let outs = ranks(&t, &format!("quiet-{}", std::process::id()), &image);
    for o in &outs {
        assert_status(o, 0);
    }
    if host_version("libopenmpi3").is_some_and(|v| v.starts_with("4.1.")) {
        assert_eq!(mpi_warnings(&outs), 0, "{outs:?}");
    }
    assert_nothing_left(&t);
}

#[test]
fn a_registry_reference_is_pulled_then_read() {
    let Some(registry) = std::env::var_os("RFAKE_TEST_REGISTRY") else {
        return missing("the test registry (tests/registry/setup.sh), RFAKE_TEST_REGISTRY unset");
    };
    if setup().is_none() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("doctor-reg-")
        .tempdir()
        .unwrap();
    let t = tag("doctor-registry");
    let reference = format!("docker://{}/demo:1", registry.to_string_lossy());
    let out = command(&t)
        .env("RFAKE_CACHEDIR", dir.path().join("cache"))
        .args(["doctor", "-q", "--image", &reference])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("the image has no MPI library"), "{text}");
    // Offline and not cached: the pull's own error and code.
    let out = command(&t)
        .env("RFAKE_CACHEDIR", dir.path().join("empty"))
        .args(["doctor", "--offline", "--image", &reference])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, ExitKind::NoInput);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_nothing_left(&t);
}
