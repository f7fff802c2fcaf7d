//! Parsing and validating one window file, alone.
//!
//! Every finding carries `file:line:col` when the TOML parser or the offending value gives one,
//! and all findings of a file are reported together so that an operator fixes them in one pass.
//! Errors make the file invalid; warnings (overlapping recurrences, very long windows, a one-off
//! wholly in the past) are shown by `check` but do not reject the file.
//!
//! Cost is linear in the file: positions come from a line index built once per file, duplicate
//! ids from a hash map, and a recurrence is only expanded over its next 400 days (to find where
//! it overlaps itself) when the gaps between its starts could be shorter than its duration.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use jiff::civil;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use toml::Spanned;

use super::occurrences;
use super::{DstGap, LeadSpec, Schedule, Window, split_cloudlet};
use crate::diag::{self, Diagnostic};
use crate::timeutil::{minus, plus};

/// Windows longer than this earn a warning: a typo in `duration` is likelier than a real
/// week-long maintenance.
pub const LONG_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// The outcome of parsing one file. The file is valid iff `errors` is empty.
#[derive(Debug, Clone, Default)]
pub struct ParsedFile {
    pub windows: Vec<Window>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// The croner dialect we accept: 5 or 6 fields (optional seconds), no year field, POSIX day
/// OR-ing, `L`, `#`, `W` and names.
pub fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parsed cron patterns by their text, shared by the files of one load. croner's parse is
/// costly (its year field alone is a bitmap of 5,000 entries, built bit by bit) and so is a
/// copy of its result, while a directory tends to repeat a few patterns.
#[derive(Default)]
pub struct CronCache {
    parsed: HashMap<String, Arc<croner::Cron>>,
    /// Whether a pattern ever matches, by the address of its `Cron`; the entry holds the `Cron`
    /// too, so that the address cannot be reused for another one while the cache lives.
    ever_matches: HashMap<usize, (Arc<croner::Cron>, bool)>,
}

impl CronCache {
    /// Does the pattern ever match, ignoring skip dates and bounds? One search per pattern.
    fn ever_matches(&mut self, cron: &Arc<croner::Cron>) -> bool {
        let entry = self
            .ever_matches
            .entry(Arc::as_ptr(cron) as usize)
            .or_insert_with(|| {
                let probe = civil::date(2000, 1, 1).at(0, 0, 0, 0);
                let matches = cron.find_next_occurrence(&probe, true).is_ok();
                (Arc::clone(cron), matches)
            });
        entry.1
    }

    fn parse(&mut self, text: &str) -> Result<Arc<croner::Cron>, croner::errors::CronError> {
        if let Some(cron) = self.parsed.get(text) {
            return Ok(Arc::clone(cron));
        }
        let cron = Arc::new(cron_parser().parse(text)?);
        self.parsed.insert(text.to_string(), Arc::clone(&cron));
        Ok(cron)
    }
}

/// Parses and validates `text` (the content of `path`). `now` is only used for warnings about
/// the past and for sampling recurrences.
pub fn parse_file(path: &Path, text: &str, now: Timestamp) -> ParsedFile {
    parse_file_with(path, text, now, &mut CronCache::default())
}

/// [`parse_file`], reusing (and adding to) the cron patterns parsed for earlier files.
pub fn parse_file_with(
    path: &Path,
    text: &str,
    now: Timestamp,
    crons: &mut CronCache,
) -> ParsedFile {
    let mut out = ParsedFile::default();
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            out.errors.push(diag::from_toml_error(path, text, &e));
            return out;
        }
    };
    if raw.window.is_empty() {
        out.warnings.push(Diagnostic::new(
            path,
            None,
            "no [[window]] tables in this file",
        ));
    }
    let lines = LineIndex::new(text);
    // Window id -> line of its first declaration in this file.
    let mut ids_in_file: HashMap<String, usize> = HashMap::new();
    for table in raw.window {
        let span = table.span();
        let mut v = WindowValidator {
            path,
            text,
            lines: &lines,
            crons: &mut *crons,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let window = v.validate(table.into_inner(), span, now);
        if let Some(w) = &window {
            if let Some(first_line) = ids_in_file.get(&w.id) {
                v.errors.push(Diagnostic::new(
                    path,
                    Some(diag::LineCol {
                        line: w.line,
                        col: 1,
                    }),
                    format!(
                        "duplicate window id \"{}\" (first declared at line {first_line})",
                        w.id
                    ),
                ));
            } else {
                ids_in_file.insert(w.id.clone(), w.line);
            }
        }
        out.errors.append(&mut v.errors);
        out.warnings.append(&mut v.warnings);
        if let Some(w) = window {
            out.windows.push(w);
        }
    }
    if !out.errors.is_empty() {
        out.windows.clear();
    }
    out
}

