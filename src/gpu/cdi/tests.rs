use super::*;

const NVIDIA: &str = r#"
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, create-symlinks, --link, "libcuda.so.1::/usr/lib64/libcuda.so"]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib64, "--folder=/usr/lib"]
  mounts:
  - hostPath: /usr/lib64/libcuda.so.550.54.15
    containerPath: /usr/lib64/libcuda.so.550.54.15
    options: [ro, nosuid, nodev, bind]
"#;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn req(s: &str) -> DeviceRequest {
    parse_request(s).unwrap()
}

#[test]
fn requests_are_checked() {
    assert_eq!(
        req("nvidia.com/gpu=0"),
        DeviceRequest {
            kind: "nvidia.com/gpu".into(),
            name: "0".into()
        }
    );
    req("nvidia.com/gpu=GPU-4f1e8c3a-7d2b");
    req("amd.com/gpu=all");
    for bad in [
        "nvidia.com/gpu",
        "gpu=0",
        "nvidia.com/gpu=",
        "/gpu=0",
        "a/b=-x",
        "a/b=x y",
    ] {
        let e = parse_request(bad).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage, "{bad}");
        assert!(
            e.to_string().starts_with(&format!("--device {bad}: ")),
            "{e}"
        );
    }
}

use crate::exit::ExitKind;

#[test]
fn one_gpu_gets_its_nodes_the_specs_edits_and_hides_the_others() {
    let d = dir_with(&[("nvidia.yaml", NVIDIA)]);
    let reg = load(&[d.path().to_path_buf()]).unwrap();
    let e = reg.edits(&[req("nvidia.com/gpu=0")]).unwrap();
    let nodes: Vec<&Path> = e.device_nodes.iter().map(|n| n.path.as_path()).collect();
    assert_eq!(
        nodes,
        [Path::new("/dev/nvidiactl"), Path::new("/dev/nvidia0")]
    );
    assert_eq!(e.hidden_nodes, [PathBuf::from("/dev/nvidia1")]);
    assert_eq!(e.env.len(), 1);
    assert_eq!(e.env[0].name, "NVIDIA_VISIBLE_DEVICES");
    assert!(
        e.env[0].origin.contains("nvidia.yaml"),
        "{}",
        e.env[0].origin
    );
    assert_eq!(e.mounts.len(), 1);
    assert!(e.mounts[0].readonly);
    assert_eq!(
        e.symlinks,
        [LinkEdit {
            link: "/usr/lib64/libcuda.so".into(),
            target: "libcuda.so.1".into(),
            origin: e.symlinks[0].origin.clone(),
        }]
    );
    assert_eq!(
        e.library_dirs,
        [PathBuf::from("/usr/lib64"), "/usr/lib".into()]
    );
    // `all` is the spec's own device: nothing hidden, each node once.
    let e = reg
        .edits(&[req("nvidia.com/gpu=all"), req("nvidia.com/gpu=0")])
        .unwrap();
    assert!(e.hidden_nodes.is_empty());
    assert_eq!(e.device_nodes.len(), 3);
    assert_eq!(e.mounts.len(), 1, "the spec's edits are applied once");
}

#[test]
fn all_without_an_all_device_is_every_device_json_too() {
    let json = r#"{"cdiVersion": "0.6.0", "kind": "amd.com/gpu",
      "devices": [
        {"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/dri/card0", "type": "c", "major": 226}]}},
        {"name": "1", "containerEdits": {"deviceNodes": [{"path": "/dev/dri/card1", "hostPath": "/x/card1"}]}}
      ],
      "containerEdits": {"deviceNodes": [{"path": "/dev/kfd"}]}}"#;
    let d = dir_with(&[("amd.json", json), ("notes.txt", "not a spec")]);
    let reg = load(&[d.path().to_path_buf()]).unwrap();
    let e = reg.edits(&[req("amd.com/gpu=all")]).unwrap();
    assert_eq!(e.device_nodes.len(), 3);
    assert_eq!(e.device_nodes[2].host_path, PathBuf::from("/x/card1"));
    assert!(e.hidden_nodes.is_empty());
    let e = reg.edits(&[req("amd.com/gpu=1")]).unwrap();
    assert_eq!(e.hidden_nodes, [PathBuf::from("/dev/dri/card0")]);
}

