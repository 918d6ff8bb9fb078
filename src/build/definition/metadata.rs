//! The `/.singularity.d` layout Apptainer's tools and rfake read.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::failed;
use super::files::inside_root;
use crate::build::ImageMeta;
use crate::build::deffile::{Definition, Script, Stage};
use crate::error::Error;

/// The `/.singularity.d` layout: the definition, labels, environment
/// scripts, runscript, startscript, test and help. The base's static
/// `/.rfake/environment` (an image rfake built) becomes a script too, so
/// `%environment` is sourced after it, as Apptainer does.
pub fn write_metadata(
    def: &Definition,
    stage: &Stage,
    root: &Path,
    meta: &mut ImageMeta,
) -> Result<(), Error> {
    // Resolved in the image: a base's `/.singularity.d` may be a link.
    let sd = inside_root(root, ".singularity.d").unwrap_or_else(|| root.join(".singularity.d"));
    if !sd.starts_with(root) {
        return Err(Error::Internal(
            "the metadata directory left the build root".into(),
        ));
    }
    let env_dir = sd.join("env");
    for dir in [&sd, &env_dir] {
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(dir).map_err(|e| failed(dir, "replacing it", &e))?;
        }
    }
    fs::create_dir_all(&env_dir).map_err(|e| failed(&env_dir, "creating it", &e))?;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), Error> {
        let path = sd.join(name);
        // A link the base has there is replaced, never followed.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&path).map_err(|e| failed(&path, "replacing it", &e))?;
        }
        fs::write(&path, text).map_err(|e| failed(&path, "writing it", &e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| failed(&path, "setting its mode", &e))
    };
    // The base's environment: an OCI image's Env, or an rfake image's file.
    // Read only if it is a regular file of the image (never through a link).
    let static_env = root.join(".rfake/environment");
    let regular = fs::symlink_metadata(root.join(".rfake")).is_ok_and(|m| m.is_dir())
        && fs::symlink_metadata(&static_env).is_ok_and(|m| m.is_file());
    if let (true, Ok(text)) = (regular, fs::read_to_string(&static_env)) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                crate::build::source::set_env_pub(&mut meta.env, k, v);
            }
        }
        fs::remove_file(&static_env).map_err(|e| failed(&static_env, "removing it", &e))?;
    }
    if !meta.env.is_empty() {
        let mut sh = String::from("#!/bin/sh\n# The base image's environment (rfake build).\n");
        for (k, v) in &meta.env {
            sh.push_str(&format!(
                "export {k}={}\n",
                crate::build::meta_files::shell_quote(v)
            ));
        }
        write("env/10-docker2singularity.sh", &sh, 0o755)?;
        meta.env.clear();
    }
    if let Some(env) = &stage.environment {
        write(
            "env/90-environment.sh",
            &format!("#!/bin/sh\n{}", env.text),
            0o755,
        )?;
    }
    let script = |s: &Script| format!("#!{}\n{}", s.shell.as_deref().unwrap_or("/bin/sh"), s.text);
    match &stage.runscript {
        Some(run) => write("runscript", &script(run), 0o755)?,
        None => {
            if let Some(oci) = crate::build::meta_files::oci_runscript(meta) {
                write("runscript", &oci, 0o755)?;
            }
        }
    }
    meta.entrypoint.clear();
    meta.cmd.clear();
    meta.workdir = None;
    if let Some(start) = &stage.startscript {
        write("startscript", &script(start), 0o755)?;
    }
    if let Some(test) = &stage.test {
        write("test", &script(test), 0o755)?;
    }
    if let Some(help) = &stage.help {
        write("runscript.help", help, 0o644)?;
    }
    let mut labels: BTreeMap<String, String> = meta.labels.clone();
    labels.extend(stage.labels.iter().cloned());
    write(
        "labels.json",
        &(serde_json::to_string_pretty(&labels).unwrap_or_default() + "\n"),
        0o644,
    )?;
    write("Singularity", &def.text, 0o644)?;
    meta.labels = labels;
    meta.definition = Some(def.text.clone());
    Ok(())
}
