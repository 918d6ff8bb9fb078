//! Diagnostics for HPC job logs: every line carries `rfake[pid]:` so the
//! ranks interleaved in one job log can be told apart, `-v`/`-vv` (or
//! `RFAKE_LOG`) show each set-up step and its duration, and warnings are
//! repeated when rfake exits, so they are not lost above the payload's output.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PAYLOAD_RAN: AtomicBool = AtomicBool::new(false);

struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record.level() == log::Level::Warn && self.inner.matches(record) {
            if let Ok(mut w) = WARNINGS.lock() {
                w.push(record.args().to_string());
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// rfake's pid on the host, kept by [`keep_pid`] for a forked init, which
/// is pid 1 in its own namespace.
static HOST_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Keep saying rfake's host pid in a process forked into a PID namespace.
pub fn keep_pid() {
    HOST_PID.store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
}

/// The prefix of every line rfake prints: `rfake[pid]`.
pub fn prefix() -> String {
    match HOST_PID.load(std::sync::atomic::Ordering::SeqCst) {
        0 => format!("rfake[{}]", std::process::id()),
        pid => format!("rfake[{pid}]"),
    }
}

/// Set up logging: `RFAKE_LOG` (env_logger syntax, e.g. `debug` or
/// `rfake::rootfs=debug`), when set, replaces the level `-v` counts give.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filters = match std::env::var("RFAKE_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec,
        _ => level.to_string(),
    };
    let inner = env_logger::Builder::new()
        .parse_filters(&filters)
        .format(|buf, record| {
            let label = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(buf, "{}: {label}: {}", prefix(), record.args())
        })
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// Remember that the payload started (its output may hide our warnings).
pub fn payload_started() {
    PAYLOAD_RAN.store(true, Ordering::SeqCst);
}

/// Print one error line.
pub fn error(message: &str) {
    eprintln!("{}: error: {message}", prefix());
}

/// Repeat the warnings given before the payload ran.
pub fn repeat_warnings() {
    if !PAYLOAD_RAN.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(w) = WARNINGS.lock() {
        for msg in w.iter() {
            eprintln!("{}: warning (repeated): {msg}", prefix());
        }
    }
}
