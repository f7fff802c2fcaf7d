//! The timeline page (`GET /`): what a person looks at instead of JSON.
//!
//! Server-rendered HTML with an inline SVG, no scripts, no external assets (the status endpoint
//! may be viewed from a host without internet access, and a page that fetches nothing cannot
//! leak anything). One row per cloudlet over a selectable range (default 7 days): the lead
//! (from `enter_at` to `start`) and the window itself drawn distinctly, a "now" line, the
//! current state as a coloured badge, and the alerts on top. The page refreshes itself.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::engine::StatusSnapshot;
use crate::plan::SpanJson;

/// Ranges offered on the page, in hours.
pub const RANGES: [u32; 5] = [6, 24, 72, 168, 336];
/// Default range in hours (7 days).
pub const DEFAULT_HOURS: u32 = 168;

const LABEL_W: f64 = 250.0;
const CHART_W: f64 = 1000.0;
const ROW_H: f64 = 28.0;
const AXIS_H: f64 = 30.0;

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn state_colour(state: Option<&str>) -> (&'static str, &'static str) {
    match state {
        Some("NormalOperation") => ("#2e7d32", "#ffffff"),
        Some("UnderMaintenance") => ("#1565c0", "#ffffff"),
        Some("FailoverRequested") | Some("CrmRequested") | Some("NormalOperationInit") => {
            ("#f9a825", "#000000")
        }
        None => ("#9e9e9e", "#ffffff"),
        Some(_) => ("#6a1b9a", "#ffffff"),
    }
}

