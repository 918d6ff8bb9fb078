use super::*;

fn node(path: &str, host: &str) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        host_path: host.into(),
        origin: "t".into(),
    }
}

/// A fake host /dev: two GPUs, a directory, a symlink.
fn host_dev() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["null", "nvidia0", "nvidia1", "nvidiactl"] {
        std::fs::write(d.path().join(f), "").unwrap();
    }
    std::fs::create_dir_all(d.path().join("dri")).unwrap();
    std::fs::write(d.path().join("dri/card0"), "").unwrap();
    std::fs::write(d.path().join("dri/card1"), "").unwrap();
    std::fs::create_dir(d.path().join("shm")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd", d.path().join("fd")).unwrap();
    d
}

fn dsts(mounts: &[Mount]) -> Vec<String> {
    mounts
        .iter()
        .map(|m| m.dst().display().to_string())
        .collect()
}

#[test]
fn host_nodes_at_their_own_path_keep_the_hosts_dev() {
    let d = host_dev();
    let dev = d.path().to_str().unwrap();
    let e = ContainerEdits {
        device_nodes: vec![node("/dev/nvidia0", "/dev/nvidia0")],
        ..ContainerEdits::default()
    };
    let p = plan(&e, d.path()).unwrap();
    assert!(p.dev.is_none());
    assert_eq!(dsts(&p.mounts), ["/dev/nvidia0"]);
    let Mount::Bind(b) = &p.mounts[0] else {
        panic!()
    };
    assert!(b.allow_devices && !b.readonly);
    let _ = dev;
}

#[test]
fn another_gpus_node_is_hidden_by_a_private_dev() {
    let d = host_dev();
    let e = ContainerEdits {
        device_nodes: vec![
            node("/dev/nvidia0", "/dev/nvidia0"),
            node("/dev/dri/card0", "/dev/dri/card0"),
        ],
        hidden_nodes: vec!["/dev/nvidia1".into(), "/dev/dri/card1".into()],
        ..ContainerEdits::default()
    };
    let p = plan(&e, d.path()).unwrap();
    let dev = p.dev.expect("a private /dev");
    assert_eq!(
        dsts(&dev),
        ["/dev", "/dev/fd", "/dev/null", "/dev/nvidiactl", "/dev/shm"],
        "dri is made of binds (card0 comes from the edits), nvidia0 from the edits"
    );
    assert!(matches!(&dev[1], Mount::Symlink(l) if l.target == Path::new("/proc/self/fd")));
    assert!(matches!(&dev[4], Mount::Bind(b) if b.kind == BindKind::Dir && b.allow_devices));
    assert_eq!(dsts(&p.mounts), ["/dev/nvidia0", "/dev/dri/card0"]);
}

#[test]
fn a_node_from_elsewhere_on_the_host_needs_a_private_dev() {
    let d = host_dev();
    let e = ContainerEdits {
        device_nodes: vec![node("/dev/nvidia0", "/var/tmp/fake/nvidia0")],
        ..ContainerEdits::default()
    };
    let p = plan(&e, d.path()).unwrap();
    let dev = p.dev.expect("a private /dev");
    assert!(!dsts(&dev).contains(&"/dev/nvidia0".to_string()));
    assert!(
        dsts(&dev).contains(&"/dev/nvidia1".to_string()),
        "not hidden: not asked"
    );
}

#[test]
fn sonames_are_linked_in_ldcache_folders_only() {
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let mount = |dst: &str| MountEdit {
        host_path: libc.into(),
        container_path: dst.into(),
        readonly: true,
        origin: "t".into(),
    };
    let e = ContainerEdits {
        mounts: vec![mount("/drv/libc.so.2.36"), mount("/other/libc.so.2.36")],
        library_dirs: vec!["/drv".into()],
        symlinks: vec![LinkEdit {
            link: "/drv/libc.so".into(),
            target: "libc.so.6".into(),
            origin: "t".into(),
        }],
        ..ContainerEdits::default()
    };
    let p = plan(&e, Path::new("/nonexistent")).unwrap();
    let links: Vec<String> = p
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Symlink(l) => Some(format!("{} -> {}", l.link.display(), l.target.display())),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        [
            "/drv/libc.so -> libc.so.6",
            "/drv/libc.so.6 -> libc.so.2.36"
        ]
    );
}

#[test]
fn library_dirs_go_first_once() {
    let p = LaunchEdits {
        library_dirs: vec!["/usr/lib64".into(), "/drv".into()],
        ..LaunchEdits::default()
    };
    let mut env: EnvList = vec![("LD_LIBRARY_PATH".into(), "/opt/lib:/drv:".into())];
    p.prepend_library_path(&mut env);
    assert_eq!(
        crate::env::get(&env, "LD_LIBRARY_PATH").unwrap(),
        "/usr/lib64:/drv:/opt/lib"
    );
    let mut env: EnvList = vec![];
    LaunchEdits::default().prepend_library_path(&mut env);
    assert!(env.is_empty());
}

#[test]
fn a_newer_compat_directory_goes_before_the_drivers() {
    let root = tempfile::tempdir().unwrap();
    let compat = root.path().join("usr/local/cuda/compat");
    std::fs::create_dir_all(&compat).unwrap();
    std::fs::write(compat.join("libcuda.so.560.28.03"), "").unwrap();
    let mut edits = LaunchEdits {
        library_dirs: vec!["/.singularity.d/libs".into()],
        cuda_compat: Some("550.54.15".into()),
        ..LaunchEdits::default()
    };
    let mut env: EnvList = vec![(
        "LD_LIBRARY_PATH".into(),
        "/usr/local/cuda/compat:/opt/x".into(),
    )];
    edits.prepend_library_path_in(&mut env, root.path());
    assert_eq!(
        crate::env::get(&env, "LD_LIBRARY_PATH").unwrap(),
        "/usr/local/cuda/compat:/.singularity.d/libs:/opt/x"
    );
    // A host of the same branch: the image's list stays after the driver's.
    edits.cuda_compat = Some("560.35.03".into());
    let mut env: EnvList = vec![("LD_LIBRARY_PATH".into(), "/usr/local/cuda/compat".into())];
    edits.prepend_library_path_in(&mut env, root.path());
    assert_eq!(
        crate::env::get(&env, "LD_LIBRARY_PATH").unwrap(),
        "/.singularity.d/libs:/usr/local/cuda/compat"
    );
}

#[test]
fn extending_edits_keeps_the_first_at_each_path_and_unhides_wanted_nodes() {
    let mut a = ContainerEdits {
        device_nodes: vec![node("/dev/nvidia0", "/dev/nvidia0")],
        hidden_nodes: vec!["/dev/nvidia1".into()],
        ..ContainerEdits::default()
    };
    let b = ContainerEdits {
        device_nodes: vec![
            node("/dev/nvidia0", "/elsewhere/nvidia0"),
            node("/dev/nvidia1", "/dev/nvidia1"),
        ],
        library_dirs: vec!["/l".into()],
        cuda_compat: Some("550.54.15".into()),
        ..ContainerEdits::default()
    };
    a.extend(b);
    assert_eq!(a.device_nodes.len(), 2);
    assert_eq!(a.device_nodes[0].host_path, Path::new("/dev/nvidia0"));
    assert!(a.hidden_nodes.is_empty(), "{:?}", a.hidden_nodes);
    assert_eq!(a.library_dirs, [Path::new("/l")]);
    assert_eq!(a.cuda_compat.as_deref(), Some("550.54.15"));
}