#[test]
fn unknown_devices_list_the_known_ones() {
    let d = dir_with(&[("nvidia.yaml", NVIDIA)]);
    let reg = load(&[d.path().to_path_buf()]).unwrap();
    let e = reg.edits(&[req("nvidia.com/gpu=7")]).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Usage);
    assert_eq!(
        e.to_string(),
        "--device nvidia.com/gpu=7: no such CDI device \
         (known: nvidia.com/gpu=0, nvidia.com/gpu=1, nvidia.com/gpu=all)"
    );
    let none = load(&[PathBuf::from("/nonexistent/cdi")]).unwrap();
    let e = none.edits(&[req("nvidia.com/gpu=0")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--device nvidia.com/gpu=0: no such CDI device (no CDI spec found in /nonexistent/cdi)"
    );
}

#[test]
fn a_later_directory_wins_and_one_directory_may_not_define_a_device_twice() {
    let etc = dir_with(&[("a.yaml", NVIDIA)]);
    let run = dir_with(&[(
        "b.yaml",
        "cdiVersion: 0.8.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    env: [FROM=run]\n",
    )]);
    let reg = load(&[etc.path().to_path_buf(), run.path().to_path_buf()]).unwrap();
    let e = reg.edits(&[req("nvidia.com/gpu=0")]).unwrap();
    assert_eq!(e.env.len(), 1);
    assert_eq!(e.env[0].value, "run");
    let both = dir_with(&[("a.yaml", NVIDIA), ("b.yaml", NVIDIA)]);
    let e = load(&[both.path().to_path_buf()]).unwrap_err();
    assert_eq!(e.exit_kind(), ExitKind::Config);
    assert!(
        e.to_string()
            .contains("b.yaml: device nvidia.com/gpu=0 is also defined in"),
        "{e}"
    );
}

/// Each malformed spec is refused naming the file and the field.
#[test]
fn malformed_specs_name_file_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "x.yaml",
            "cdiVersion: 0.9.0\nkind: a.com/b\ndevices: []\n",
            "cdiVersion: \"0.9.0\" is not one rfake reads",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: gpu\ndevices: [{name: a, containerEdits: {}}]\n",
            "kind: \"gpu\" is not VENDOR/CLASS",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices: []\n",
            "devices: the spec has none",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    mounts:\n    - {hostPath: lib, containerPath: /lib}\n",
            "devices[0].containerEdits.mounts[0].hostPath: must be absolute",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    mounts:\n    - {hostPath: /l, containerPath: /l, options: [ro, shared]}\n",
            "devices[0].containerEdits.mounts[0].options: \"shared\"",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    deviceNodes:\n    - {pth: /dev/x}\n",
            "unknown field `pth`",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    env: [\"1X=2\"]\n",
            "devices[0].containerEdits.env[0]: \"1X=2\" is not NAME=value",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    hooks:\n    - {hookName: createContainer, path: /usr/bin/vendor-hook, args: [vendor-hook, setup]}\n",
            "devices[0].containerEdits.hooks[0]: createContainer hook /usr/bin/vendor-hook: rfake runs no hook programs",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: a\n  containerEdits:\n    hooks:\n    - {hookName: createContainer, path: /usr/bin/nvidia-ctk, args: [nvidia-ctk, hook, chmod, --mode, '755']}\n",
            "hook /usr/bin/nvidia-ctk chmod: not a hook rfake knows",
        ),
        (
            "x.json",
            "{\"cdiVersion\": \"0.5.0\",\n \"kind\": 5}",
            "line 2 column 10: invalid type: integer `5`, expected a string",
        ),
        (
            "x.json",
            "{\"cdiVersion\": \"0.5.0\"",
            "line 1 column 22: EOF while parsing an object",
        ),
        (
            "x.yaml",
            "cdiVersion: 0.5.0\nkind: a.com/b\n",
            "missing field `devices`",
        ),
    ];
    for (name, text, want) in cases {
        let d = dir_with(&[(name, text)]);
        let e = load(&[d.path().to_path_buf()]).unwrap_err();
        let msg = e.to_string();
        let file = d.path().join(name);
        assert!(
            msg.starts_with(&format!("CDI spec {}: ", file.display())),
            "{msg}"
        );
        assert!(msg.contains(want), "{text:?}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(e.exit_kind(), ExitKind::Config);
    }
}
