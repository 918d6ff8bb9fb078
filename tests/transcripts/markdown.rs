//! The parts of a Markdown document the doc tests read: fenced code blocks,
//! tables, and the marker comments directly above them.
//!
//! A marker is an HTML comment on the line right above a fence or a table
//! (invisible once rendered): `<!-- transcript: ... -->` above a code block,
//! `<!-- options: exec run shell -->`, `<!-- config-keys -->` or
//! `<!-- man-pages -->` above a table. A marker anywhere else is an error,
//! so a misplaced one cannot be silently ignored.

/// A fenced code block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Line of the opening fence (1-based).
    pub line: usize,
    /// The info string (`console`, `toml`, `sh`...).
    pub info: String,
    /// Its lines, with the fence's indentation removed, and their numbers.
    pub lines: Vec<(usize, String)>,
    /// The text of the `<!-- transcript: ... -->` marker above it.
    pub marker: Option<String>,
}

impl Block {
    pub fn is_console(&self) -> bool {
        self.info.split_whitespace().next() == Some("console")
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        for (_, l) in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// A table with a marker above it.
#[derive(Debug, Clone)]
pub struct Table {
    pub line: usize,
    /// The marker's text: `options: exec run shell`, `config-keys`...
    pub marker: String,
    /// The body rows (header and separator left out), cells trimmed.
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Doc {
    pub blocks: Vec<Block>,
    pub tables: Vec<Table>,
}

const MARKERS: [&str; 4] = ["transcript:", "options:", "config-keys", "man-pages"];

/// The text of a marker comment on `line`, if it is one.
fn marker(line: &str) -> Option<&str> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    MARKERS
        .iter()
        .any(|m| inner.starts_with(m))
        .then_some(inner)
}

fn fence(line: &str) -> Option<(usize, char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let c = rest.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = rest.len() - rest.trim_start_matches(c).len();
    (n >= 3).then(|| (indent, c, n, rest[n..].trim()))
}

/// Split a table row into its cells (`\|` stays inside a cell).
fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut out = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

/// Parse `text`; an error names the line.
pub fn parse(text: &str) -> Result<Doc, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut doc = Doc::default();
    let mut pending: Option<(usize, String)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let no = i + 1;
        if let Some(m) = marker(line) {
            if let Some((at, _)) = pending {
                return Err(format!(
                    "line {at}: marker not directly above a block or table"
                ));
            }
            pending = Some((no, m.to_string()));
            i += 1;
            continue;
        }
        if let Some((indent, c, n, info)) = fence(line) {
            let mut body = Vec::new();
            let mut j = i + 1;
            loop {
                let Some(l) = lines.get(j) else {
                    return Err(format!("line {no}: code block never closed"));
                };
                if let Some((_, c2, n2, rest)) = fence(l) {
                    if c2 == c && n2 >= n && rest.is_empty() {
                        break;
                    }
                }
                let strip = l.len() - l.trim_start_matches(' ').len();
                body.push((j + 1, l[strip.min(indent)..].to_string()));
                j += 1;
            }
            let marker = match pending.take() {
                Some((_, m)) if m.starts_with("transcript:") => {
                    Some(m["transcript:".len()..].trim().to_string())
                }
                Some((at, m)) => return Err(format!("line {at}: `{m}` marks a code block")),
                None => None,
            };
            doc.blocks.push(Block {
                line: no,
                info: info.to_string(),
                lines: body,
                marker,
            });
            i = j + 1;
            continue;
        }
        if line.trim_start().starts_with('|') {
            let start = i;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                i += 1;
            }
            if let Some((at, m)) = pending.take() {
                if m.starts_with("transcript:") {
                    return Err(format!("line {at}: a transcript marker above a table"));
                }
                let rows = lines[start..i]
                    .iter()
                    .skip(2) // header and separator
                    .map(|r| cells(r))
                    .collect();
                doc.tables.push(Table {
                    line: start + 1,
                    marker: m,
                    rows,
                });
            }
            continue;
        }
        if let Some((at, _)) = pending {
            return Err(format!(
                "line {at}: marker not directly above a block or table"
            ));
        }
        i += 1;
    }
    if let Some((at, _)) = pending {
        return Err(format!("line {at}: marker at the end of the file"));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_markers_and_tables() {
        let doc = parse(
            "# t\n\
             <!-- transcript: not-runnable root: needs root -->\n\
             ```console\n\
             $ id\n\
             ```\n\
             - item\n\
             \n  ```console\n  $ echo a\n  a\n  ```\n\
             <!-- options: build -->\n\
             | option | meaning |\n\
             |---|---|\n\
             | `--a` \\| `--b` | x |\n\
             <!-- an ordinary comment -->\n\
             ~~~~toml\n```\nx\n~~~~\n",
        )
        .unwrap();
        assert_eq!(doc.blocks.len(), 3);
        let b = &doc.blocks[0];
        assert_eq!((b.line, b.is_console()), (3, true));
        assert_eq!(b.marker.as_deref(), Some("not-runnable root: needs root"));
        assert_eq!(b.lines, vec![(4, "$ id".to_string())]);
        let b = &doc.blocks[1];
        assert_eq!(b.lines, vec![(9, "$ echo a".into()), (10, "a".into())]);
        assert!(b.marker.is_none());
        assert_eq!(doc.blocks[2].text(), "```\nx\n");
        assert_eq!(doc.tables.len(), 1);
        assert_eq!(doc.tables[0].marker, "options: build");
        assert_eq!(doc.tables[0].rows, vec![vec!["`--a` | `--b`", "x"]]);
    }

    #[test]
    fn a_misplaced_marker_is_an_error() {
        assert!(parse("<!-- transcript: unordered -->\ntext\n").is_err());
        assert!(parse("<!-- transcript: unordered -->\n\n```console\n```\n").is_err());
        assert!(parse("<!-- config-keys -->\n```console\n```\n").is_err());
        assert!(parse("<!-- transcript: unordered -->\n| a |\n|---|\n").is_err());
        assert!(parse("```console\n$ x\n").is_err());
    }
}