/// Renders the page for `hours` hours from `now` (and a twelfth of that before it, so the
/// recent past stays visible). Pure: the caller passes the data and `now`.
pub fn render(
    status: &StatusSnapshot,
    spans: &[Arc<SpanJson>],
    now: Timestamp,
    hours: u32,
) -> String {
    let hours = hours.clamp(1, 24 * 31);
    let from = now
        .checked_sub(SignedDuration::from_mins(i64::from(hours) * 5))
        .unwrap_or(now);
    let until = now
        .checked_add(SignedDuration::from_hours(i64::from(hours)))
        .unwrap_or(now);
    let total = until.duration_since(from).as_secs_f64().max(1.0);
    let x = |t: Timestamp| -> f64 {
        let f = t.duration_since(from).as_secs_f64() / total;
        LABEL_W + f.clamp(0.0, 1.0) * CHART_W
    };

    // Rows: every cloudlet the daemon watches, plus any that only appears in the plan.
    let mut rows: BTreeMap<(String, String), Option<&crate::engine::status::CloudletView>> =
        BTreeMap::new();
    for c in &status.cloudlets {
        rows.insert((c.region.clone(), c.cloudlet.clone()), Some(c));
    }
    // Spans by row, so that drawing a row does not scan every span.
    let mut spans_of: BTreeMap<(&str, &str), Vec<&SpanJson>> = BTreeMap::new();
    for s in spans {
        rows.entry((s.region.clone(), s.cloudlet.clone()))
            .or_insert(None);
        spans_of
            .entry((s.region.as_str(), s.cloudlet.as_str()))
            .or_default()
            .push(s);
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>cloudlet-maintd — timeline</title>\
         <style>\
         body{{font-family:system-ui,sans-serif;margin:16px;color:#212121}}\
         h1{{font-size:20px;margin:0 0 8px}}\
         .alert{{background:#c62828;color:#fff;padding:6px 10px;margin:4px 0;border-radius:4px}}\
         .meta{{color:#616161;font-size:13px;margin-bottom:8px}}\
         .ranges a{{margin-right:8px}} .ranges b{{margin-right:8px}}\
         .legend span{{display:inline-block;margin-right:14px;font-size:13px}}\
         .sw{{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}}\
         svg text{{font-size:12px}}\
         </style></head><body>\n"
    );
    let _ = writeln!(html, "<h1>cloudlet-maintd timeline</h1>");
    for a in &status.alerts {
        let who = a.cloudlet.as_deref().unwrap_or("daemon");
        let _ = writeln!(
            html,
            "<div class=\"alert\" data-kind=\"{}\"><b>{}</b> {}: {}</div>",
            escape(&a.kind),
            escape(&a.kind),
            escape(who),
            escape(&a.message)
        );
    }
    let _ = writeln!(
        html,
        "<div class=\"meta\">version {} · generation {} · {} windows · {} cloudlets · {} in maintenance · now {}</div>",
        escape(&status.version),
        status.generation,
        status.counts.windows,
        rows.len(),
        status.counts.in_maintenance,
        now.strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = write!(html, "<div class=\"ranges\">Range: ");
    for r in RANGES {
        let label = if r % 24 == 0 {
            format!("{} d", r / 24)
        } else {
            format!("{r} h")
        };
        if r == hours {
            let _ = write!(html, "<b>{label}</b>");
        } else {
            let _ = write!(html, "<a href=\"/?hours={r}\">{label}</a>");
        }
    }
    let _ = writeln!(html, "</div>");
    let _ = writeln!(
        html,
        "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#ffb74d\"></i>lead (entering)</span>\
         <span><i class=\"sw\" style=\"background:#1e88e5\"></i>window</span>\
         <span><i class=\"sw\" style=\"background:#e53935\"></i>now</span></div>"
    );

    let height = AXIS_H + ROW_H * rows.len().max(1) as f64 + 10.0;
    let width = LABEL_W + CHART_W + 20.0;
    let _ = writeln!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"maintenance timeline\">"
    );
    // Ticks: hours for short ranges, days otherwise (UTC).
    let step = if hours <= 24 {
        SignedDuration::from_hours(if hours <= 6 { 1 } else { 3 })
    } else {
        SignedDuration::from_hours(24)
    };
    let mut tick = from
        .to_zoned(jiff::tz::TimeZone::UTC)
        .start_of_day()
        .map(|z| z.timestamp())
        .unwrap_or(from);
    while tick < until {
        if tick >= from {
            let tx = x(tick);
            let _ = writeln!(
                html,
                "<line x1=\"{tx:.1}\" y1=\"{AXIS_H}\" x2=\"{tx:.1}\" y2=\"{height}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{:.1}\" y=\"18\">{}</text>",
                tx + 2.0,
                if hours <= 24 {
                    tick.strftime("%H:%M").to_string()
                } else {
                    tick.strftime("%a %m-%d").to_string()
                }
            );
        }
        tick = tick.checked_add(step).unwrap_or(until);
    }
    for (i, ((region, cloudlet), view)) in rows.iter().enumerate() {
        let y = AXIS_H + ROW_H * i as f64;
        let state = view.and_then(|v| v.observed.as_deref());
        let (bg, fg) = state_colour(state);
        let label = format!("{region} {cloudlet}");
        let _ = writeln!(
            html,
            "<g class=\"row\" data-cloudlet=\"{}\" data-region=\"{}\">\
             <text x=\"4\" y=\"{:.1}\">{}</text>\
             <rect class=\"badge\" x=\"{:.1}\" y=\"{:.1}\" width=\"96\" height=\"16\" rx=\"8\" fill=\"{bg}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{fg}\" font-size=\"10\">{}</text>",
            escape(cloudlet),
            escape(region),
            y + 18.0,
            escape(&label),
            LABEL_W - 100.0,
            y + 5.0,
            LABEL_W - 96.0,
            y + 16.5,
            escape(&short_state(state))
        );
        for s in spans_of
            .get(&(region.as_str(), cloudlet.as_str()))
            .into_iter()
            .flatten()
        {
            let (Ok(enter), Ok(start), Ok(end)) = (
                s.enter_at.parse::<Timestamp>(),
                s.start.parse::<Timestamp>(),
                s.end.parse::<Timestamp>(),
            ) else {
                continue;
            };
            if end < from || enter > until {
                continue;
            }
            let title = format!(
                "{} · enter {} · start {} · end {} · lead {}s ({})",
                s.windows.join(", "),
                s.enter_at,
                s.start,
                s.end,
                s.lead_seconds,
                s.lead_source
            );
            let _ = writeln!(
                html,
                "<rect class=\"lead\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"18\" fill=\"#ffb74d\"><title>{}</title></rect>\
                 <rect class=\"window\" data-windows=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"18\" fill=\"#1e88e5\"><title>{}</title></rect>",
                x(enter),
                y + 4.0,
                (x(start) - x(enter)).max(1.0),
                escape(&title),
                escape(&s.windows.join(" ")),
                x(start),
                y + 4.0,
                (x(end) - x(start)).max(1.0),
                escape(&title)
            );
        }
        let _ = writeln!(html, "</g>");
    }
    let nx = x(now);
    let _ = writeln!(
        html,
        "<line class=\"now\" x1=\"{nx:.1}\" y1=\"{}\" x2=\"{nx:.1}\" y2=\"{height}\" stroke=\"#e53935\" stroke-width=\"2\"/>",
        AXIS_H - 6.0
    );
    let _ = writeln!(html, "</svg>");
    if rows.is_empty() {
        let _ = writeln!(
            html,
            "<p>No cloudlets planned. Add window files to {}.</p>",
            escape(&status.windows_dir)
        );
    }
    let _ = writeln!(
        html,
        "<p class=\"meta\">JSON: <a href=\"/v1/status\">/v1/status</a> · <a href=\"/v1/plan\">/v1/plan</a> · <a href=\"/v1/windows\">/v1/windows</a> · <a href=\"/metrics\">/metrics</a></p></body></html>"
    );
    html
}

fn short_state(state: Option<&str>) -> String {
    match state {
        None => "unknown".into(),
        Some("NormalOperation") => "normal".into(),
        Some("UnderMaintenance") => "maintenance".into(),
        Some("FailoverRequested") => "failover…".into(),
        Some("CrmRequested") => "crm…".into(),
        Some("NormalOperationInit") => "restoring…".into(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::status::{AlertView, CloudletView};

    fn span(cloudlet: &str, enter: &str, start: &str, end: &str) -> SpanJson {
        SpanJson {
            cloudlet: cloudlet.into(),
            region: "EU".into(),
            windows: vec!["berlin-weekly".into()],
            enter_at: enter.into(),
            start: start.into(),
            end: end.into(),
            timezone: "UTC".into(),
            lead_seconds: 660,
            lead_source: "worst case".into(),
            failover: true,
            notes: vec![],
        }
    }

    #[test]
    fn renders_rows_spans_badges_alerts_and_escapes() {
        let status = StatusSnapshot {
            cloudlets: vec![Arc::new(CloudletView {
                region: "EU".into(),
                cloudlet: "TDG/berlin-1".into(),
                observed: Some("UnderMaintenance".into()),
                ..CloudletView::default()
            })],
            alerts: vec![AlertView {
                kind: "forbidden".into(),
                cloudlet: Some("TDG/<x>".into()),
                message: "needs OperatorManager".into(),
                ..AlertView::default()
            }],
            ..StatusSnapshot::default()
        };
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let spans = [
            Arc::new(span(
                "TDG/berlin-1",
                "2026-12-06T00:49:00Z",
                "2026-12-06T01:00:00Z",
                "2026-12-06T05:00:00Z",
            )),
            Arc::new(span(
                "TDG/berlin-2",
                "2026-12-06T00:49:00Z",
                "2026-12-06T01:00:00Z",
                "2026-12-06T05:00:00Z",
            )),
        ];
        let html = render(&status, &spans, now, 168);
        assert!(html.contains("data-cloudlet=\"TDG/berlin-1\""));
        assert!(html.contains("data-cloudlet=\"TDG/berlin-2\""));
        assert_eq!(html.matches("class=\"window\"").count(), 2);
        assert_eq!(html.matches("class=\"lead\"").count(), 2);
        assert!(html.contains("class=\"now\""));
        assert!(html.contains(">maintenance</text>"));
        assert!(html.contains("TDG/&lt;x&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") || html.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn spans_outside_the_range_are_not_drawn() {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let far = Arc::new(span(
            "TDG/berlin-1",
            "2027-03-01T00:49:00Z",
            "2027-03-01T01:00:00Z",
            "2027-03-01T05:00:00Z",
        ));
        let html = render(&StatusSnapshot::default(), &[far], now, 24);
        assert_eq!(html.matches("class=\"window\"").count(), 0);
        assert!(html.contains("<b>1 d</b>"));
        assert!(html.contains("href=\"/?hours=6\""));
    }
}
