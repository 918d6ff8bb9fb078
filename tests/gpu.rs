//! GPUs without a GPU: `--device` on the fake driver tree that
//! tests/gpu/make-fake-driver.sh makes as root (fake libcuda and
//! libnvidia-ml, fake nvidia-smi, device nodes with no driver behind them,
//! CDI specs as `nvidia-ctk cdi generate` writes them, an AMD one, and a
//! directory image with a probe that dlopen()s libcuda.so.1).

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The fake tree: `RFAKE_TEST_GPU`, else `gpu` beside the stage's `bin`
/// (tests/run.sh and run-as-user.sh install rfake in STAGE/bin).
fn fake() -> Option<PathBuf> {
    setup()?;
    let dir = std::env::var_os("RFAKE_TEST_GPU")
        .map(PathBuf::from)
        .or_else(|| Some(rfake_bin().parent()?.parent()?.join("gpu")))?;
    if dir.join("cdi/nvidia.yaml").is_file() && dir.join("image/opt/probe/cuda-probe").is_file() {
        Some(dir)
    } else {
        missing(&format!(
            "the fake GPU driver tree in {} (tests/gpu/make-fake-driver.sh DIR, as root)",
            dir.display()
        ));
        None
    }
}

/// A site file that reads the fake specs (and more directories, if given).
fn site(dir: &Path, spec_dirs: &[&Path]) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .prefix("gpu-site-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    let mut dirs = vec![format!("{:?}", dir.join("cdi").display().to_string())];
    dirs.extend(
        spec_dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string())),
    );
    std::fs::write(
        f.path(),
        format!(
            "warm_linger = {TEST_LINGER}\ncdi_spec_dirs = [{}]\n",
            dirs.join(", ")
        ),
    )
    .unwrap();
    f
}

