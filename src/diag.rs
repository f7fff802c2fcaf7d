//! Precise, operator-facing diagnostics for TOML inputs.
//!
//! Both the daemon config and the window files are TOML written by people at odd hours. Every
//! error about them must point at the spot (`file:line:col`) and, for a misspelt key, suggest the
//! right one. This module turns byte spans into line/column positions and rewrites serde's
//! "unknown field" messages into "did you mean" hints.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A 1-based line and column inside a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub col: usize,
}

/// Converts a byte offset into a 1-based line and column (columns count characters).
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    LineCol { line, col }
}

/// One finding about a file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub at: Option<LineCol>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: &Path, at: Option<LineCol>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            at,
            message: message.into(),
        }
    }

    /// A diagnostic located at a byte span of `text`.
    pub fn at_span(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic::new(path, span.map(|s| line_col(text, s.start)), message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                at.line,
                at.col,
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Builds a [`Diagnostic`] from a TOML parse/deserialize error, keeping only its first line
/// (the toml crate appends a source excerpt we render ourselves) and adding a "did you mean"
/// hint to unknown-key errors.
pub fn from_toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Diagnostic {
    let message = improve_message(err.message().trim());
    Diagnostic::at_span(path, text, err.span(), message)
}

/// Rewrites serde's ``unknown field `x`, expected one of `a`, `b` `` into
/// ``unknown key `x` (did you mean `a`?)``, or lists the valid keys when none is close.
pub fn improve_message(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, tail)) = rest.split_once('`') else {
        return message.to_string();
    };
    let expected: Vec<&str> = tail
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    match suggest(unknown, expected.iter().copied()) {
        Some(best) => format!("unknown key `{unknown}` (did you mean `{best}`?)"),
        None if expected.is_empty() => format!("unknown key `{unknown}`"),
        None => format!(
            "unknown key `{unknown}` (valid keys: {})",
            expected.join(", ")
        ),
    }
}

/// The closest candidate to `word`, if any is close enough to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Parses a human duration such as `"4h"`, `"90m"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration \"{text}\" ({e}); use forms like \"90m\", \"4h\", \"1h 30m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = \"x\"\n";
        assert_eq!(line_col(text, 0), LineCol { line: 1, col: 1 });
        assert_eq!(line_col(text, 6), LineCol { line: 2, col: 1 });
        assert_eq!(line_col(text, 11), LineCol { line: 2, col: 6 });
    }

    #[test]
    fn unknown_field_gets_a_hint() {
        let m =
            improve_message("unknown field `durtion`, expected one of `id`, `duration`, `lead`");
        assert_eq!(m, "unknown key `durtion` (did you mean `duration`?)");
        let m = improve_message("unknown field `zzz`, expected `id` or `lead`");
        assert_eq!(m, "unknown key `zzz` (valid keys: id, lead)");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("1h 30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("soon").is_err());
    }
}