/// The start of every line of a text, so that a byte offset becomes a line and column with a
/// binary search instead of a scan from the start of the file (which made a file of many windows
/// quadratic). Agrees with [`diag::line_col`].
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    fn line_col(&self, offset: usize) -> diag::LineCol {
        let offset = offset.min(self.text.len());
        if !self.text.is_char_boundary(offset) {
            return diag::line_col(self.text, offset);
        }
        // Lines starting at or before `offset`: 1-based line number (the first starts at 0).
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let col = self
            .text
            .get(line_start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        diag::LineCol { line, col }
    }
}

struct WindowValidator<'a> {
    path: &'a Path,
    text: &'a str,
    lines: &'a LineIndex<'a>,
    crons: &'a mut CronCache,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl WindowValidator<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let at = self.lines.line_col(span.start);
        self.errors
            .push(Diagnostic::new(self.path, Some(at), message));
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let at = self.lines.line_col(span.start);
        self.warnings
            .push(Diagnostic::new(self.path, Some(at), message));
    }

    /// The offset of the `[[window]]` header of a table whose span is `span`. The span of a
    /// table in an array of tables starts at its own header; should it ever start after it, the
    /// nearest header before the span is the table's.
    fn header_offset(&self, span: &Range<usize>) -> usize {
        let rest = self.text.get(span.start..).unwrap_or("");
        if rest.trim_start().starts_with("[[") {
            return span.start + (rest.len() - rest.trim_start().len());
        }
        self.text
            .get(..span.start)
            .and_then(|b| b.rfind("[[window]]"))
            .unwrap_or(span.start)
    }

    fn validate(&mut self, raw: RawWindow, span: Range<usize>, now: Timestamp) -> Option<Window> {
        let header_span = {
            let at = self.header_offset(&span);
            at..at + 1
        };
        let line = self.lines.line_col(header_span.start).line;
        let errors_before = self.errors.len();

        let id = match raw.id {
            Some(id) => {
                let valid = !id.get_ref().is_empty()
                    && id
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    self.err(
                        id.span(),
                        format!(
                            "invalid window id \"{}\": use letters, digits, '-', '_' and '.'",
                            id.get_ref()
                        ),
                    );
                }
                id.into_inner()
            }
            None => {
                self.err(header_span.clone(), "missing required key `id`");
                String::new()
            }
        };
        let region = match raw.region {
            Some(r) if r.get_ref().trim().is_empty() => {
                self.err(r.span(), "region must not be empty");
                String::new()
            }
            Some(r) => r.into_inner(),
            None => {
                self.err(header_span.clone(), "missing required key `region`");
                String::new()
            }
        };

        let mut cloudlets = Vec::new();
        match raw.cloudlets {
            None => self.err(header_span.clone(), "missing required key `cloudlets`"),
            Some(list) if list.get_ref().is_empty() => self.err(
                list.span(),
                "cloudlets must list at least one \"organization/name\"",
            ),
            Some(list) => {
                for c in list.into_inner() {
                    if split_cloudlet(c.get_ref()).is_none() {
                        self.err(
                            c.span(),
                            format!(
                                "invalid cloudlet \"{}\": expected \"organization/name\"",
                                c.get_ref()
                            ),
                        );
                    } else if cloudlets.contains(c.get_ref()) {
                        self.warn(
                            c.span(),
                            format!("cloudlet \"{}\" is listed twice", c.get_ref()),
                        );
                    } else {
                        cloudlets.push(c.into_inner());
                    }
                }
            }
        }

        let (timezone_name, timezone) = match &raw.timezone {
            None => ("UTC".to_string(), TimeZone::UTC),
            Some(tz) => match TimeZone::get(tz.get_ref()) {
                Ok(zone) => (tz.get_ref().clone(), zone),
                Err(_) => {
                    let hint = suggest_zone(tz.get_ref())
                        .map(|s| format!(" (did you mean \"{s}\"?)"))
                        .unwrap_or_default();
                    self.err(
                        tz.span(),
                        format!("unknown time zone \"{}\"{hint}", tz.get_ref()),
                    );
                    ("UTC".to_string(), TimeZone::UTC)
                }
            },
        };

        let schedule = match (raw.start, raw.cron) {
            (Some(_), Some(cron)) => {
                self.err(
                    cron.span(),
                    "a window has either `start` (one-off) or `cron` (recurring), not both",
                );
                None
            }
            (None, None) => {
                self.err(
                    header_span.clone(),
                    "missing `start` (one-off, e.g. \"2026-12-06T02:00\") or `cron` (recurring, e.g. \"0 2 * * Sun\")",
                );
                None
            }
            (Some(start), None) => self.civil_datetime(&start).map(Schedule::Once),
            (None, Some(cron)) => match self.crons.parse(cron.get_ref()) {
                Ok(parsed) => Some(Schedule::Cron {
                    pattern: cron.get_ref().trim().to_string(),
                    cron: parsed,
                }),
                Err(e) => {
                    self.err(
                        cron.span(),
                        format!("invalid cron pattern \"{}\": {e}", cron.get_ref()),
                    );
                    None
                }
            },
        };

        let duration = match &raw.duration {
            None => {
                self.err(
                    header_span.clone(),
                    "missing required key `duration` (e.g. \"4h\")",
                );
                None
            }
            Some(d) => match diag::parse_duration(d.get_ref()) {
                Ok(dur) if dur.is_zero() => {
                    self.err(d.span(), "duration must be greater than zero");
                    None
                }
                Ok(dur) => {
                    if dur > LONG_WINDOW {
                        self.warn(
                            d.span(),
                            format!(
                                "window lasts {} (more than 7 days); is that intended?",
                                humantime::format_duration(dur)
                            ),
                        );
                    }
                    Some(dur)
                }
                Err(msg) => {
                    self.err(d.span(), msg);
                    None
                }
            },
        };

        let lead = match &raw.lead {
            None => LeadSpec::Auto,
            Some(l) if l.get_ref().trim() == "auto" => LeadSpec::Auto,
            Some(l) => match diag::parse_duration(l.get_ref()) {
                Ok(d) => LeadSpec::Fixed(d),
                Err(msg) => {
                    self.err(l.span(), format!("{msg}, or \"auto\""));
                    LeadSpec::Auto
                }
            },
        };

        let dst_gap = match &raw.dst_gap {
            None => DstGap::Shift,
            Some(g) => match g.get_ref().as_str() {
                "shift" => DstGap::Shift,
                "skip" => DstGap::Skip,
                other => {
                    self.err(
                        g.span(),
                        format!("invalid dst_gap \"{other}\": expected \"shift\" or \"skip\""),
                    );
                    DstGap::Shift
                }
            },
        };

        let mut skip = BTreeSet::new();
        for d in raw.skip.unwrap_or_default() {
            if let Some(date) = self.civil_date(&d, "skip") {
                skip.insert(date);
            }
        }
        let not_before = raw
            .not_before
            .as_ref()
            .and_then(|d| self.civil_date(d, "not_before"));
        let not_after = raw
            .not_after
            .as_ref()
            .and_then(|d| self.civil_date(d, "not_after"));
        if let (Some(b), Some(a), Some(span)) = (not_before, not_after, raw.not_after.as_ref())
            && a < b
        {
            self.err(
                span.span(),
                format!("not_after ({a}) is before not_before ({b})"),
            );
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let (schedule, duration) = (schedule?, duration?);
        let window = Window {
            id,
            source: self.path.to_path_buf(),
            line,
            region,
            cloudlets,
            schedule,
            timezone_name,
            timezone,
            duration,
            failover: raw.failover.unwrap_or(true),
            lead,
            skip,
            not_before,
            not_after,
            dst_gap,
        };
        self.semantic_warnings(&window, header_span, now);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(window)
    }

    /// Checks that need occurrences: a cron that never fires (error), a recurrence overlapping
    /// itself, a one-off wholly in the past or dropped by its own DST policy (warnings).
    fn semantic_warnings(&mut self, w: &Window, at: Range<usize>, now: Timestamp) {
        match &w.schedule {
            Schedule::Once(_) => {
                let far = plus(now, SignedDuration::from_hours(24 * 366 * 50));
                let far_past = minus(now, SignedDuration::from_hours(24 * 366 * 50));
                let (occ, skipped) = occurrences::occurrences(w, far_past, far);
                match occ.first() {
                    Some(o) if o.end <= now => self.warn(
                        at,
                        format!(
                            "window \"{}\" ended in the past ({}); it has no effect",
                            w.id,
                            o.end
                                .to_zoned(w.timezone.clone())
                                .strftime("%Y-%m-%d %H:%M %Z")
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        let why = skipped
                            .first()
                            .map(|s| s.reason.to_string())
                            .unwrap_or_else(|| "excluded by its own bounds".into());
                        self.warn(at, format!("window \"{}\" never happens: {why}", w.id));
                    }
                }
            }
            Schedule::Cron { pattern, cron } => {
                // Does the pattern ever match, ignoring skip dates and bounds?
                if !self.crons.ever_matches(cron) {
                    self.err(at, format!("cron pattern \"{pattern}\" never matches"));
                    return;
                }
                let until = plus(now, SignedDuration::from_hours(24 * 400));
                if !occurrences::may_overlap(w, now, until) {
                    // No two starts can be closer than the duration: only whether there is an
                    // occurrence at all matters, and the first one answers that.
                    if w.not_after.is_some() && !occurrences::any_occurrence(w, now, until) {
                        self.warn_no_occurrence(w, at);
                    }
                    return;
                }
                let (occ, _) = occurrences::occurrences(w, now, until);
                if occ.is_empty() {
                    if w.not_after.is_some() {
                        self.warn_no_occurrence(w, at);
                    }
                    return;
                }
                if let Some(pair) = occ.windows(2).find(|p| p[1].start < p[0].end) {
                    let z = |t: Timestamp| {
                        t.to_zoned(w.timezone.clone())
                            .strftime("%Y-%m-%d %H:%M")
                            .to_string()
                    };
                    self.warn(
                        at,
                        format!(
                            "occurrences of \"{}\" overlap each other (e.g. {} lasts past {}); they merge into one span",
                            w.id,
                            z(pair[0].start),
                            z(pair[1].start)
                        ),
                    );
                }
            }
        }
    }

    fn warn_no_occurrence(&mut self, w: &Window, at: Range<usize>) {
        self.warn(
            at,
            format!(
                "window \"{}\" has no occurrence in the next 400 days (not_after has passed?)",
                w.id
            ),
        );
    }

    fn civil_datetime(&mut self, value: &Spanned<DateText>) -> Option<civil::DateTime> {
        let text = value.get_ref().as_text();
        let t = text.trim();
        let has_offset = t.ends_with('Z')
            || t.ends_with('z')
            || t.get(10..)
                .is_some_and(|rest| rest.contains('+') || rest.contains('-'));
        if has_offset {
            self.err(
                value.span(),
                format!(
                    "start \"{t}\" carries an offset; write the civil time in the window's timezone (e.g. \"2026-12-06T02:00\")"
                ),
            );
            return None;
        }
        match civil::DateTime::from_str(t) {
            Ok(dt) => Some(dt),
            Err(e) => {
                self.err(
                    value.span(),
                    format!(
                        "invalid start \"{t}\": {e}; expected a civil date-time like \"2026-12-06T02:00\""
                    ),
                );
                None
            }
        }
    }

    fn civil_date(&mut self, value: &Spanned<DateText>, key: &str) -> Option<civil::Date> {
        let text = value.get_ref().as_text();
        match civil::Date::from_str(text.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.err(
                    value.span(),
                    format!("invalid {key} date \"{text}\": expected YYYY-MM-DD"),
                );
                None
            }
        }
    }
}

