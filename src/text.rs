//! Text for one-line messages.

use std::path::Path;

/// `text` with control characters escaped (`\n`, `\u{1b}`), so a message
/// stays on one line and cannot drive the terminal.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path for a one-line message (a newline in a file name is escaped).
pub fn shown(path: &Path) -> String {
    one_line(&path.to_string_lossy())
}

/// An I/O error in one line: the errno's description and name
/// (`Permission denied (EACCES)`), else its own text when it carries no
/// errno (corrupt compressed data, a truncated archive).
pub fn io_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(raw) => {
            let errno = nix::errno::Errno::from_raw(raw);
            format!("{} ({errno:?})", errno.desc())
        }
        None => one_line(&error.to_string()),
    }
}

/// A size for people: `512 B`, `4.9 KiB`, `29.6 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_escaped() {
        assert_eq!(one_line("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(shown(Path::new("/x/y z")), "/x/y z");
    }
}
