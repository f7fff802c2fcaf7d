//! `plan`: the upcoming spans, as a table or as JSON.

use std::io::Write;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp, civil};

use crate::cli::PlanArgs;
use crate::config::Config;
use crate::journal::read_journal;
use crate::lead::{LeadSettings, LearnedLeads, worst_case_from_config};
use crate::plan::{Plan, Span, SpanJson, plan};
use crate::timeutil::plus;
use crate::windows::{Catalog, load_dir};

/// Runs `plan` and returns the exit status.
pub fn run(config: &Config, args: &PlanArgs) -> i32 {
    match run_inner(config, args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("{msg}");
            super::EXIT_USAGE
        }
    }
}

fn run_inner(config: &Config, args: &PlanArgs) -> Result<i32, String> {
    let now = Timestamp::now();
    let from = match &args.from {
        Some(t) => parse_time(t)?,
        None => now,
    };
    let until = match (&args.until, args.count) {
        (Some(t), _) => parse_time(t)?,
        (None, Some(_)) => plus(from, SignedDuration::from_hours(24 * 366)),
        (None, None) => plus(from, SignedDuration::from_hours(24 * 14)),
    };
    if until <= from {
        return Err(format!("--until ({until}) must be after --from ({from})"));
    }
    if let Some(c) = &args.cloudlet
        && crate::windows::split_cloudlet(c).is_none()
    {
        return Err(format!("invalid --cloudlet \"{c}\": expected ORG/NAME"));
    }
    let dir = args
        .windows_dir
        .clone()
        .unwrap_or_else(|| config.schedule.windows_dir.clone());
    let catalog = load_dir(&dir, None, now);
    report_problems(&catalog);
    let mut config = config.clone();
    if let Some(d) = &args.state_dir {
        config.schedule.state_dir = d.clone();
    }
    let leads = learned_leads(&config);
    let planned = plan(catalog.windows(), &leads, from, until);
    let mut spans: Vec<&Span> = planned
        .spans()
        .into_iter()
        .filter(|s| {
            args.cloudlet
                .as_ref()
                .is_none_or(|c| &s.cloudlet.cloudlet == c)
        })
        .collect();
    if let Some(n) = args.count {
        spans.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let json: Vec<SpanJson> = spans.iter().map(|s| s.to_json()).collect();
        serde_json::to_writer_pretty(&mut out, &json)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out))
    } else {
        write_table(&mut out, &planned, &spans, args.cloudlet.as_deref())
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(format!("cannot write output: {e}"));
    }
    Ok(if catalog.all_valid() {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    })
}

/// The daemon's learned leads, read (never written) from the journal in the state directory;
/// the protocol worst case when there is none yet.
fn learned_leads(config: &Config) -> LearnedLeads {
    let worst = worst_case_from_config(config);
    let settings = LeadSettings::from_config(config);
    match read_journal(&config.schedule.state_dir) {
        Ok(journal) => LearnedLeads::from_journal(settings, worst, &journal),
        Err(e) => {
            eprintln!("warning: {e}; showing worst-case leads");
            LearnedLeads::new(settings, worst)
        }
    }
}

/// Bad files do not stop `plan` (valid ones still plan), but they are shown on stderr.
fn report_problems(catalog: &Catalog) {
    if let Some(e) = &catalog.dir_error {
        eprintln!("error: {e}");
    }
    for f in &catalog.files {
        for e in &f.errors {
            eprintln!("error: {e} (file skipped)");
        }
    }
}

/// Parses `--from`/`--until`: RFC 3339 with an offset, or a civil time taken as UTC.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    if text == "now" {
        return Ok(Timestamp::now());
    }
    if let Ok(t) = Timestamp::from_str(text) {
        return Ok(t);
    }
    if let Ok(dt) = civil::DateTime::from_str(text) {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("invalid time \"{text}\": {e}"));
    }
    if let Ok(d) = civil::Date::from_str(text) {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("invalid time \"{text}\": {e}"));
    }
    Err(format!(
        "invalid time \"{text}\": expected RFC 3339 (2026-12-06T02:00:00+01:00) or a UTC civil time (2026-12-06T01:00)"
    ))
}

fn write_table(
    out: &mut impl Write,
    planned: &Plan,
    spans: &[&Span],
    only: Option<&str>,
) -> std::io::Result<()> {
    if spans.is_empty() {
        writeln!(out, "no spans in this range")?;
    } else {
        writeln!(
            out,
            "{:<22} {:<6} {:<17} {:<17} {:<17} {:<6} {:<17} {:<22} WINDOWS / NOTES",
            "CLOUDLET", "REGION", "ENTER AT", "START", "END", "ZONE", "START (UTC)", "LEAD"
        )?;
    }
    for s in spans {
        let local = |t: Timestamp| {
            t.to_zoned(s.timezone.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        };
        let abbrev = s
            .start
            .to_zoned(s.timezone.clone())
            .strftime("%Z")
            .to_string();
        let utc = s
            .start
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m-%d %H:%M")
            .to_string();
        let lead = format!(
            "{} ({})",
            humantime::format_duration(s.lead.duration),
            s.lead.source
        );
        let kind = if s.failover { "" } else { " [no failover]" };
        writeln!(
            out,
            "{:<22} {:<6} {:<17} {:<17} {:<17} {:<6} {:<17} {:<22} {}{}",
            s.cloudlet.cloudlet,
            s.cloudlet.region,
            local(s.enter_at),
            local(s.start),
            local(s.end),
            abbrev,
            utc,
            lead,
            s.windows.join(","),
            kind
        )?;
        for n in &s.notes {
            writeln!(out, "{:<22}   note: {n}", "")?;
        }
    }
    let skipped: Vec<_> = planned
        .skipped
        .iter()
        .filter(|s| only.is_none_or(|c| s.cloudlet.cloudlet == c))
        .collect();
    if !skipped.is_empty() {
        writeln!(out, "\nskipped occurrences:")?;
        for s in skipped {
            writeln!(
                out,
                "  {} {} {} ({}): {}",
                s.cloudlet.cloudlet,
                s.window,
                s.skipped.civil_start.strftime("%Y-%m-%d %H:%M"),
                s.timezone_name,
                s.skipped.reason
            )?;
        }
    }
    Ok(())
}