/// The closest IANA zone name, for "did you mean".
fn suggest_zone(name: &str) -> Option<String> {
    let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    diag::suggest(name, names.iter().map(String::as_str)).map(str::to_string)
}

/// A date or date-time written either as a TOML string or as a bare TOML date/time.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum DateText {
    Text(String),
    Toml(toml::value::Datetime),
}

impl DateText {
    fn as_text(&self) -> String {
        match self {
            DateText::Text(s) => s.clone(),
            DateText::Toml(d) => d.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    window: Vec<Spanned<RawWindow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    id: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    cloudlets: Option<Spanned<Vec<Spanned<String>>>>,
    start: Option<Spanned<DateText>>,
    cron: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    failover: Option<bool>,
    lead: Option<Spanned<String>>,
    skip: Option<Vec<Spanned<DateText>>>,
    not_before: Option<Spanned<DateText>>,
    not_after: Option<Spanned<DateText>>,
    dst_gap: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_str("2026-11-29T12:00:00Z").unwrap()
    }

    fn window(id: &str, body: &str) -> String {
        format!("[[window]]\nid = \"{id}\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\n{body}\n")
    }

    fn findings(text: &str) -> (Vec<String>, Vec<String>) {
        let p = parse_file(Path::new("t.toml"), text, now());
        (
            p.errors.iter().map(ToString::to_string).collect(),
            p.warnings.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn a_weekly_window_has_no_findings() {
        let text = window(
            "w",
            "cron = \"0 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"",
        );
        assert_eq!(findings(&text), (vec![], vec![]));
    }

    #[test]
    fn a_recurrence_overlapping_itself_is_warned_about() {
        let text = window("w", "cron = \"0 2 * * *\"\nduration = \"25h\"");
        let (errors, warnings) = findings(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            vec![
                "t.toml:1:1: occurrences of \"w\" overlap each other (e.g. 2026-11-29 02:00 lasts past 2026-11-30 02:00); they merge into one span"
            ]
        );
    }

    #[test]
    fn an_overlap_only_across_the_spring_change_is_found() {
        // 24 h apart on the wall clock, 23 h apart across the spring change.
        let text = window(
            "w",
            "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nduration = \"23h 30m\"",
        );
        let (errors, warnings) = findings(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            vec![
                "t.toml:1:1: occurrences of \"w\" overlap each other (e.g. 2027-03-28 03:00 lasts past 2027-03-29 02:00); they merge into one span"
            ]
        );
        let text = window(
            "w",
            "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nduration = \"23h\"",
        );
        assert_eq!(findings(&text), (vec![], vec![]));
    }

    #[test]
    fn several_starts_a_day_overlap_by_their_smallest_gap() {
        let text = window("w", "cron = \"0 2,4 * * Mon\"\nduration = \"2h\"");
        assert_eq!(findings(&text), (vec![], vec![]));
        let text = window("w", "cron = \"0 2,4 * * Mon\"\nduration = \"2h 1m\"");
        let (_, warnings) = findings(&text);
        assert_eq!(
            warnings,
            vec![
                "t.toml:1:1: occurrences of \"w\" overlap each other (e.g. 2026-11-30 02:00 lasts past 2026-11-30 04:00); they merge into one span"
            ]
        );
        // Around midnight: 23:00 and 00:30 the next day.
        let text = window("w", "cron = \"0,30 23,0 * * *\"\nduration = \"31m\"");
        let (_, warnings) = findings(&text);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let text = window("w", "cron = \"0 0,23 * * *\"\nduration = \"1h\"");
        assert_eq!(findings(&text), (vec![], vec![]));
    }

    #[test]
    fn a_recurrence_whose_not_after_has_passed_is_warned_about() {
        let text = window(
            "w",
            "cron = \"0 2 * * Sun\"\nduration = \"4h\"\nnot_after = \"2026-01-31\"",
        );
        let (errors, warnings) = findings(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            vec![
                "t.toml:1:1: window \"w\" has no occurrence in the next 400 days (not_after has passed?)"
            ]
        );
        // Every occurrence skipped: no occurrence either.
        let text = window(
            "w",
            "cron = \"0 2 6 12 *\"\nduration = \"4h\"\nnot_after = \"2027-12-31\"\nskip = [\"2026-12-06\", \"2027-12-06\"]",
        );
        let (_, warnings) = findings(&text);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let text = window(
            "w",
            "cron = \"0 2 6 12 *\"\nduration = \"4h\"\nnot_after = \"2027-12-31\"\nskip = [\"2026-12-06\"]",
        );
        assert_eq!(findings(&text), (vec![], vec![]));
    }

    #[test]
    fn a_cron_that_never_matches_is_an_error() {
        let text = window("w", "cron = \"0 2 30 2 *\"\nduration = \"4h\"");
        let (errors, _) = findings(&text);
        assert_eq!(
            errors,
            vec!["t.toml:1:1: cron pattern \"0 2 30 2 *\" never matches"]
        );
    }

    #[test]
    fn findings_in_a_big_file_point_at_their_own_lines() {
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&window(
                &format!("w{i}"),
                "cron = \"0 2 * * Sun\"\nduration = \"4h\"",
            ));
        }
        // Line 6 * 50 + 1: a duplicate id (w7 is declared at line 6 * 7 + 1), then a window with
        // multi-byte text.
        text.push_str(
            "  [[window]]\nid = \"w7\"\nregion = \"EU\"\ncloudlets = [\"O/c\", \"O/c\"]\n",
        );
        text.push_str("cron = \"0 2 * * Sun\"\nduration = \"10d\"\n\n");
        text.push_str(&window(
            "ü",
            "start = \"2026-12-06T02:00\"\ntimezone = \"Éurope/Berln\"\nduration = \"4h\"",
        ));
        let (errors, warnings) = findings(&text);
        assert_eq!(
            errors,
            vec![
                "t.toml:301:1: duplicate window id \"w7\" (first declared at line 43)",
                "t.toml:309:6: invalid window id \"ü\": use letters, digits, '-', '_' and '.'",
                "t.toml:313:12: unknown time zone \"Éurope/Berln\" (did you mean \"Europe/Berlin\"?)",
            ]
        );
        assert_eq!(
            warnings,
            vec![
                "t.toml:304:21: cloudlet \"O/c\" is listed twice",
                "t.toml:306:12: window lasts 10days (more than 7 days); is that intended?",
                "t.toml:301:3: occurrences of \"w7\" overlap each other (e.g. 2026-11-22 02:00 lasts past 2026-11-29 02:00); they merge into one span",
            ]
        );
    }

    #[test]
    fn a_finding_about_a_whole_window_points_at_its_own_header() {
        let mut text = window("a", "cron = \"0 2 * * Sun\"\nduration = \"4h\"");
        text.push_str("[[window]]\nid = \"b\"\nregion = \"EU\"\ncloudlets = [\"O/d\"]\n");
        text.push_str("cron = \"0 2 * * Sun\"\n");
        let (errors, _) = findings(&text);
        assert_eq!(
            errors,
            vec!["t.toml:7:1: missing required key `duration` (e.g. \"4h\")"]
        );
    }

    #[test]
    fn line_index_agrees_with_line_col() {
        let text = "a = 1\nbé = \"x\"\n\n  ü\n";
        let index = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                index.line_col(offset),
                diag::line_col(text, offset),
                "{offset}"
            );
        }
    }
}
