//! `Bootstrap: debootstrap` built without root: the host's debootstrap
//! run as fakeroot (tests/setup-host.sh installs it), packages from
//! deb.debian.org. Checked with `rfake inspect` and `rfake exec` of the
//! result, and the MPI test image (tests/run.sh builds it from
//! images/mpi/mpi.def with images/mpi/build-mpi-image.sh, as the test user).

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::{Path, PathBuf};

fn scratch() -> tempfile::TempDir {
    scratch_in_home("debootstrap-")
}

fn debootstrap_on_host() -> bool {
    let found = ["/usr/sbin/debootstrap", "/sbin/debootstrap"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        missing("debootstrap (tests/setup-host.sh installs it)");
    }
    found
}

/// The package lines `dpkg-query` prints for `packages` in `image`.
fn installed(t: &str, image: &Path, packages: &[&str]) -> String {
    let mut args = vec![
        "exec",
        image.to_str().unwrap(),
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${db:Status-Abbrev}\\n",
    ];
    args.extend_from_slice(packages);
    let o = rfake(t, &args);
    assert_status(&o, 0);
    stdout(&o)
}

/// A Debian root from debootstrap with an `Include:`, `%post` and
/// `%runscript`, built by the unprivileged test user: the definition file
/// is in the image, the included package is installed (dpkg says so and
/// it runs), apt works, `/dev` has no stand-in files left, the root is
/// 0755 and root-owned; the second stage has a `/proc` (no warning).
#[test]
fn a_debootstrap_build() {
    let Some(_env) = setup() else { return };
    if !debootstrap_on_host() {
        return;
    }
    let d = scratch();
    let t = tag("deboot-build");
    let def = "Bootstrap: debootstrap\nOSVersion: bookworm\n\
               MirrorURL: http://deb.debian.org/debian\nInclude: less, file\n\n\
               %post\n    echo \"$(id -u) in post\" > /post.txt\n\n\
               %runscript\n    cat /post.txt\n";
    std::fs::write(d.path().join("deb.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["deb.sif", "deb.def"]);
    assert_status(&o, 0);
    // The second stage mounts what it wants in the step's own PID
    // namespace: no "Failure trying to run: chroot / mount -t proc ...".
    let err = stderr(&o);
    assert!(
        err.contains("I: Base system installed successfully.")
            && !err.contains("Failure trying to run"),
        "{err}"
    );
    let image = d.path().join("deb.sif");
    let img = image.to_str().unwrap();

    let singularity = rfake(
        &t,
        &["inspect", "--cat", "/.singularity.d/Singularity", img],
    );
    assert_status(&singularity, 0);
    assert!(
        stdout(&singularity).contains("Bootstrap: debootstrap"),
        "{}",
        stdout(&singularity)
    );
    let pkgs = installed(&t, &image, &["less", "file", "apt"]);
    for p in ["less ii", "file ii", "apt ii"] {
        assert!(pkgs.lines().any(|l| l.trim() == p), "{p}: {pkgs}");
    }
    // Left out as Apptainer leaves it out.
    let o = rfake(&t, &["exec", img, "dpkg-query", "-W", "udev"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = rfake(
        &t,
        &[
            "exec",
            img,
            "sh",
            "-c",
            "less --version | head -1; apt-get --version | head -1; cat /etc/debian_version",
        ],
    );
    assert_status(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("less ") && out.contains("apt ") && out.contains("12."),
        "{out}"
    );
    let run = rfake(&t, &["run", img]);
    assert_status(&run, 0);
    assert_eq!(stdout(&run), "0 in post\n");

    // /dev: debootstrap's directories and symlinks, none of rfake's
    // stand-ins; the root directory 0755 and everything root's.
    let list = rfake(&t, &["inspect", "--list", "/dev", img]);
    assert_status(&list, 0);
    let list = stdout(&list);
    assert!(
        list.contains("/dev/pts") && list.contains("/dev/fd -> /proc/self/fd"),
        "{list}"
    );
    assert!(!list.lines().any(|l| l.starts_with('-')), "{list}");
    let etc = rfake(&t, &["inspect", "--list", "/etc", img]);
    assert_status(&etc, 0);
    let etc = stdout(&etc);
    // The build host's name and resolver, which debootstrap copies, are
    // not in the image.
    for want in [
        "-rw-r--r--     0     0          6 /etc/debian_version",
        "-rw-r--r--     0     0         10 /etc/hostname",
        "-rw-r--r--     0     0          0 /etc/resolv.conf",
    ] {
        assert!(etc.lines().any(|l| l == want), "{want}: {etc}");
    }
    assert_build_left_nothing(d.path(), "nothing");
    assert_nothing_left(&t);
}

/// A header without `OSVersion:` names the file and the line; no
/// debootstrap is run.
#[test]
fn a_missing_osversion_names_file_and_line() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let t = tag("deboot-noversion");
    std::fs::write(
        d.path().join("x.def"),
        "# a comment\nBootstrap: debootstrap\nMirrorURL: http://deb.debian.org/debian\n",
    )
    .unwrap();
    let o = build_in(&t, d.path(), &["x.sif", "x.def"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    assert!(
        err.contains("x.def:2:") && err.contains("OSVersion"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_build_left_nothing(d.path(), "x.sif");
    assert_nothing_left(&t);
}

/// A mirror that does not answer: the build fails with debootstrap's last
/// lines and the stage, keeps the whole log beside OUT, and leaves
/// nothing else.
#[test]
fn a_bad_mirror_fails_with_debootstraps_last_lines() {
    let Some(_env) = setup() else { return };
    if !debootstrap_on_host() {
        return;
    }
    let d = scratch();
    let t = tag("deboot-mirror");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    std::fs::write(
        d.path().join("bad.def"),
        "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://127.0.0.1:9/debian\n",
    )
    .unwrap();
    let o = build_in(&t, d.path(), &["bad.sif", "bad.def"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(
            "bad.def:1: Bootstrap: debootstrap: debootstrap's first stage failed (exit status 1)"
        ) && last.contains("Failed getting release file"),
        "{err}"
    );
    assert!(last.contains("bad.def.debootstrap.log"), "{err}");
    let log = std::fs::read_to_string(d.path().join("bad.def.debootstrap.log")).unwrap();
    assert!(log.contains("127.0.0.1:9"), "{log}");
    assert_build_left_nothing(d.path(), "bad.sif");
    assert_nothing_left(&t);
}

/// Without the filter (`--fakeroot-mode=none`) the first stage fails as
/// the kernel says (unpacking chowns files to groups outside the map):
/// the filter is what makes debootstrap work unprivileged.
#[test]
fn debootstrap_needs_the_filter() {
    let Some(_env) = setup() else { return };
    if !debootstrap_on_host() {
        return;
    }
    let d = scratch();
    let t = tag("deboot-nofilter");
    std::fs::write(
        d.path().join("x.def"),
        "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://deb.debian.org/debian\n",
    )
    .unwrap();
    let o = build_in(&t, d.path(), &["--fakeroot-mode=none", "x.sif", "x.def"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains("x.def:1: Bootstrap: debootstrap: debootstrap's first stage failed"),
        "{err}"
    );
    assert_build_left_nothing(d.path(), "x.sif");
    assert_nothing_left(&t);
}

/// The MPI test image is built from images/mpi/mpi.def (Bootstrap:
/// debootstrap) by build-mpi-image.sh as the test user: its definition,
/// the Included MPI packages (upgraded from bookworm-security in %post),
/// the %files program and the %post clean-up are in it.
#[test]
fn the_mpi_image_comes_from_its_definition_file() {
    let Some(_env) = setup() else { return };
    let Some(image) = std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) else {
        missing("the MPI test image (images/mpi/build-mpi-image.sh), RFAKE_MPI_IMAGE unset");
        return;
    };
    if !image.is_file() {
        missing(&format!("the MPI test image {}", image.display()));
        return;
    }
    let t = tag("deboot-mpi");
    let img = image.to_str().unwrap();
    let def = rfake(
        &t,
        &["inspect", "--cat", "/.singularity.d/Singularity", img],
    );
    assert_status(&def, 0);
    let def = stdout(&def);
    assert!(def.contains("Bootstrap: debootstrap"), "{def}");
    assert!(
        def.contains("Include: openmpi-bin libopenmpi3 libpmix2 openmpi-common"),
        "{def}"
    );
    let pkgs = installed(
        &t,
        &image,
        &["openmpi-bin", "libopenmpi3", "libpmix2", "openmpi-common"],
    );
    assert_eq!(
        pkgs.lines()
            .filter(|l| l.trim_end().ends_with(" ii"))
            .count(),
        4,
        "{pkgs}"
    );
    // The host's PMIx build, from bookworm-security (build-mpi-image.sh
    // checks the host's against it).
    let o = rfake(
        &t,
        &[
            "exec",
            img,
            "dpkg-query",
            "-W",
            "-f",
            "${Version}",
            "libpmix2",
        ],
    );
    assert_eq!(
        stdout(&o),
        host("dpkg-query", &["-W", "-f", "${Version}", "libpmix2"])
    );
    let o = rfake(
        &t,
        &[
            "exec",
            img,
            "sh",
            "-c",
            "cat /etc/hostname; ls /var/lib/apt/lists | grep -c _ || true; test -x /opt/mpi-test/mpi-test && echo prog",
        ],
    );
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "localhost\n0\nprog\n");
    assert_nothing_left(&t);
}