/// `rfake exec OPTS IMAGE sh -c SCRIPT` with the fake specs, and `env`.
fn run(
    dir: &Path,
    site: &Path,
    opts: &[&str],
    script: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let t = tag("gpu");
    let image = dir.join("image");
    let mut cmd = command(&t);
    cmd.env("RFAKE_CONFIG", site).arg("exec").args(opts);
    cmd.arg(&image).args(["/bin/sh", "-c", script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_nothing_left(&t);
    out
}

#[test]
fn device_all_gives_the_driver_and_every_gpu() {
    let Some(g) = fake() else { return };
    let s = site(&g, &[]);
    let out = run(
        &g,
        s.path(),
        &["--device", "nvidia.com/gpu=all"],
        "/opt/probe/cuda-probe; ls /dev/nvidia0 /dev/nvidia1 /dev/nvidiactl /dev/nvidia-uvm; \
         stat -c '%n %F %t' /dev/nvidia0; nvidia-smi; readlink /usr/lib/x86_64-linux-gnu/libcuda.so; \
         echo LD=$LD_LIBRARY_PATH; echo NV=$NVIDIA_VISIBLE_DEVICES; \
         cat /dev/nvidia0 2>&1; echo opened=$?",
        &[],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    // The probe found the host's driver through the soname link rfake made.
    assert!(
        text.contains("libcuda: /usr/lib/x86_64-linux-gnu/libcuda.so.1 -> /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"),
        "{text}"
    );
    assert!(text.contains("driver version: 12040"), "{text}");
    assert!(
        text.contains("fake: rfake fake libcuda 550.54.15"),
        "{text}"
    );
    // Device nodes: bound (major 195 = 0xc3), not openable (no driver).
    assert!(
        text.contains("/dev/nvidia0 character special file c3"),
        "{text}"
    );
    assert!(text.contains("/dev/nvidia1\n"), "{text}");
    assert!(
        text.contains("GPU 0: /dev/nvidia0") && text.contains("GPU 1: /dev/nvidia1"),
        "{text}"
    );
    assert!(text.contains("Driver Version: 550.54.15"), "{text}");
    // create-symlinks, update-ldcache, the spec's env.
    assert!(text.contains("\nlibcuda.so.1\n"), "{text}");
    assert!(text.contains("LD=/usr/lib/x86_64-linux-gnu\n"), "{text}");
    assert!(text.contains("NV=void"), "{text}");
    assert!(
        !text.contains("opened=0"),
        "a node without a driver opened: {text}"
    );
}

#[test]
fn one_gpu_gets_only_its_nodes_and_scheduler_variables_pass() {
    let Some(g) = fake() else { return };
    let s = site(&g, &[]);
    let out = run(
        &g,
        s.path(),
        &["--device", "nvidia.com/gpu=0"],
        "/opt/probe/cuda-probe; ls /dev/nvidia0; ls /dev/nvidia1 2>&1; ls /dev/null /dev/shm >/dev/null && echo dev-ok; \
         env | grep -E '^(CUDA_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|SLURM_STEP_GPUS|SLURM_JOB_GPUS)=' | sort",
        &[
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("ROCR_VISIBLE_DEVICES", "1"),
            ("SLURM_STEP_GPUS", "0"),
            ("SLURM_JOB_GPUS", "0,1"),
        ],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert!(text.contains("driver version: 12040"), "{text}");
    assert!(text.contains("/dev/nvidia0\n"), "{text}");
    assert!(
        text.contains("/dev/nvidia1: No such file or directory"),
        "{text}"
    );
    assert!(
        text.contains("dev-ok"),
        "the rest of /dev is the host's: {text}"
    );
    assert!(
        text.contains(
            "CUDA_VISIBLE_DEVICES=0\nROCR_VISIBLE_DEVICES=1\nSLURM_JOB_GPUS=0,1\nSLURM_STEP_GPUS=0\n"
        ),
        "{text}"
    );
    // The same device by its UUID.
    let out = run(
        &g,
        s.path(),
        &[
            "--device",
            "nvidia.com/gpu=GPU-4f1e8c3a-7d2b-4a5e-9c1f-000000000000",
        ],
        "ls /dev/nvidia*",
        &[],
    );
    assert_status(&out, 0);
    assert!(!stdout(&out).contains("nvidia1"), "{}", stdout(&out));
}

#[test]
fn amd_json_spec_and_keep_id() {
    let Some(g) = fake() else { return };
    let s = site(&g, &[]);
    let out = run(
        &g,
        s.path(),
        &["--keep-id", "--device", "amd.com/gpu=1"],
        "ls /dev/kfd /dev/dri; id -u",
        &[],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert!(text.contains("/dev/kfd"), "{text}");
    assert!(
        text.contains("card1") && text.contains("renderD129"),
        "{text}"
    );
    assert!(!text.contains("card0"), "{text}");
    assert!(!text.contains("\n0\n"), "--keep-id: {text}");
}

#[test]
fn dry_run_shows_every_gpu_bind_link_and_variable() {
    let Some(g) = fake() else { return };
    let s = site(&g, &[]);
    let t = tag("gpu");
    let out = command(&t)
        .env("RFAKE_CONFIG", s.path())
        .args(["exec", "--dry-run", "--device", "nvidia.com/gpu=0"])
        .arg(g.join("image"))
        .arg("true")
        .output()
        .unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    let spec = g.join("cdi/nvidia.yaml").display().to_string();
    for want in [
        "tmpfs /dev (mode 755) [--device: private /dev]".to_string(),
        format!(
            "bind {0}/dev/nvidia0 -> /dev/nvidia0 (nosuid) [CDI nvidia.com/gpu=0 in {spec}]",
            g.display()
        ),
        format!(
            "bind {0}/dev/nvidiactl -> /dev/nvidiactl (nosuid) [CDI nvidia.com/gpu in {spec}]",
            g.display()
        ),
        format!(
            "bind {0}/driver/usr/bin/nvidia-smi -> /usr/bin/nvidia-smi (ro,nosuid,nodev) [CDI nvidia.com/gpu in {spec}]",
            g.display()
        ),
        "symlink /usr/lib/x86_64-linux-gnu/libcuda.so -> libcuda.so.1".into(),
        "symlink /usr/lib/x86_64-linux-gnu/libcuda.so.1 -> libcuda.so.550.54.15".into(),
        format!("env (override): NVIDIA_VISIBLE_DEVICES=void [CDI nvidia.com/gpu in {spec}]"),
        "env (devices): LD_LIBRARY_PATH starts with /usr/lib/x86_64-linux-gnu [update-ldcache]"
            .into(),
        "hook enable-cuda-compat skipped".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("nvidia1"), "{text}");
}

/// One line, the documented code, nothing left behind.
#[track_caller]
fn refused(g: &Path, site: &Path, device: &str, code: i32, phrases: &[&str]) {
    let out = run(g, site, &["--device", device], "true", &[]);
    assert_status(&out, code);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    for p in phrases {
        assert!(err.contains(p), "message must say {p:?}: {err}");
    }
}

#[test]
fn bad_input_names_the_device_or_the_spec_and_field() {
    let Some(g) = fake() else { return };
    let s = site(&g, &[]);
    refused(
        &g,
        s.path(),
        "nvidia.com/gpu=7",
        64,
        &[
            "--device nvidia.com/gpu=7: no such CDI device",
            "known: amd.com/gpu=0, amd.com/gpu=1, nvidia.com/gpu=0",
        ],
    );
    refused(
        &g,
        s.path(),
        "gpu0",
        64,
        &["--device gpu0: expected VENDOR/CLASS=NAME"],
    );
    let bad = tempfile::Builder::new()
        .prefix("gpu-cdi-")
        .tempdir()
        .unwrap();
    let file = bad.path().join("vendor.yaml");
    std::fs::write(
        &file,
        "cdiVersion: 0.6.0\nkind: vendor.com/acc\ndevices:\n- name: a\n  containerEdits:\n    hooks:\n    - hookName: createContainer\n      path: /usr/bin/vendor-hook\n",
    )
    .unwrap();
    let s = site(&g, &[bad.path()]);
    refused(
        &g,
        s.path(),
        "nvidia.com/gpu=0",
        78,
        &[
            &format!("CDI spec {}: ", file.display()),
            "devices[0].containerEdits.hooks[0]: createContainer hook /usr/bin/vendor-hook: rfake runs no hook programs",
        ],
    );
    std::fs::write(&file, "{\"cdiVersion\": \"0.6.0\", \"kind\": \"vendor.com/acc\", \"devices\": [{\"name\": \"a\", \"containerEdits\": {\"mounts\": [{\"hostPath\": \"/x\"}]}}]}").unwrap();
    std::fs::rename(&file, bad.path().join("vendor.json")).unwrap();
    refused(
        &g,
        s.path(),
        "vendor.com/acc=a",
        78,
        &[
            "vendor.json: line 1 column",
            "missing field `containerPath`",
        ],
    );
    // A library the spec names that the host lacks: the bind source (66).
    std::fs::write(
        bad.path().join("vendor.json"),
        "{\"cdiVersion\": \"0.6.0\", \"kind\": \"vendor.com/acc\", \"devices\": [{\"name\": \"a\", \"containerEdits\": {\"mounts\": [{\"hostPath\": \"/nonexistent/libacc.so.1\", \"containerPath\": \"/usr/lib/libacc.so.1\"}]}}]}",
    )
    .unwrap();
    refused(
        &g,
        s.path(),
        "vendor.com/acc=a",
        66,
        &[
            "bind source /nonexistent/libacc.so.1 (from CDI vendor.com/acc",
            "does not exist on the host",
        ],
    );
}
