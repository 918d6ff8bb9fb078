//! Comparing a transcript's expected output with what the commands printed.
//!
//! Both sides are normalised by the same fixed rules first (values that vary
//! from run to run, written in the docs as realistic examples), then matched
//! line by line with two explicit wildcards:
//!
//! | rule | the docs write | matches |
//! |---|---|---|
//! | pid | `rfake[4242]:`, `pid 4243`, `process 4245` | any pid |
//! | duration | `11.0µs`, `212.0ms`, `1.2s` (a decimal point) | any duration |
//! | `ls` date | `Nov 20 16:44`, `Nov 20  2025` | any date in that form but time 0's (`Jan  1  1970`) |
//! | kernel | `Linux 6.18.44-fc-v657` | any release |
//! | join or warm socket | `rfake-join-1001-4a2b755a41e6bc61b8e19a3e` | any uid and hash |
//! | `[..]` | anywhere in a line | any text within that line |
//! | `...` | a line of its own (text after `... ` is a comment) | any number of lines |
//!
//! Trailing white space and trailing empty lines are ignored (editors strip
//! them).

use regex::Regex;
use std::sync::LazyLock;

/// A line of `...` (alone, or followed by a space and a comment): any lines.
pub fn is_any_lines(expected: &str) -> bool {
    let t = expected.trim_end();
    t == "..." || t.starts_with("... ")
}

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |p: &str, r: &'static str| Rule {
        pattern: Regex::new(p).expect("normalisation pattern"),
        replacement: r,
    };
    vec![
        rule(r"rfake\[\d+\]", "rfake[PID]"),
        rule(r"\b(pid|process) \d+\b", "$1 PID"),
        rule(r"rfake-(join|warm)-\d+-[0-9a-f]+", "rfake-$1-UID-HASH"),
        rule(r"\b\d+\.\d+(ns|µs|us|ms|s)\b", "DURATION"),
        rule(
            r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d (  ?\d{4}|\d\d:\d\d)\b",
            "DATE",
        ),
        rule(r"\bLinux \d+\.\d+[^\s)]*", "Linux KERNEL"),
    ]
});

/// The `ls -l` date of time 0, which a build gives what it makes itself:
/// a fixed value, compared as it is.
const EPOCH_DATE: &str = "Jan  1  1970";

/// `line` with the varying values replaced by their rule's name.
pub fn normalise(line: &str) -> String {
    let mut s = line.trim_end().to_string();
    for r in RULES.iter() {
        s = r
            .pattern
            .replace_all(&s, |c: &regex::Captures| {
                if &c[0] == EPOCH_DATE {
                    EPOCH_DATE.to_string()
                } else {
                    let mut out = String::new();
                    c.expand(r.replacement, &mut out);
                    out
                }
            })
            .into_owned();
    }
    s
}

