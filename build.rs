//! Generates the Rust bindings to libsquashfs (squashfs-tools-ng), which
//! `src/squashfs` uses, and to libfuse3's low-level API, which `src/fuse`
//! uses. Neither library is linked: the bindings' functions are loaded with
//! `dlopen` when first used (bindgen's dynamic bindings, one struct per
//! library, see `src/dynlib.rs`). Most rfake processes never use them (a
//! launch that joins a warm mount neither reads the image nor serves FUSE),
//! and mapping and relocating them and the four compression libraries
//! libsquashfs needs cost every start about 0.3 ms (issue 18).
//!
//! The headers are found with pkg-config (the `pkg-config` crate; modules
//! `libsquashfs1` from `libsquashfs-dev`, `fuse3` from `libfuse3-dev`),
//! which emits no link flags here; without it, the default include paths
//! are assumed. Only `sqfs_*`/`SQFS_*` and `fuse_*`/`FUSE_*` types and
//! constants are bound, and of the functions only those rfake calls
//! (`SQFS_FUNCTIONS`, `FUSE_FUNCTIONS`). The name loaded at run time is the
//! SONAME of the library pkg-config points at (`RFAKE_SQFS_SONAME`,
//! `RFAKE_FUSE_SONAME`), so the bindings and the library agree; without
//! one, `libsquashfs.so.1` and `libfuse3.so.3`.
//!
//! It also sets what `rfake --version` prints (`RFAKE_GIT_COMMIT`,
//! `RFAKE_BUILD_FEATURES`); finding them never fails the build.

use std::env;

// The soname reader the GPU code uses for the host's libraries
// (`ldconfig`'s way); std only, so the build script shares it.
#[path = "src/gpu/elf.rs"]
mod elf;
use std::path::PathBuf;

