//! GPUs without a GPU: `--device` on the fake driver tree that
//! tests/gpu/make-fake-driver.sh makes as root (fake libcuda and
//! libnvidia-ml, fake nvidia-smi, device nodes with no driver behind them,
//! CDI specs as `nvidia-ctk cdi generate` writes them, an AMD one, a fake
//! ROCm, a linker cache, and directory images with a probe that dlopen()s
//! libcuda.so.1, one with a CUDA compat library); `--nv` and `--rocm`
//! through CDI, nvidia-container-cli and the linker cache; doctor.

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
    if dir.join("cdi/nvidia.yaml").is_file()
        && dir.join("image/opt/probe/cuda-probe").is_file()
        && dir.join("image-compat/usr/local/cuda/compat").is_dir()
        && dir.join("driver/opt/rocm/bin/rocm-smi").is_file()
    {
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
        "env (devices): /usr/local/cuda/compat goes first if the image's libcuda there is of a newer branch than the host driver 550.54.15 [cuda-compat]".into(),
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

/// A site file for `--nv`/`--rocm` without CDI (an empty spec directory,
/// unless `cdi`), the fake tree's linker cache and device nodes, and
/// `extra` lines.
fn nv_site(g: &Path, cdi: bool, extra: &str) -> (tempfile::NamedTempFile, tempfile::TempDir) {
    let empty = tempfile::Builder::new()
        .prefix("gpu-nocdi-")
        .tempdir()
        .unwrap();
    let f = tempfile::Builder::new()
        .prefix("gpu-site-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    let specs = if cdi {
        g.join("cdi")
    } else {
        empty.path().to_path_buf()
    };
    std::fs::write(
        f.path(),
        format!(
            "warm_linger = {TEST_LINGER}\ncdi_spec_dirs = [{:?}]\nld_cache = {:?}\ngpu_dev_dir = {:?}\n{extra}",
            specs.display().to_string(),
            g.join("ld.so.cache").display().to_string(),
            g.join("dev").display().to_string(),
        ),
    )
    .unwrap();
    (f, empty)
}

/// A PATH with the fake driver's programs: `with_cli` keeps
/// nvidia-container-cli, else only nvidia-smi and rocm-smi (in `bin`).
fn driver_path(g: &Path, with_cli: bool, bin: &Path) -> String {
    let base = "/usr/local/bin:/usr/bin:/bin";
    if with_cli {
        return format!(
            "{}:{}:{base}",
            g.join("driver/usr/bin").display(),
            g.join("driver/opt/rocm/bin").display()
        );
    }
    for p in ["driver/usr/bin/nvidia-smi", "driver/opt/rocm/bin/rocm-smi"] {
        let target = g.join(p);
        let link = bin.join(target.file_name().unwrap());
        if !link.exists() {
            std::os::unix::fs::symlink(&target, link).unwrap();
        }
    }
    format!("{}:{base}", bin.display())
}

/// `rfake exec OPTS IMAGE sh -c SCRIPT` in image `name` of the tree.
fn run_image(
    g: &Path,
    name: &str,
    site: &Path,
    opts: &[&str],
    script: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let t = tag("gpu");
    let mut cmd = command(&t);
    cmd.env("RFAKE_CONFIG", site).arg("exec").args(opts);
    cmd.arg(g.join(name)).args(["/bin/sh", "-c", script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_nothing_left(&t);
    out
}

const PROBE: &str = "/opt/probe/cuda-probe; ls /dev/nvidia0 /dev/nvidia1 /dev/nvidiactl; \
    stat -c '%n %F %t' /dev/nvidia0; nvidia-smi; command -v nvidia-smi; echo LD=$LD_LIBRARY_PATH; \
    ls /.singularity.d/libs; cat /dev/nvidia0 2>&1; echo opened=$?; \
    touch /.singularity.d/libs/libcuda.so.550.54.15 2>&1 || echo read-only";

/// What `--nv` without CDI must give, however the files were found.
#[track_caller]
fn assert_nv_without_cdi(text: &str) {
    assert!(
        text.contains("libcuda: /.singularity.d/libs/libcuda.so.1 -> /.singularity.d/libs/libcuda.so.550.54.15"),
        "{text}"
    );
    assert!(
        text.contains("fake: rfake fake libcuda 550.54.15"),
        "{text}"
    );
    assert!(
        text.contains("/dev/nvidia0 character special file c3"),
        "{text}"
    );
    assert!(
        text.contains("/dev/nvidia1\n") && text.contains("/dev/nvidiactl\n"),
        "{text}"
    );
    assert!(text.contains("Driver Version: 550.54.15"), "{text}");
    assert!(
        text.contains("GPU 0: /dev/nvidia0") && text.contains("GPU 1: /dev/nvidia1"),
        "{text}"
    );
    assert!(text.contains("\n/usr/bin/nvidia-smi\n"), "{text}");
    assert!(text.contains("LD=/.singularity.d/libs\n"), "{text}");
    assert!(text.contains("libnvidia-ml.so.550.54.15"), "{text}");
    assert!(
        !text.contains("opened=0"),
        "a node without a driver opened: {text}"
    );
    assert!(
        text.contains("read-only"),
        "the libraries are bound read-only: {text}"
    );
}

#[test]
fn nv_uses_nvidia_container_cli_when_installed() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["-v", "--nv"],
        PROBE,
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert_nv_without_cdi(&text);
    let err = stderr(&out);
    assert!(
        err.contains("--nv: no CDI spec for nvidia.com/gpu; the driver's files from")
            && err.contains("nvidia-container-cli list"),
        "{err}"
    );
    // Where users may not bind files, the user's PATH is not looked in:
    // the linker cache, and no nvidia-smi (not in the system's directories).
    let (s, _d) = nv_site(&g, false, "allow_user_binds = false\n");
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["-v", "--nv"],
        "/opt/probe/cuda-probe; command -v nvidia-smi || echo no-smi",
        &[("PATH", &path)],
    );
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("fake: rfake fake libcuda"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("no-smi"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the driver's files from the linker cache"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nv_reads_the_linker_cache_without_nvidia_container_cli() {
    let Some(g) = fake() else { return };
    // A site name added to the list: libhsa-runtime64 is not NVIDIA's, but
    // shows the site's names are read.
    let (s, _d) = nv_site(&g, false, "nvidia_libs = [\"libhsa-runtime64.so\"]\n");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, false, bin.path());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["-v", "--nv"],
        &format!("{PROBE}; readlink /.singularity.d/libs/libcuda.so"),
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert_nv_without_cdi(&text);
    assert!(
        text.contains("libhsa-runtime64.so.1.13.0"),
        "the site's name: {text}"
    );
    assert!(
        text.ends_with("\nlibcuda.so.550.54.15\n"),
        "the cache's libcuda.so: {text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the linker cache {}",
            g.join("ld.so.cache").display()
        )),
        "{err}"
    );
}