/// Whether one (normalised) actual line matches one (normalised) expected
/// line, `[..]` matching any text within the line.
pub fn line_matches(expected: &str, actual: &str) -> bool {
    let pieces: Vec<&str> = expected.split("[..]").collect();
    if pieces.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    if !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn trim_trailing_empty(lines: &[String]) -> &[String] {
    let mut n = lines.len();
    while n > 0 && lines[n - 1].trim().is_empty() {
        n -= 1;
    }
    &lines[..n]
}

/// Whether `actual` matches `expected`, both as printed / as written (they
/// are normalised here). `unordered`: the lines may come in any order (each
/// expected line matches a different actual line; `...` allows extra ones).
pub fn matches(expected: &[String], actual: &[String], unordered: bool) -> bool {
    let exp: Vec<String> = trim_trailing_empty(expected)
        .iter()
        .map(|l| normalise(l))
        .collect();
    let act: Vec<String> = trim_trailing_empty(actual)
        .iter()
        .map(|l| normalise(l))
        .collect();
    if unordered {
        return matches_unordered(&exp, &act);
    }
    matches_from(&exp, &act)
}

fn matches_from(exp: &[String], act: &[String]) -> bool {
    match exp.first() {
        None => act.is_empty(),
        Some(e) if is_any_lines(e) => (0..=act.len()).any(|k| matches_from(&exp[1..], &act[k..])),
        Some(e) => act
            .first()
            .is_some_and(|a| line_matches(e, a) && matches_from(&exp[1..], &act[1..])),
    }
}

fn matches_unordered(exp: &[String], act: &[String]) -> bool {
    let any_extra = exp.iter().any(|e| is_any_lines(e));
    let mut used = vec![false; act.len()];
    for e in exp.iter().filter(|e| !is_any_lines(e)) {
        match (0..act.len()).find(|&i| !used[i] && line_matches(e, &act[i])) {
            Some(i) => used[i] = true,
            None => return false,
        }
    }
    any_extra || used.iter().all(|u| *u)
}

/// A line diff for the report: ` ` both, `-` expected only, `+` actual only.
/// Lines are paired when their normalised forms match, so a differing pid
/// or duration alone shows as an unchanged line.
pub fn diff(expected: &[String], actual: &[String]) -> String {
    let exp = trim_trailing_empty(expected);
    let act = trim_trailing_empty(actual);
    let ne: Vec<String> = exp.iter().map(|l| normalise(l)).collect();
    let na: Vec<String> = act.iter().map(|l| normalise(l)).collect();
    let same = |i: usize, j: usize| is_any_lines(&ne[i]) || line_matches(&ne[i], &na[j]);
    // Longest common subsequence, table from the ends.
    let (n, m) = (exp.len(), act.len());
    let mut t = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if same(i, j) {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && same(i, j) {
            out.push_str(&format!("   {}\n", act[j]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[i + 1][j] >= t[i][j + 1]) {
            out.push_str(&format!("  -{}\n", exp[i]));
            i += 1;
        } else {
            out.push_str(&format!("  +{}\n", act[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn varying_values_are_normalised_on_both_sides() {
        assert!(matches(
            &v("rfake[4242]: info: total 161.0ms"),
            &v("rfake[77]: info: total 3.2ms"),
            false
        ));
        assert!(matches(
            &v("rfake[4242]: debug: squashfuse pid 4243 serving x (11.0µs)"),
            &v("rfake[1]: debug: squashfuse pid 9 serving x (741.0ns)"),
            false
        ));
        assert!(matches(
            &v("-rw-r--r--    1 a b        26 Nov 20  2025 /etc/x"),
            &v("-rw-r--r--    1 a b        26 Dec  4 08:53 /etc/x"),
            false
        ));
        // Time 0 is no varying date: a doc showing it for a file whose
        // source time the build keeps is wrong.
        assert!(!matches(
            &v("-rw-r--r--    1 a b        26 Jan  1  1970 /etc/x"),
            &v("-rw-r--r--    1 a b        26 Dec  4 08:53 /etc/x"),
            false
        ));
        assert!(matches(
            &v("drwx------    2 a b         0 Jan  1  1970 /root"),
            &v("drwx------    2 a b         0 Jan  1  1970 /root"),
            false
        ));
        assert!(matches(
            &v("ok       kernel           Linux 6.18.44-fc-v657"),
            &v("ok       kernel           Linux 5.10.0-28-amd64"),
            false
        ));
        assert!(matches(
            &v("socket @rfake-join-1001-4a2b755a41e6bc61b8e19a3e"),
            &v("socket @rfake-join-1002-00ff"),
            false
        ));
        assert!(matches(
            &v("warm mount: socket @rfake-warm-1001-1c9de03876db59dec8b06ba7, linger 5s"),
            &v("warm mount: socket @rfake-warm-1001-77, linger 5s"),
            false
        ));
        // What does not vary is compared exactly.
        assert!(!matches(
            &v("warm_linger = 5"),
            &v("warm_linger = 0"),
            false
        ));
        assert!(!matches(
            &v("1983023 of file data"),
            &v("1983023 bytes of file data"),
            false
        ));
        assert!(!matches(&v("rfake[4242]: x"), &v("rfake[4242]: y"), false));
    }

    #[test]
    fn trailing_space_and_trailing_empty_lines_are_ignored() {
        assert!(matches(&v("PS1=rfake> \n"), &v("PS1=rfake>\n\n"), false));
        assert!(!matches(&v("a\n\nb"), &v("a\nb"), false));
    }

    #[test]
    fn inline_wildcard() {
        assert!(line_matches("uuid [..], created 1", "uuid abc, created 1"));
        assert!(line_matches("[..]", ""));
        assert!(line_matches("a[..]b[..]c", "a-b-b-c"));
        assert!(!line_matches("a[..]b[..]c", "a-c-b"));
        assert!(!line_matches("ab[..]ba", "aba"));
    }

    #[test]
    fn any_lines() {
        let exp = v("first\n...\nlast");
        assert!(matches(&exp, &v("first\nlast"), false));
        assert!(matches(&exp, &v("first\nx\ny\nlast"), false));
        assert!(!matches(&exp, &v("first\nx\nlast\nz"), false));
        assert!(matches(&v("a\n...   (a comment)"), &v("a\nb\nc"), false));
        assert!(matches(&v("..."), &v(""), false));
    }

    #[test]
    fn unordered_lines() {
        let exp = v("rank 1 ok\nrank 0 ok");
        assert!(matches(&exp, &v("rank 0 ok\nrank 1 ok"), true));
        assert!(!matches(&exp, &v("rank 0 ok\nrank 1 ok\nrank 2 ok"), true));
        assert!(!matches(&exp, &v("rank 0 ok\nrank 0 ok"), true));
        assert!(matches(&v("rank 1 ok\n..."), &v("x\nrank 1 ok"), true));
    }

    #[test]
    fn diff_pairs_lines_that_only_differ_in_varying_values() {
        let d = diff(
            &v("rfake[4242]: a (1.0ms)\nold line\nend"),
            &v("rfake[9]: a (2.0ms)\nnew line\nend"),
        );
        assert_eq!(
            d,
            "   rfake[9]: a (2.0ms)\n  -old line\n  +new line\n   end\n"
        );
    }
}
