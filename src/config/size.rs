//! Sizes: `"64M"`, `"1G"`, `"512K"`, `"1024"` or a TOML integer of bytes.
//!
//! Suffixes are binary (`1K` = 1024 bytes), as for tmpfs's own `size=`
//! option (`mount(8)`, `tmpfs(5)`), upper or lower case.

/// The largest size rfake accepts: 1 TiB.
pub const MAX_SIZE: u64 = 1 << 40;
/// The largest build size limit (`build_max_size`, `--max-size`): 1024 TiB.
pub const MAX_BUILD_SIZE: u64 = 1 << 50;

/// The suffixes, with their multipliers.
const UNITS: [(char, u64); 4] = [
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
];

/// Why a size was refused; the message completes "writable_tmpfs_size: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "{0:?} is not a size: write a whole number with an optional K, M, G or T suffix, like \"64M\""
    )]
    Syntax(String),
    #[error("{0:?} must be larger than 0")]
    Zero(String),
    #[error("{0:?} is larger than the limit of {max}", max = format_size(*.1))]
    TooLarge(String, u64),
}

/// Parse a size string into bytes, 0 < size ≤ [`MAX_SIZE`].
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    parse_size_within(text, MAX_SIZE)
}

/// A build size limit: a size up to [`MAX_BUILD_SIZE`], or `0` for none
/// (`u64::MAX`).
pub fn parse_build_size(text: &str) -> Result<u64, SizeError> {
    if text == "0" {
        return Ok(u64::MAX);
    }
    parse_size_within(text, MAX_BUILD_SIZE)
}

/// Parse a size string into bytes, 0 < size ≤ `max`.
fn parse_size_within(text: &str, max: u64) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(text.to_string());
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let (_, m) = UNITS
                .iter()
                .find(|(unit, _)| unit.eq_ignore_ascii_case(&c))
                .ok_or_else(syntax)?;
            (&text[..i], *m)
        }
        _ => (text, 1),
    };
    // `u64::from_str` would also take a leading '+'.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError::TooLarge(text.to_string(), max))?;
    check_bytes_within(bytes, text, max)
}

/// Check a plain byte count (a TOML integer, shown as `text`).
pub fn check_bytes(bytes: u64, text: &str) -> Result<u64, SizeError> {
    check_bytes_within(bytes, text, MAX_SIZE)
}

/// Check a plain byte count, 0 < bytes ≤ `max`.
pub fn check_bytes_within(bytes: u64, text: &str, max: u64) -> Result<u64, SizeError> {
    match bytes {
        0 => Err(SizeError::Zero(text.to_string())),
        b if b > max => Err(SizeError::TooLarge(text.to_string(), max)),
        b => Ok(b),
    }
}

/// The shortest exact spelling of `bytes`: `64M` for 67108864.
pub fn format_size(bytes: u64) -> String {
    UNITS
        .iter()
        .rev()
        .find(|(_, m)| bytes % m == 0 && bytes > 0)
        .map(|(unit, m)| format!("{}{unit}", bytes / m))
        .unwrap_or_else(|| bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_table() {
        let syntax = |s: &str| Err(SizeError::Syntax(s.into()));
        let cases: &[(&str, Result<u64, SizeError>)] = &[
            ("64M", Ok(64 << 20)),
            ("64m", Ok(64 << 20)),
            ("1G", Ok(1 << 30)),
            ("512K", Ok(512 << 10)),
            ("1T", Ok(1 << 40)),
            ("1024", Ok(1024)),
            ("1", Ok(1)),
            ("0", Err(SizeError::Zero("0".into()))),
            ("0M", Err(SizeError::Zero("0M".into()))),
            ("2T", Err(SizeError::TooLarge("2T".into(), MAX_SIZE))),
            (
                "1099511627777",
                Err(SizeError::TooLarge("1099511627777".into(), MAX_SIZE)),
            ),
            (
                "99999999999999999999",
                Err(SizeError::TooLarge("99999999999999999999".into(), MAX_SIZE)),
            ),
            (
                "17179869184G",
                Err(SizeError::TooLarge("17179869184G".into(), MAX_SIZE)),
            ),
            ("12Q", syntax("12Q")),
            ("", syntax("")),
            ("M", syntax("M")),
            ("1.5G", syntax("1.5G")),
            ("-1", syntax("-1")),
            ("+1", syntax("+1")),
            (" 1M", syntax(" 1M")),
            ("1 M", syntax("1 M")),
            ("1MB", syntax("1MB")),
            ("1MiB", syntax("1MiB")),
            ("1é", syntax("1é")),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_size(input), want, "parse_size({input:?})");
        }
    }

    #[test]
    fn build_sizes() {
        assert_eq!(parse_build_size("0"), Ok(u64::MAX));
        assert_eq!(parse_build_size("4T"), Ok(4 << 40));
        assert_eq!(parse_build_size("1024T"), Ok(MAX_BUILD_SIZE));
        assert_eq!(
            parse_build_size("1025T"),
            Err(SizeError::TooLarge("1025T".into(), MAX_BUILD_SIZE))
        );
        assert_eq!(
            parse_build_size("1025T").unwrap_err().to_string(),
            "\"1025T\" is larger than the limit of 1024T"
        );
        assert_eq!(parse_build_size("0M"), Err(SizeError::Zero("0M".into())));
        assert!(matches!(parse_build_size("x"), Err(SizeError::Syntax(_))));
    }

    #[test]
    fn format_round_trips() {
        for bytes in [1, 1000, 1024, 64 << 20, 1536 << 20, 1 << 30, 1 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(1000), "1000");
    }
}