#[test]
fn nv_uses_the_cdi_spec_when_there_is_one() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, true, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["-v", "--nv"],
        "/opt/probe/cuda-probe; ls /dev/nvidia0 /dev/nvidia1; ls /.singularity.d/libs 2>&1 | head -1",
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert!(
        text.contains("libcuda: /usr/lib/x86_64-linux-gnu/libcuda.so.1 -> /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"),
        "{text}"
    );
    assert!(text.contains("/dev/nvidia1"), "{text}");
    assert!(
        text.contains("/.singularity.d/libs: No such file"),
        "nothing in the libs dir: {text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--nv: using the CDI spec {} (nvidia.com/gpu=all)",
            g.join("cdi/nvidia.yaml").display()
        )),
        "{err}"
    );
}

#[test]
fn nv_without_a_driver_is_one_line_and_69_or_a_warning() {
    let Some(g) = fake() else { return };
    let empty = tempfile::tempdir().unwrap();
    // The host's own cache (no NVIDIA driver on the test machines is
    // assumed; checked), no nvidia-container-cli on PATH.
    let cache = "/etc/ld.so.cache";
    if std::fs::read(cache).is_ok_and(|b| b.windows(10).any(|w| w == b"libcuda.so")) {
        missing("a host without an NVIDIA driver in /etc/ld.so.cache");
        return;
    }
    let site = |extra: &str| {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(
            f.path(),
            format!(
                "warm_linger = {TEST_LINGER}\ncdi_spec_dirs = [{:?}]\nld_cache = {cache:?}\ngpu_dev_dir = {:?}\n{extra}",
                empty.path().display().to_string(),
                empty.path().display().to_string()
            ),
        )
        .unwrap();
        f
    };
    let s = site("");
    let out = run_image(&g, "image", s.path(), &["--nv"], "echo ran", &[]);
    assert_status(&out, 69);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--nv: no NVIDIA driver on this host (no libcuda.so in the linker cache /etc/ld.so.cache)"),
        "{err}"
    );
    assert!(!stdout(&out).contains("ran"));
    let out = run_image(&g, "image", s.path(), &["--rocm"], "echo ran", &[]);
    assert_status(&out, 69);
    assert!(
        stderr(&out).contains("--rocm: no ROCm runtime on this host (no libhsa-runtime64.so in"),
        "{}",
        stderr(&out)
    );
    // nvidia-container-cli failing (no driver loaded) is the same.
    let bin = tempfile::tempdir().unwrap();
    std::fs::write(
        bin.path().join("nvidia-container-cli"),
        "#!/bin/sh\necho 'nvidia-container-cli: initialization error: nvml error: driver not loaded' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.path().join("nvidia-container-cli"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["--nv"],
        "echo ran",
        &[("PATH", &path)],
    );
    assert_status(&out, 69);
    assert!(
        stderr(&out).contains(
            "list failed: nvidia-container-cli: initialization error: nvml error: driver not loaded"
        ),
        "{}",
        stderr(&out)
    );
    // gpu_missing_driver = "warn": a warning, and the container runs.
    let s = site("gpu_missing_driver = \"warn\"\n");
    let out = run_image(&g, "image", s.path(), &["--nv"], "echo ran", &[]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains("ran"));
    let err = stderr(&out);
    assert!(
        err.contains("warning: --nv: no NVIDIA driver on this host")
            && err.contains("continuing without GPUs (gpu_missing_driver = \"warn\" in "),
        "{err}"
    );
}

