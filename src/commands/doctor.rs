//! `rfake doctor`: check this host's prerequisites; a broken configuration
//! file is one of the findings, not a reason to stop.

use std::path::PathBuf;

use super::Loaded;
use crate::config::{self, Config};
use crate::doctor;
use crate::env;
use crate::exit::ExitKind;
use crate::launch::{Invoker, settings::Settings};

pub fn run(invoker: &Invoker, loaded: Loaded) -> u8 {
    let from_env = env::get(&invoker.env, "RFAKE_SQUASHFUSE").map(PathBuf::from);
    let configured = from_env.clone().or_else(|| {
        loaded
            .as_ref()
            .ok()
            .and_then(|c| c.squashfuse.value.clone())
    });
    let summary = loaded
        .as_ref()
        .map(files_summary)
        .map_err(|e| e.to_string());
    // squashfuse matters only when it serves the images.
    let needed = from_env.is_some()
        || loaded
            .as_ref()
            .is_ok_and(|c| c.image_server.value == config::ImageServer::Squashfuse);
    let mut checks = doctor::run_checks(
        configured.as_deref(),
        env::get(&invoker.env, "PATH"),
        summary,
        needed,
    );
    let settings = loaded
        .as_ref()
        .map(Settings::from_config)
        .unwrap_or_default();
    // As a launch looks: the user's PATH only where user binds are allowed.
    let system_path = std::ffi::OsString::from(env::STANDARD_PATH.join(":"));
    let path_env = if settings.allow_user_binds.value {
        env::get(&invoker.env, "PATH")
    } else {
        Some(system_path.as_os_str())
    };
    checks.extend(doctor::gpu_checks(&settings, path_env));
    if doctor::report(&checks) {
        0
    } else {
        ExitKind::HostUnavailable.code()
    }
}

/// One line about which configuration files apply.
fn files_summary(config: &Config) -> String {
    let describe = |f: &Option<config::FileStatus>, what: &str| match f {
        Some(f) if f.found => format!("{what} {}", f.path.display()),
        Some(f) => format!("no {what} ({} absent)", f.path.display()),
        None => format!("no {what}"),
    };
    format!(
        "{}; {}",
        describe(&config.site_file, "site file"),
        describe(&config.user_file, "user file")
    )
}

/// `rfake doctor --image IMAGE`: the image's MPI stack against this
/// host's. Exit 0 when the hybrid or the bind model can work (or the image
/// has no MPI), 65 when neither can; an image that cannot be read fails as
/// `rfake inspect` does.
pub fn run_image(image: &std::path::Path) -> Result<u8, crate::error::Error> {
    let (_, files) = crate::inspect::inspect(image, None)?;
    let host = crate::inspect::ImageFiles::Directory("/".into());
    let (image_stack, host_stack) = (doctor::mpi::read(&files), doctor::mpi::read(&host));
    let assessment = doctor::mpi::assess(&image_stack, &host_stack);
    print!(
        "{}",
        doctor::mpi::render(
            &crate::text::shown(image),
            &image_stack,
            &host_stack,
            &assessment
        )
    );
    Ok(if assessment.usable() {
        0
    } else {
        ExitKind::BadImage.code()
    })
}
