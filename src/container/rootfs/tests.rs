//! The mount sequences, recorded: file operations happen for real in a
//! temporary [`Layout`], mounts are only written down, so the tests run
//! without privileges (the way youki tests its mount calls).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::ServeError;
use super::*;
use crate::container::sys::recorder::{Recorder, dev_null};

struct FakeMounter;
impl ImageMounter for FakeMounter {
    fn prepare(&mut self, sys: &dyn Sys) -> Result<(), ServeError> {
        sys.mount_detached("fuse", &[], MountAttrs::default())?;
        Ok(())
    }
    fn attach(&mut self, sys: &dyn Sys, target: &Path) -> Result<(), ServeError> {
        sys.move_mount(&dev_null(), target)?;
        Ok(())
    }
}

/// A temporary layout: the staging places exist, `image` files are in
/// `lower`, `host` files in `oldroot`. Directories end in `/`; `a -> b`
/// is a symlink.
struct Fixture {
    dir: tempfile::TempDir,
    layout: Layout,
}

fn fixture(image: &[&str], host: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    for place in [
        &layout.staging,
        &layout.newroot,
        &layout.lower,
        &layout.oldroot,
    ] {
        std::fs::create_dir_all(place).unwrap();
    }
    let make = |root: &Path, entries: &[&str]| {
        for entry in entries {
            let entry = entry.trim_start_matches('/');
            if let Some((link, target)) = entry.split_once(" -> ") {
                let link = root.join(link);
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                symlink(target, link).unwrap();
            } else if let Some(d) = entry.strip_suffix('/') {
                std::fs::create_dir_all(root.join(d)).unwrap();
            } else {
                let f = root.join(entry);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(f, "x\n").unwrap();
            }
        }
    };
    make(&layout.lower, image);
    make(&layout.oldroot, host);
    Fixture { dir, layout }
}

impl Fixture {
    fn run(&self, steps: &[Step]) -> (Vec<String>, Result<(), RootfsError>) {
        let rec = Recorder::new(self.dir.path());
        let result = execute(
            &rec,
            &self.layout,
            steps,
            &mut FakeMounter,
            &mut |_, _, _| {},
        );
        (rec.take(), result)
    }

    /// What `lower` holds becomes the root: the recorder does not mount,
    /// so a test that needs the image inside the root copies it there.
    fn image_is_root(&self) {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", self.layout.lower.display()))
            .arg(&self.layout.newroot)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn bind(src: &str, dst: &str) -> Bind {
    Bind {
        src: src.into(),
        dst: dst.into(),
        kind: BindKind::AsSource,
        readonly: false,
        allow_devices: false,
        optional: false,
        create: true,
        origin: "test".into(),
    }
}

const AS_IT_IS: Step = Step::Root(RootLayer {
    writable_size: None,
    overlays: crate::overlay::Overlays {
        readonly: Vec::new(),
        writable: None,
        tools: crate::overlay::Tools {
            fuse2fs: None,
            fuse_overlayfs: None,
        },
    },
});

#[test]
fn setup_order_for_a_single_file_image() {
    let f = fixture(&[], &[]);
    let steps = [
        Step::MakePrivate,
        Step::ServeImage,
        Step::Staging,
        Step::PivotToStaging,
        Step::AttachImage,
        Step::SealRoot,
        Step::EnterNewRoot,
    ];
    let (calls, result) = f.run(&steps);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "mount none / None MsFlags(MS_REC | MS_PRIVATE) None",
            "fsmount fuse [] +",
            "mount rfake-staging /staging Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=0755,size=16m\")",
            "mkdir /staging/newroot 755",
            "mkdir /staging/lower 755",
            "mkdir /staging/oldroot 755",
            "pivot_root /staging /staging/oldroot",
            "chdir /",
            "move_mount /lower",
            "chdir /newroot",
            "pivot_root . .",
            "umount .",
            "chdir /",
        ]
    );
}

#[test]
fn directory_root_is_a_recursive_clone_made_read_only_before_it_is_attached() {
    let f = fixture(&[], &["data/img/etc/"]);
    let (calls, result) = f.run(&[Step::BindRootDir(PathBuf::from("/data/img"))]);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "open_tree /oldroot/data/img rec=true",
            "setattr <mount> +ro,nosuid,nodev rec=true",
            "attach -> /lower",
        ]
    );
}

#[test]
fn the_image_as_it_is_when_every_destination_exists() {
    let f = fixture(&["proc/", "home/u/"], &["proc/", "home/u/"]);
    f.image_is_root();
    let steps = [
        AS_IT_IS,
        Step::Bind(bind("/proc", "/proc")),
        Step::Bind(bind("/home/u", "/home/u")),
        Step::SealRoot,
    ];
    let (calls, result) = f.run(&steps);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "mount /lower /newroot None MsFlags(MS_MOVE) None",
            "open_tree /oldroot/proc rec=true",
            "setattr <mount> +nosuid,nodev rec=true",
            "attach -> /newroot/proc",
            "open_tree /oldroot/home/u rec=true",
            "setattr <mount> +nosuid,nodev rec=true",
            "attach -> /newroot/home/u",
        ]
    );
}