#[test]
fn rocm_binds_kfd_dri_and_the_rocm_libraries() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, false, bin.path());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["--rocm"],
        "ls /dev/kfd /dev/dri; ls /.singularity.d/libs; echo LD=$LD_LIBRARY_PATH; rocm-smi; ls /dev/nvidia0 2>&1; true",
        &[("PATH", &path), ("ROCR_VISIBLE_DEVICES", "1")],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    for want in [
        "/dev/kfd\n",
        "card0",
        "card1",
        "renderD128",
        "renderD129",
        "libhsa-runtime64.so.1\n",
        "libhsa-runtime64.so.1.13.0\n",
        "LD=/.singularity.d/libs\n",
        "ROCm System Management Interface (rfake fake)",
        "GPU: /dev/dri/renderD129",
    ] {
        assert!(text.contains(want), "missing {want:?}: {text}");
    }
    assert!(
        text.contains("/dev/nvidia0: No such file"),
        "no NVIDIA nodes with --rocm: {text}"
    );
    assert!(!text.contains("libcuda"), "{text}");
}

#[test]
fn cuda_compat_of_a_newer_branch_is_not_shadowed() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let script = "/opt/probe/cuda-probe; echo LD=$LD_LIBRARY_PATH";
    // The image's 560 over the host's 550.
    let out = run_image(
        &g,
        "image-compat",
        s.path(),
        &["-v", "--nv"],
        script,
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert!(
        text.contains("libcuda: /usr/local/cuda/compat/libcuda.so.1 -> /usr/local/cuda/compat/libcuda.so.560.28.03"),
        "{text}"
    );
    assert!(
        text.contains("fake: rfake fake compat libcuda 560.28.03"),
        "{text}"
    );
    assert!(
        text.contains("LD=/usr/local/cuda/compat:/.singularity.d/libs\n"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("CUDA compat: the image's libcuda 560.28.03 in /usr/local/cuda/compat is used over the host driver 550.54.15"),
        "{}",
        stderr(&out)
    );
    // The same through the CDI spec's enable-cuda-compat hook.
    let cdi = site(&g, &[]);
    let out = run_image(
        &g,
        "image-compat",
        cdi.path(),
        &["--device", "nvidia.com/gpu=all"],
        script,
        &[],
    );
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("fake: rfake fake compat libcuda 560.28.03"),
        "{}",
        stdout(&out)
    );
    // An older branch in the image (bound over the compat directory): the
    // host's driver.
    let old = tempfile::Builder::new()
        .prefix("gpu-compat-")
        .tempdir()
        .unwrap();
    std::fs::copy(
        g.join("image-compat/usr/local/cuda/compat/libcuda.so.560.28.03"),
        old.path().join("libcuda.so.535.104.05"),
    )
    .unwrap();
    std::os::unix::fs::symlink("libcuda.so.535.104.05", old.path().join("libcuda.so.1")).unwrap();
    let bind = format!("{}:/usr/local/cuda/compat", old.path().display());
    let out = run_image(
        &g,
        "image-compat",
        s.path(),
        &["--nv", "-B", &bind],
        script,
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    assert_status(&out, 0);
    assert!(
        text.contains("fake: rfake fake libcuda 550.54.15"),
        "{text}"
    );
    assert!(text.contains("LD=/.singularity.d/libs\n"), "{text}");
}

#[test]
fn scheduler_variables_pass_even_with_cleanenv() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let out = run_image(
        &g,
        "image",
        s.path(),
        &["--nv", "--cleanenv"],
        "env | grep -E '^(CUDA_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL|SLURM_STEP_GPUS|SLURM_JOB_GPUS|OTHER)=' | sort",
        &[
            ("PATH", &path),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("ROCR_VISIBLE_DEVICES", "0"),
            ("GPU_DEVICE_ORDINAL", "1"),
            ("SLURM_STEP_GPUS", "1"),
            ("SLURM_JOB_GPUS", "0,1"),
            ("OTHER", "dropped"),
        ],
    );
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "CUDA_VISIBLE_DEVICES=1\nGPU_DEVICE_ORDINAL=1\nROCR_VISIBLE_DEVICES=0\nSLURM_JOB_GPUS=0,1\nSLURM_STEP_GPUS=1\n"
    );
}

