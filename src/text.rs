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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_escaped() {
        assert_eq!(one_line("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(shown(Path::new("/x/y z")), "/x/y z");
    }
}