/// The `pkg-config` module of libsquashfs 1.x.
const PKG: &str = "libsquashfs1";
/// The `pkg-config` module of libfuse 3.
const FUSE_PKG: &str = "fuse3";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    version_info();

    let sqfs = probe(PKG, "squashfs", "libsquashfs.so.1");
    println!("cargo:rustc-env=RFAKE_SQFS_SONAME={}", sqfs.soname);

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
        .clang_args(sqfs.cflags)
        .allowlist_type("sqfs_.*")
        .allowlist_item("SQFS_.*")
        // error.h spells two of its codes SFQS_ERROR_*.
        .allowlist_item("SFQS_.*")
        .prepend_enum_name(false)
        // Functions become fields of `Sqfs`, all looked up when it is
        // loaded: a library without one of them is refused then, not at
        // the call.
        .allowlist_function(SQFS_FUNCTIONS.join("|"))
        .dynamic_library_name("Sqfs")
        .dynamic_link_require_all(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating the libsquashfs bindings (is libsquashfs-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("sqfs_bindings.rs"))
        .expect("writing the libsquashfs bindings");

    let fuse = probe(FUSE_PKG, "fuse3", "libfuse3.so.3");
    println!("cargo:rustc-env=RFAKE_FUSE_SONAME={}", fuse.soname);
    let fuse_bindings = bindgen::Builder::default()
        .header_contents(
            "rfake_fuse.h",
            // 3.12: the loop configuration object (fuse_loop_cfg_*).
            "#define FUSE_USE_VERSION 312\n#include <fuse_lowlevel.h>\n",
        )
        .clang_args(fuse.cflags)
        .allowlist_type("fuse_.*")
        .allowlist_item("FUSE_.*")
        .allowlist_function(FUSE_FUNCTIONS.join("|"))
        .derive_default(true)
        // As for libsquashfs. `dlsym` gives a versioned symbol's default
        // version (`fuse_session_loop_mt@@FUSE_3.12`), the one the link
        // editor would have bound.
        .dynamic_library_name("Fuse")
        .dynamic_link_require_all(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating the libfuse3 bindings (is libfuse3-dev installed?)");
    fuse_bindings
        .write_to_file(out.join("fuse_bindings.rs"))
        .expect("writing the libfuse3 bindings");
}

/// The libsquashfs functions rfake calls, the only ones bound: a loaded
/// library must have each (a function bound but never called would raise
/// the oldest usable libsquashfs for nothing). A call to one missing here
/// does not compile: add it.
const SQFS_FUNCTIONS: &[&str] = &[
    "sqfs_block_processor_append",
    "sqfs_block_processor_begin_file",
    "sqfs_block_processor_create_ex",
    "sqfs_block_processor_end_file",
    "sqfs_block_processor_finish",
    "sqfs_block_writer_create",
    "sqfs_compressor_config_init",
    "sqfs_compressor_create",
    "sqfs_compressor_name_from_id",
    "sqfs_dir_writer_add_entry",
    "sqfs_dir_writer_begin",
    "sqfs_dir_writer_create",
    "sqfs_dir_writer_create_inode",
    "sqfs_dir_writer_end",
    "sqfs_frag_table_create",
    "sqfs_frag_table_write",
    "sqfs_free",
    "sqfs_get_xattr_prefix_id",
    "sqfs_id_table_create",
    "sqfs_id_table_id_to_index",
    "sqfs_id_table_write",
    "sqfs_inode_get_file_block_start",
    "sqfs_inode_get_frag_location",
    "sqfs_inode_get_xattr_index",
    "sqfs_inode_make_extended",
    "sqfs_inode_set_xattr_index",
    "sqfs_meta_reader_create",
    "sqfs_meta_reader_get_position",
    "sqfs_meta_reader_read",
    "sqfs_meta_reader_read_inode",
    "sqfs_meta_reader_readdir",
    "sqfs_meta_reader_seek",
    "sqfs_meta_write_write_to_file",
    "sqfs_meta_writer_append",
    "sqfs_meta_writer_create",
    "sqfs_meta_writer_flush",
    "sqfs_meta_writer_get_position",
    "sqfs_meta_writer_write_inode",
    "sqfs_readdir_state_init",
    "sqfs_super_init",
    "sqfs_super_read",
    "sqfs_super_write",
    "sqfs_xattr_writer_add",
    "sqfs_xattr_writer_begin",
    "sqfs_xattr_writer_create",
    "sqfs_xattr_writer_end",
    "sqfs_xattr_writer_flush",
];

/// The libfuse3 functions rfake calls, the only ones bound (as above).
const FUSE_FUNCTIONS: &[&str] = &[
    "fuse_add_direntry",
    "fuse_add_direntry_plus",
    "fuse_loop_cfg_create",
    "fuse_loop_cfg_destroy",
    "fuse_loop_cfg_set_idle_threads",
    "fuse_loop_cfg_set_max_threads",
    "fuse_reply_attr",
    "fuse_reply_buf",
    "fuse_reply_entry",
    "fuse_reply_err",
    "fuse_reply_none",
    "fuse_reply_open",
    "fuse_reply_readlink",
    "fuse_reply_statfs",
    "fuse_reply_xattr",
    "fuse_req_userdata",
    "fuse_session_loop",
    "fuse_session_loop_mt",
    "fuse_session_mount",
    "fuse_session_new",
];

/// What the build needs of a library: its headers and the name to load.
struct Lib {
    /// Include paths and defines, for bindgen.
    cflags: Vec<String>,
    /// What `dlopen` is given at run time.
    soname: String,
}

/// Find `pkg` with pkg-config, without emitting link flags. The SONAME is
/// read from `lib<name>.so` in its link paths or `libdir` (the link editor's
/// file); `default` when pkg-config or the file is missing.
fn probe(pkg: &str, name: &str, default: &str) -> Lib {
    let found = pkg_config::Config::new()
        .cargo_metadata(false)
        .env_metadata(true)
        .probe(pkg);
    let lib = match found {
        Ok(lib) => lib,
        Err(e) => {
            println!("cargo:warning=pkg-config {pkg} not found ({e}); assuming {default}");
            return Lib {
                cflags: Vec::new(),
                soname: default.to_string(),
            };
        }
    };
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
    let libdir = pkg_config::get_variable(pkg, "libdir")
        .ok()
        .map(PathBuf::from);
    let file = lib
        .link_paths
        .iter()
        .cloned()
        .chain(libdir)
        .map(|dir| dir.join(format!("lib{name}.so")))
        .find(|f| f.exists());
    let soname = match file
        .as_deref()
        .map(|f| (f, elf::soname(f).and_then(|s| s.into_string().ok())))
    {
        Some((f, Some(soname))) => {
            println!("cargo:rerun-if-changed={}", f.display());
            soname
        }
        Some((f, None)) => {
            println!(
                "cargo:warning={}: no SONAME read; assuming {default}",
                f.display()
            );
            default.to_string()
        }
        None => {
            println!("cargo:warning=lib{name}.so of {pkg} not found; assuming {default}");
            default.to_string()
        }
    };
    Lib { cflags, soname }
}

/// `RFAKE_GIT_COMMIT`: `git rev-parse --short HEAD` of the source tree when
/// it is a git checkout (a `.git` directory, or file in a worktree), else
/// the variable of the same name from the build environment (a package built
/// from a tarball may set it), else "unknown". `RFAKE_BUILD_FEATURES`: the
/// library versions compiled against (the versions of the headers: the
/// libraries themselves are not loaded to print them) and the profile.
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
         (both loaded when used), TLS rustls, seccomp, {profile} build",
        version(FUSE_PKG),
        version(PKG),
    );
}
