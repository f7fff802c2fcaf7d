//! `cloudlet-maintd-bench`: the benchmarks of issue 6, one subcommand each, each printing
//! markdown tables of numbers (they assert nothing about time). See `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p cloudlet-maintd-bench -- <lead|firing|planning|fanout|status-load|all> [--quick]
//! ```
//!
//! `--quick` shrinks every benchmark to a smoke run of about a minute. Everything runs on this
//! machine: simulators listen on loopback, loops are bounded and stop by themselves. Benchmarks
//! that need their own process (peak RSS of one side, the daemon itself) re-run this binary or
//! start the release `cloudlet-maintd` binary as a child.

mod daemon;
mod fanout;
mod firing;
mod lead;
mod planning;
mod stats;
mod status_load;
mod windows_gen;

use std::process::ExitCode;

const USAGE: &str = "usage: cloudlet-maintd-bench <lead|firing|planning|fanout|status-load|all> [--quick]
       cloudlet-maintd-bench planning [--quick] --load-only   (load and plan in process; no daemon)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let positional: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let Some(&name) = positional.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match name {
        "lead" => lead::run(quick),
        "firing" => firing::run(quick),
        "planning" => planning::run(quick),
        "fanout" => fanout::run(quick),
        "status-load" => status_load::run(quick),
        "all" => lead::run(quick)
            .and_then(|()| firing::run(quick))
            .and_then(|()| planning::run(quick))
            .and_then(|()| fanout::run(quick))
            .and_then(|()| status_load::run(quick)),
        // Internal: one side of the firing benchmark in its own process (for its own peak RSS).
        "firing-child" => firing::child(&positional[1..]),
        _ => {
            eprintln!("unknown benchmark {name:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudlet-maintd-bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the machine line every table set starts with.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    format!(
        "machine: {} cores, {cpu}, {mem}; load average (1 min) at start: {load}; code: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        code_version()
    )
}

/// The commit the numbers belong to, and whether the library had uncommitted changes.
fn code_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown commit".into();
    };
    let dirty = git(&["status", "--porcelain", "--", "../src", "../mc-sim/src"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} + uncommitted changes in src/ or mc-sim/src/")
    } else {
        head
    }
}
