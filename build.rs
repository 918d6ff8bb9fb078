//! Generates the Rust bindings to libsquashfs (squashfs-tools-ng), which
//! `src/sqfs` uses, and to libfuse3's low-level API, which `src/fuse` uses,
//! and links both libraries.
//!
//! The libraries are found with pkg-config (the `pkg-config` crate; modules
//! `libsquashfs1` from `libsquashfs-dev`, `fuse3` from `libfuse3-dev`);
//! without it, `-lsquashfs`/`-lfuse3` and the default include paths are
//! assumed. Only `sqfs_*`/`SQFS_*` and `fuse_*`/`FUSE_*` items are bound.

use std::env;
use std::path::PathBuf;

/// The `pkg-config` module of libsquashfs 1.x.
const PKG: &str = "libsquashfs1";
/// The `pkg-config` module of libfuse 3.
const FUSE_PKG: &str = "fuse3";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

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
