//! The mount sequences of the main plans, from the planner to the kernel
//! calls: `plan()` as a launch makes it, its steps carried out against the
//! recording [`Sys`](crate::container::sys::recorder::Recorder) in a temporary layout
//! whose host root is the real `/` (nothing is mounted: only recorded).
//! The joined and warm entries are tested beside their code
//! (`rendezvous::tests`, `warm::tests`).

use std::path::{Path, PathBuf};

use super::plan::tests::{no_lookup, who};
use super::settings::Settings;
use super::{Action, Request, plan};
use crate::container::rootfs::ServeError;
use crate::container::rootfs::{self, ImageMounter, Layout};
use crate::container::sys::Sys;
use crate::container::sys::recorder::Recorder;

/// A directory image (the demo root), and the user's home with a project
/// directory, in one temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    image: PathBuf,
    home: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("images/demo/rootfs"),
        &image,
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("proj")).unwrap();
    Setup { dir, image, home }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

struct NoImage;
impl ImageMounter for NoImage {
    fn prepare(&mut self, _: &dyn Sys) -> Result<(), ServeError> {
        Ok(())
    }
    fn attach(&mut self, _: &dyn Sys, _: &Path) -> Result<(), ServeError> {
        Ok(())
    }
}

/// Plan `req` and carry its steps out; the image's files stand in for the
/// mounted image (in `lower`) and for the root (the recorder mounts no
/// overlay). Returns the calls that change the container's mount tree:
/// attachments, file systems made, and what is created for mount points.
fn mounts(s: &Setup, req: &Request) -> Vec<String> {
    let p = plan(req, &who(&s.home), &Settings::default(), &no_lookup).unwrap();
    let base = s.dir.path().join("ns");
    let layout = Layout {
        oldroot: PathBuf::from("/"),
        ..Layout::under(&base)
    };
    for place in [&layout.staging, &layout.lower] {
        std::fs::create_dir_all(place).unwrap();
    }
    copy_tree(&s.image, &layout.newroot);
    copy_tree(&s.image.join("."), &layout.lower);
    let rec = Recorder::new(&base);
    rootfs::execute(&rec, &layout, &p.steps, &mut NoImage, &mut |_, _, _| {}).unwrap();
    let tmp = s.dir.path().display().to_string();
    rec.take()
        .into_iter()
        .filter(|c| {
            [
                "attach",
                "fsmount",
                "mkdirat",
                "createat",
                "mount rfake-",
                "setattr",
            ]
            .iter()
            .any(|k| c.starts_with(k))
        })
        .map(|c| c.replace(&tmp, "$TMP"))
        .collect()
}

fn request(s: &Setup) -> Request {
    Request {
        image: s.image.clone(),
        action: Some(Action::Exec(vec!["true".into()])),
        ..Request::default()
    }
}

/// What the default binds, the home and the identity files attach: the
/// directory image read-only, then each bind with its flags.
#[test]
fn plain_launch() {
    let s = setup();
    let calls = mounts(&s, &request(&s));
    let attached: Vec<&String> = calls.iter().filter(|c| c.starts_with("attach")).collect();
    let want = [
        "attach -> /lower",
        "attach -> /newroot/proc",
        "attach -> /newroot/sys",
        "attach -> /newroot/dev",
        "attach -> /newroot/tmp",
        "attach -> /newroot/etc/resolv.conf",
        "attach -> /newroot/etc/hosts",
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(attached.get(i).map(|c| c.as_str()), Some(*w), "{calls:#?}");
    }
    assert!(
        attached.contains(&&"attach -> /newroot$TMP/home".to_string()),
        "the home is bound: {calls:#?}"
    );
    assert!(
        attached.ends_with(&[
            &"attach -> /newroot/etc/passwd".to_string(),
            &"attach -> /newroot/etc/group".to_string()
        ]),
        "{calls:#?}"
    );
    // The directory image: read-only, recursively, before it is attached.
    let lower = calls.iter().position(|c| c == "attach -> /lower").unwrap();
    assert_eq!(
        calls[lower - 1],
        "setattr <mount> +ro,nosuid,nodev rec=true"
    );
    // /dev keeps its devices; every other bind gets nodev.
    let dev = calls
        .iter()
        .position(|c| c == "attach -> /newroot/dev")
        .unwrap();
    assert_eq!(calls[dev - 1], "setattr <mount> +nosuid rec=true");
    let proc = calls
        .iter()
        .position(|c| c == "attach -> /newroot/proc")
        .unwrap();
    assert_eq!(calls[proc - 1], "setattr <mount> +nosuid,nodev rec=true");
    assert!(
        !calls.iter().any(|c| c.starts_with("fsmount tmpfs")),
        "{calls:#?}"
    );
}

/// `--contain`: private tmpfs mounts on /tmp, /var/tmp and the home
/// instead of binds.
#[test]
fn contain_makes_tmpfs_instead_of_binds() {
    let s = setup();
    let mut req = request(&s);
    req.contain = true;
    let calls = mounts(&s, &req);
    let tmp = calls
        .iter()
        .position(|c| c == "attach -> /newroot/tmp")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(calls[tmp - 1].starts_with("fsmount tmpfs"), "{calls:#?}");
    let home = calls
        .iter()
        .position(|c| c == "attach -> /newroot$TMP/home")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(calls[home - 1].starts_with("fsmount tmpfs"), "{calls:#?}");
    let tmpfs: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("fsmount tmpfs"))
        .collect();
    assert_eq!(tmpfs.len(), 3, "{calls:#?}");
    assert!(tmpfs[0].contains("\"1777\""), "{calls:#?}");
    assert!(tmpfs[1].contains("\"1777\""), "{calls:#?}");
    assert!(tmpfs[2].contains("\"700\""), "{calls:#?}");
    assert!(
        calls.iter().any(|c| c == "attach -> /newroot/var/tmp"),
        "{calls:#?}"
    );
    // The home's tmpfs is attached where the home is, created in the
    // overlay (the image has no such directory).
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mkdirat") && c.ends_with(" 755"))
    );
}

/// `--keep-id`: the same mount tree (the inner user namespace comes after
/// it, see `namespace::tests`).
#[test]
fn keep_id_has_the_same_mounts() {
    let s = setup();
    let mut req = request(&s);
    req.keep_id = true;
    let plain = setup();
    let want: Vec<String> = mounts(&plain, &request(&plain));
    assert_eq!(mounts(&s, &req), want);
}

/// A destination missing from the image is made in the overlay's upper
/// layer before the overlay is mounted, then the root is sealed.
#[test]
fn missing_destination_goes_through_the_overlay() {
    let s = setup();
    let mut req = request(&s);
    req.binds = vec!["/tmp:/mnt/scratch/x".into()];
    let calls = mounts(&s, &req);
    let upper = calls
        .iter()
        .position(|c| c == "mkdirat /overlay/upper/mnt 755")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    let overlay = calls
        .iter()
        .position(|c| c.starts_with("mount rfake-root"))
        .unwrap();
    assert!(upper < overlay, "{calls:#?}");
    let attach = calls
        .iter()
        .position(|c| c == "attach -> /newroot/mnt/scratch/x")
        .unwrap();
    assert!(overlay < attach);
    assert_eq!(
        calls.last().map(String::as_str),
        Some("setattr /newroot +ro rec=false")
    );
}