#[test]
fn missing_destinations_are_made_in_the_overlay_before_it_exists_then_sealed() {
    let f = fixture(&["etc/"], &["scratch/job/", "proc/"]);
    let steps = [
        AS_IT_IS,
        Step::Bind(bind("/scratch/job", "/scratch/job")),
        Step::SealRoot,
    ];
    let (calls, result) = f.run(&steps);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "mkdir /overlay 755",
            "mount rfake-overlay /overlay Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=0755,size=1048576\")",
            "mkdir /overlay/upper 755",
            "mkdir /overlay/work 755",
            "mkdirat /overlay/upper/scratch 755",
            "mkdirat /overlay/upper/scratch/job 755",
            "mount rfake-root /newroot Some(\"overlay\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work\")",
            // The recorder mounts nothing: the destination is made again
            // in the (unmounted) root, below its descriptor.
            "mkdirat /newroot/scratch 755",
            "mkdirat /newroot/scratch/job 755",
            "open_tree /oldroot/scratch/job rec=true",
            "setattr <mount> +nosuid,nodev rec=true",
            "attach -> /newroot/scratch/job",
            "setattr /newroot +ro rec=false",
        ]
    );
}

#[test]
fn a_destination_missing_from_an_image_without_overlay_is_refused() {
    let f = fixture(&["etc/"], &["data/"]);
    f.image_is_root();
    let mut b = bind("/data", "/data");
    b.create = false;
    let (calls, result) = f.run(&[AS_IT_IS, Step::Bind(b)]);
    assert!(
        matches!(result, Err(RootfsError::MissingDestination { .. })),
        "{result:?}"
    );
    assert_eq!(
        calls,
        vec!["mount /lower /newroot None MsFlags(MS_MOVE) None"]
    );
}

#[test]
fn an_optional_bind_without_source_or_destination_is_skipped() {
    let f = fixture(&["etc/"], &["data/"]);
    f.image_is_root();
    let mut no_src = bind("/nothing", "/etc");
    no_src.optional = true;
    let mut no_dst = bind("/data", "/data");
    no_dst.optional = true;
    no_dst.create = false;
    let (calls, result) = f.run(&[AS_IT_IS, Step::Bind(no_src), Step::Bind(no_dst)]);
    result.unwrap();
    assert_eq!(
        calls,
        vec!["mount /lower /newroot None MsFlags(MS_MOVE) None"]
    );
}

#[test]
fn tmpfs_is_a_detached_mount_attached_to_its_destination() {
    let f = fixture(&["tmp/"], &[]);
    f.image_is_root();
    let steps = [
        AS_IT_IS,
        Step::Tmpfs(Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            origin: "--contain".into(),
        }),
    ];
    let (calls, result) = f.run(&steps);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "mount /lower /newroot None MsFlags(MS_MOVE) None",
            "fsmount tmpfs [Value(\"source\", \"rfake-tmpfs\"), Value(\"mode\", \"1777\")] +nosuid,nodev",
            "attach -> /newroot/tmp",
        ]
    );
}

fn identity() -> Step {
    Step::IdentityFiles(IdentitySpec {
        user: UserEntry {
            name: "u".into(),
            uid: 1000,
            gid: 1000,
            gecos: "U".into(),
            home: "/home/u".into(),
            shell: "/bin/bash".into(),
        },
        group_name: "g".into(),
    })
}

#[test]
fn identity_files_are_staged_then_bound_onto_the_image_files() {
    let f = fixture(&["etc/passwd", "etc/group", "bin/sh"], &[]);
    f.image_is_root();
    let (calls, result) = f.run(&[AS_IT_IS, identity()]);
    result.unwrap();
    assert_eq!(
        calls,
        vec![
            "mount /lower /newroot None MsFlags(MS_MOVE) None",
            "mkdir /files 755",
            "create /files/passwd 644",
            "open_tree /files/passwd rec=false",
            "setattr <mount> +nosuid,nodev rec=false",
            "attach -> /newroot/etc/passwd",
            "create /files/group 644",
            "open_tree /files/group rec=false",
            "setattr <mount> +nosuid,nodev rec=false",
            "attach -> /newroot/etc/group",
        ]
    );
    let passwd = std::fs::read_to_string(f.layout.files.join("passwd")).unwrap();
    assert!(
        passwd.contains("u:x:1000:1000:U:/home/u:/bin/sh"),
        "{passwd}"
    );
}

