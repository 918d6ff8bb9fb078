//! Generates the Rust bindings to libsquashfs (squashfs-tools-ng) that
//! `src/sqfs` uses, and links the library.
//!
//! The library is found with the `pkg-config` program (package
//! `libsquashfs1`, from `libsquashfs-dev`); without it, `-lsquashfs` and the
//! default include path are assumed. Only `sqfs_*`/`SQFS_*` items are bound.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The `pkg-config` module of libsquashfs 1.x.
const PKG: &str = "libsquashfs1";

fn pkg_config(arg: &str) -> Option<Vec<String>> {
    let out = Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
        .args([arg, PKG])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let libs = pkg_config("--libs").unwrap_or_else(|| {
        println!("cargo:warning=pkg-config {PKG} not found; assuming -lsquashfs");
        vec!["-lsquashfs".into()]
    });
    for flag in &libs {
        if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        } else if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
    let cflags = pkg_config("--cflags").unwrap_or_default();

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
}
