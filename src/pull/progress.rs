//! What a pull shows on stderr: on a terminal, a bar per blob (bytes, rate);
//! otherwise (a job log) one line per finished step; nothing with
//! `--quiet`. No bar ticks on a thread of its own: a launch that pulled
//! must be single-threaded again before it enters a user namespace.

use std::io::IsTerminal;
use std::time::Instant;

use crate::digest::Digest;

/// The display of one pull.
pub struct Progress {
    quiet: bool,
    terminal: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// A finished step, as one line (not under `--quiet`).
    pub fn step(&self, text: &str) {
        if !self.quiet {
            eprintln!("{}: {text}", crate::diag::prefix());
        }
    }

    /// The display of one blob's download of `size` bytes.
    pub fn blob(&self, what: &str, digest: &Digest, size: u64) -> BlobBar {
        let label = format!("{what} {}", short(digest));
        let bar = (!self.quiet && self.terminal).then(|| {
            let bar = indicatif::ProgressBar::new(size);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(label.clone());
            bar
        });
        BlobBar {
            bar,
            quiet: self.quiet,
            label,
            size,
            offset: 0,
            started: Instant::now(),
        }
    }
}

/// One blob's progress.
pub struct BlobBar {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    label: String,
    size: u64,
    /// Where this download started: the bytes a partial file already had.
    offset: u64,
    started: Instant,
}

impl BlobBar {
    /// The download starts at `offset` (a resumed partial file).
    pub fn resumed(&mut self, offset: u64) {
        self.offset = offset;
        self.started = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
    }

    /// `n` bytes received so far in this download.
    pub fn at(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.offset + n);
        }
    }

    /// The blob is in the cache.
    pub fn done(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let took = self.started.elapsed();
        let fetched = self.size.saturating_sub(self.offset);
        let resumed = if self.offset > 0 {
            format!(", resumed at {}", crate::text::human_size(self.offset))
        } else {
            String::new()
        };
        eprintln!(
            "{}: pulled {} ({} in {took:.1?}{resumed})",
            crate::diag::prefix(),
            self.label,
            crate::text::human_size(fetched),
        );
    }
}

/// `sha256:0123456789ab`: enough to tell blobs apart.
fn short(digest: &Digest) -> String {
    format!(
        "{}:{}",
        digest.algorithm,
        &digest.hex[..12.min(digest.hex.len())]
    )
}