#[test]
fn joined_ranks_keep_their_own_visible_devices() {
    use std::io::BufRead;
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let dir = tempfile::Builder::new()
        .prefix("gpu-join-")
        .tempdir()
        .unwrap();
    let release = dir.path().join("release");
    let t = tag("gpu");
    let key = format!("gpu-{}", std::process::id());
    let script = format!(
        "echo $CUDA_VISIBLE_DEVICES $SLURM_STEP_GPUS $(readlink /proc/self/ns/mnt) $(ls /dev/nvidia0) $LD_LIBRARY_PATH; \
         i=0; while [ ! -e {0} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    let ranks: Vec<_> = ["0", "1"]
        .iter()
        .map(|gpu| {
            let mut child = command(&t)
                .env("RFAKE_CONFIG", s.path())
                .env("PATH", &path)
                .env("CUDA_VISIBLE_DEVICES", gpu)
                .env("SLURM_STEP_GPUS", gpu)
                .args(["exec", "--nv", "--join-key", &key])
                .arg(g.join("image"))
                .args(["/bin/sh", "-c", &script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut first = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            (child, first)
        })
        .collect();
    std::fs::write(&release, "").unwrap();
    let mut lines = Vec::new();
    for (child, first) in ranks {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        lines.push(first.trim().to_string());
    }
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    assert_eq!(fields[0].len(), 5, "{lines:?}");
    assert_eq!(&fields[0][..2], ["0", "0"], "{lines:?}");
    assert_eq!(&fields[1][..2], ["1", "1"], "{lines:?}");
    assert_eq!(fields[0][2], fields[1][2], "one container: {lines:?}");
    assert_eq!(
        &fields[1][3..],
        ["/dev/nvidia0", "/.singularity.d/libs"],
        "{lines:?}"
    );
    assert_nothing_left(&t);
}

#[test]
fn dry_run_shows_every_nv_bind_and_variable() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, false, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, true, bin.path());
    let t = tag("gpu");
    let out = command(&t)
        .env("RFAKE_CONFIG", s.path())
        .env("PATH", &path)
        .args(["exec", "--dry-run", "--nv", "--rocm"])
        .arg(g.join("image"))
        .arg("true")
        .output()
        .unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    let cli = g
        .join("driver/usr/bin/nvidia-container-cli")
        .display()
        .to_string();
    let lib = g
        .join("driver/usr/lib/x86_64-linux-gnu")
        .display()
        .to_string();
    let d = g.display().to_string();
    for want in [
        "tmpfs /dev (mode 755) [--device: private /dev]".to_string(),
        format!("bind {d}/dev/nvidia0 -> /dev/nvidia0 (nosuid) [--nv from {cli} list]"),
        format!("bind {d}/dev/nvidiactl -> /dev/nvidiactl (nosuid) [--nv from {cli} list]"),
        format!("bind {lib}/libcuda.so.550.54.15 -> /.singularity.d/libs/libcuda.so.550.54.15 (ro,nosuid,nodev) [--nv from {cli} list]"),
        format!("bind {d}/driver/usr/bin/nvidia-smi -> /usr/bin/nvidia-smi (ro,nosuid,nodev) [--nv from {cli} list]"),
        "symlink /.singularity.d/libs/libcuda.so -> libcuda.so.1".into(),
        "symlink /.singularity.d/libs/libcuda.so.1 -> libcuda.so.550.54.15".into(),
        format!("bind {d}/dev/kfd -> /dev/kfd (nosuid) [--rocm from the linker cache {d}/ld.so.cache]"),
        format!("bind {d}/dev/dri/renderD129 -> /dev/dri/renderD129 (nosuid) [--rocm from the linker cache {d}/ld.so.cache]"),
        format!("bind {d}/driver/opt/rocm/bin/rocm-smi -> /usr/bin/rocm-smi (ro,nosuid,nodev) [--rocm from the linker cache {d}/ld.so.cache]"),
        "env (devices): LD_LIBRARY_PATH starts with /.singularity.d/libs [update-ldcache]".into(),
        "env (devices): /usr/local/cuda/compat goes first if the image's libcuda there is of a newer branch than the host driver 550.54.15 [cuda-compat]".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn doctor_reports_gpus_driver_specs_and_what_nv_binds() {
    let Some(g) = fake() else { return };
    let (s, _d) = nv_site(&g, true, "");
    let bin = tempfile::tempdir().unwrap();
    let path = driver_path(&g, false, bin.path());
    let t = tag("gpu");
    let out = command(&t)
        .env("RFAKE_CONFIG", s.path())
        .env("PATH", &path)
        .arg("doctor")
        .output()
        .unwrap();
    let text = stdout(&out);
    let d = g.display().to_string();
    for want in [
        format!(
            "ok       GPU devices      {d}/dev: nvidia-uvm, nvidia0, nvidia1, nvidiactl, kfd, dri/card0, dri/card1, dri/renderD128, dri/renderD129"
        ),
        "ok       NVIDIA driver    550.54.15 (libcuda)".to_string(),
        format!(
            "ok       CDI specs        {d}/cdi/amd.json (amd.com/gpu: 0, 1), {d}/cdi/nvidia.yaml (nvidia.com/gpu: 0, GPU-4f1e8c3a-7d2b-4a5e-9c1f-000000000000, 1, all)"
        ),
        format!("ok       --nv             the CDI spec {d}/cdi/nvidia.yaml (nvidia.com/gpu=all)"),
        format!("ok       --rocm           the CDI spec {d}/cdi/amd.json (amd.com/gpu=all)"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // Without the specs: what the linker cache gives.
    let (s, _d) = nv_site(&g, false, "");
    let out = command(&t)
        .env("RFAKE_CONFIG", s.path())
        .env("PATH", &path)
        .arg("doctor")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("CDI specs        none in "), "{text}");
    // The host's own libraries the list names (libGL...) vary: the line's
    // pieces are checked.
    let nv = text
        .lines()
        .find(|l| l.starts_with("ok       --nv "))
        .unwrap_or_default();
    for want in [
        format!("from the linker cache {d}/ld.so.cache: 4 device nodes, libraries "),
        "libcuda.so.550.54.15".to_string(),
        "libnvidia-ml.so.550.54.15".to_string(),
        ", programs nvidia-smi".to_string(),
    ] {
        assert!(nv.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(
        text.contains("ok       --rocm           from the linker cache"),
        "{text}"
    );
}