/// Issue 19, defect 1: an image whose `/tmp` (or `/etc`) leads to the
/// container root through a symlink must not let a bind cover the root, and
/// nothing may be created outside the overlay.
#[test]
fn a_destination_that_is_the_root_itself_is_refused() {
    for link in ["tmp -> /", "tmp -> .", "tmp -> ../..", "tmp -> /etc/.."] {
        let f = fixture(&[link, "etc/"], &["tmp/"]);
        f.image_is_root();
        let (calls, result) = f.run(&[AS_IT_IS, Step::Bind(bind("/tmp", "/tmp"))]);
        match result {
            Err(RootfsError::Destination {
                source: PathError::IsRoot { .. } | PathError::Escapes { .. },
                ..
            }) => {}
            other => panic!("{link}: {other:?}"),
        }
        // Nothing attached or created (`../..` is refused before the root
        // is even moved into place).
        assert!(
            calls
                .iter()
                .all(|c| c == "mount /lower /newroot None MsFlags(MS_MOVE) None"),
            "{link}: {calls:?}"
        );
    }
}

#[test]
fn procfs_links_as_bind_destinations_are_refused() {
    // The host's real procfs stands in for the container's /proc: the
    // layout's root *is* a directory whose `proc` is a bind of it in a real
    // launch; here the fixture's root links to the real one lexically, so
    // the test uses the resolver's own refusal of procfs symlinks through
    // a host source instead.
    let f = fixture(&["etc/"], &[]);
    f.image_is_root();
    for src in [
        "/proc/self/root",
        "/proc/1/root",
        "/proc/self/cwd",
        "/dev/fd/0",
    ] {
        let mut state = State {
            host_path: "/".into(),
            ..State::default()
        };
        match state.host_walk(Path::new(src)) {
            Err(PathError::ProcLink { .. }) => {}
            other => panic!("{src}: {other:?}"),
        }
    }
}

/// A missing destination whose deepest existing directory is on another
/// device than the overlay root (a bind of a host directory) is not made:
/// it would be made on the host. The recorder mounts nothing, so the
/// other device is simulated by recording a different root device.
#[test]
fn a_missing_destination_inside_another_bind_is_not_created_on_the_host() {
    let f = fixture(&["home/u/", "etc/"], &["new/"]);
    f.image_is_root();
    let rec = Recorder::new(f.dir.path());
    let mut state = State {
        host_path: f.layout.oldroot.clone(),
        overlay: true,
        pivoted: true,
        ..State::default()
    };
    state.enter_root(&f.layout.newroot).unwrap();
    state.root_dev = Some(u64::MAX);
    let err = mounts::bind(&rec, &bind("/new", "/home/u/new"), &mut state).unwrap_err();
    match err {
        RootfsError::WouldCreateOnHost { inside, .. } => assert_eq!(inside, Path::new("/home/u")),
        other => panic!("{other:?}"),
    }
    assert!(!f.layout.newroot.join("home/u/new").exists());
    assert!(rec.take().is_empty());
}

#[test]
fn steps_that_may_need_destinations() {
    let b = |create: bool, kind| Bind {
        src: "/a".into(),
        dst: "/b".into(),
        kind,
        readonly: false,
        allow_devices: false,
        optional: !create,
        create,
        origin: "t".into(),
    };
    let mut missing = |_: &Path| None;
    assert_eq!(
        Step::Bind(b(true, BindKind::File)).wanted(&mut missing),
        vec![Wanted {
            dst: Path::new("/b"),
            dir: false,
            link: None,
            origin: "t"
        }]
    );
    assert!(
        Step::Bind(b(false, BindKind::Dir))
            .wanted(&mut missing)
            .is_empty()
    );
    // The source decides, and a missing source is left to the bind step.
    assert!(
        Step::Bind(b(true, BindKind::AsSource))
            .wanted(&mut missing)
            .is_empty()
    );
    let mut a_dir = |_: &Path| Some(true);
    assert!(Step::Bind(b(true, BindKind::AsSource)).wanted(&mut a_dir)[0].dir);
    let dsts: Vec<PathBuf> = identity()
        .wanted(&mut missing)
        .iter()
        .map(|w| w.dst.to_path_buf())
        .collect();
    assert_eq!(dsts, [Path::new("/etc/passwd"), Path::new("/etc/group")]);
}

#[test]
fn bind_attrs_always_nosuid() {
    let mut b = Bind {
        src: "/dev".into(),
        dst: "/dev".into(),
        kind: BindKind::Dir,
        readonly: false,
        allow_devices: true,
        optional: true,
        create: false,
        origin: "default".into(),
    };
    assert_eq!(b.attrs().to_string(), "nosuid");
    b.allow_devices = false;
    b.readonly = true;
    assert_eq!(b.attrs().to_string(), "ro,nosuid,nodev");
}

/// Before the pivot, the places are inside the staging tmpfs where it is
/// mounted, and the host is `/`.
#[test]
fn places_before_the_pivot_are_in_the_staging_tmpfs() {
    let l = Layout::container().before_pivot();
    assert_eq!(l.staging, Path::new("/tmp"));
    assert_eq!(l.newroot, Path::new("/tmp/newroot"));
    assert_eq!(l.lower, Path::new("/tmp/lower"));
    assert_eq!(l.overlay, Path::new("/tmp/overlay"));
    assert_eq!(l.files, Path::new("/tmp/files"));
    assert_eq!(l.oldroot, Path::new("/"));
}
