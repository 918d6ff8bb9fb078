//! Generates the Rust bindings to libsquashfs (squashfs-tools-ng), which
//! `src/sqfs` uses, and to libfuse3's low-level API, which `src/fuse` uses,
//! and links both libraries.
//!
//! The libraries are found with pkg-config (the `pkg-config` crate; modules
//! `libsquashfs1` from `libsquashfs-dev`, `fuse3` from `libfuse3-dev`);
//! without it, `-lsquashfs`/`-lfuse3` and the default include paths are
//! assumed. Only `sqfs_*`/`SQFS_*` and `fuse_*`/`FUSE_*` items are bound.
//!
//! It also sets what `rfake --version` prints (`RFAKE_GIT_COMMIT`,
//! `RFAKE_BUILD_FEATURES`); finding them never fails the build.

use std::env;
use std::path::PathBuf;

/// The `pkg-config` module of libsquashfs 1.x.
const PKG: &str = "libsquashfs1";
/// The `pkg-config` module of libfuse 3.
const FUSE_PKG: &str = "fuse3";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    version_info();

    let cflags = link(PKG, "squashfs");

    let bindings = bindgen::Builder::default()
        .header_contents(
            "rfake_sqfs.h",
            concat!(
                "#include <sqfs/predef.h>\n",
                "#include <sqfs/error.h>\n",
                "#include <sqfs/io.h>\n",
                "#include <sqfs/super.h>\n",
                "#include <sqfs/compressor.h>\n",
                "#include <sqfs/block.h>\n",
                "#include <sqfs/block_writer.h>\n",
                "#include <sqfs/block_processor.h>\n",
                "#include <sqfs/frag_table.h>\n",
                "#include <sqfs/id_table.h>\n",
                "#include <sqfs/inode.h>\n",
                "#include <sqfs/dir.h>\n",
                "#include <sqfs/meta_writer.h>\n",
                "#include <sqfs/meta_reader.h>\n",
                "#include <sqfs/dir_writer.h>\n",
                "#include <sqfs/dir_reader.h>\n",
                "#include <sqfs/data_reader.h>\n",
                "#include <sqfs/xattr.h>\n",
                "#include <sqfs/xattr_writer.h>\n",
                "#include <sqfs/xattr_reader.h>\n",
                "#include <sqfs/table.h>\n",
            ),
        )
        .clang_args(cflags)
        .allowlist_item("sqfs_.*")
        .allowlist_item("SQFS_.*")
        // error.h spells two of its codes SFQS_ERROR_*.
        .allowlist_item("SFQS_.*")
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating the libsquashfs bindings (is libsquashfs-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("sqfs_bindings.rs"))
        .expect("writing the libsquashfs bindings");

    let fuse_cflags = link(FUSE_PKG, "fuse3");
    let fuse = bindgen::Builder::default()
        .header_contents(
            "rfake_fuse.h",
            // 3.12: the loop configuration object (fuse_loop_cfg_*).
            "#define FUSE_USE_VERSION 312\n#include <fuse_lowlevel.h>\n",
        )
        .clang_args(fuse_cflags)
        .allowlist_item("fuse_.*")
        .allowlist_item("FUSE_.*")
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating the libfuse3 bindings (is libfuse3-dev installed?)");
    fuse.write_to_file(out.join("fuse_bindings.rs"))
        .expect("writing the libfuse3 bindings");
}

/// Emit the link flags of `pkg` (or `-l<fallback>`); return its cflags
/// (include paths and defines) for bindgen.
fn link(pkg: &str, fallback: &str) -> Vec<String> {
    match pkg_config::Config::new().probe(pkg) {
        Ok(lib) => {
            let mut cflags: Vec<String> = lib
                .include_paths
                .iter()
                .map(|p| format!("-I{}", p.display()))
                .collect();
            for (name, value) in &lib.defines {
                cflags.push(match value {
                    Some(v) => format!("-D{name}={v}"),
                    None => format!("-D{name}"),
                });
            }
            cflags
        }
        Err(e) => {
            println!("cargo:warning=pkg-config {pkg} not found ({e}); assuming -l{fallback}");
            println!("cargo:rustc-link-lib={fallback}");
            Vec::new()
        }
    }
}

/// `RFAKE_GIT_COMMIT`: `git rev-parse --short HEAD` of the source tree when
/// it is a git checkout (a `.git` directory, or file in a worktree), else
/// the variable of the same name from the build environment (a package built
/// from a tarball may set it), else "unknown". `RFAKE_BUILD_FEATURES`: the
/// library versions compiled against and the profile.
fn version_info() {
    println!("cargo:rerun-if-env-changed=RFAKE_GIT_COMMIT");
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = if dir.join(".git").exists() {
        // Rebuild when HEAD moves: HEAD itself and the branch it names.
        for path in ["HEAD", "packed-refs"]
            .iter()
            .filter_map(|p| git(&["rev-parse", "--git-path", p]))
            .chain(
                git(&["symbolic-ref", "-q", "HEAD"])
                    .and_then(|r| git(&["rev-parse", "--git-path", &r])),
            )
        {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        git(&["rev-parse", "--short", "HEAD"])
    } else {
        None
    };
    let commit = commit
        .or_else(|| env::var("RFAKE_GIT_COMMIT").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RFAKE_GIT_COMMIT={commit}");

    let version = |pkg: &str| {
        pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe(pkg)
            .map(|l| l.version)
            .unwrap_or_else(|_| "unknown version".to_string())
    };
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=RFAKE_TARGET={target}");
    let profile = env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!(
        "cargo:rustc-env=RFAKE_BUILD_FEATURES=libfuse3 {} (rfake's FUSE server), libsquashfs {} \
         (dynamic), TLS rustls, seccomp, {profile} build",
        version(FUSE_PKG),
        version(PKG),
    );
}
