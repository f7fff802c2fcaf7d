//! `check`: validate the config and every window file, print a report, exit 1 on any error.

use std::collections::BTreeSet;
use std::io::Write;

use crate::cli::CheckArgs;
use crate::config::Config;
use crate::windows::{Catalog, FileStatus, load_dir};

/// Runs `check` and returns the exit status.
pub fn run(config: &Config, args: &CheckArgs) -> i32 {
    let dir = args
        .windows_dir
        .clone()
        .unwrap_or_else(|| config.schedule.windows_dir.clone());
    let catalog = load_dir(&dir, None, jiff::Timestamp::now());
    let mut out = std::io::stdout().lock();
    let _ = write_report(&mut out, config, &catalog);
    if catalog.all_valid() {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}

/// Writes the human report of a load (also used by tests through the binary).
pub fn write_report(
    out: &mut impl Write,
    config: &Config,
    catalog: &Catalog,
) -> std::io::Result<()> {
    match &config.source {
        Some(p) => writeln!(out, "config {}: OK", p.display())?,
        None => writeln!(out, "config: built-in defaults (no config file)")?,
    }
    if let Some(e) = &catalog.dir_error {
        writeln!(out, "{e}")?;
    }
    for f in &catalog.files {
        let n = f.windows.len();
        let plural = if n == 1 { "window" } else { "windows" };
        match f.status {
            FileStatus::Ok => writeln!(out, "{}: OK ({n} {plural})", f.path.display())?,
            FileStatus::Invalid => writeln!(out, "{}: INVALID", f.path.display())?,
            FileStatus::Stale => writeln!(
                out,
                "{}: INVALID, last good version kept ({n} {plural})",
                f.path.display()
            )?,
        }
        for e in &f.errors {
            writeln!(out, "  error: {e}")?;
        }
        for w in &f.warnings {
            writeln!(out, "  warning: {w}")?;
        }
    }
    for i in &catalog.ignored {
        writeln!(out, "{}: ignored ({})", i.path.display(), i.reason)?;
    }
    let cloudlets: BTreeSet<(&str, &str)> = catalog
        .windows()
        .flat_map(|w| w.cloudlets.iter().map(|c| (w.region.as_str(), c.as_str())))
        .collect();
    let warnings: usize = catalog.files.iter().map(|f| f.warnings.len()).sum();
    writeln!(
        out,
        "\n{} files: {} OK, {} invalid, {} stale; {} windows for {} cloudlets; {} warnings; {} ignored",
        catalog.files.len(),
        catalog.count(FileStatus::Ok),
        catalog.count(FileStatus::Invalid),
        catalog.count(FileStatus::Stale),
        catalog.windows().count(),
        cloudlets.len(),
        warnings,
        catalog.ignored.len()
    )
}
