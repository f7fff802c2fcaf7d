//! Loading `windows.d/`: which files count, per-file isolation, and last-good retention.
//!
//! Directory rules follow systemd/apt conventions: only regular files (symlinks to regular files
//! count) named `*.toml`, not starting with `.`, processed in name order. Editor backups and
//! package-manager leftovers (`foo.toml~`, `.dpkg-new`, `.swp`, …) are ignored and reported at
//! info. Each file is parsed alone; a bad file is skipped, and **if the previous load accepted
//! it, its previous windows stay in force** (marked stale), so a typo never ends an open window.
//! Removing a file is a deliberate cancel. A file whose bytes have not changed since the
//! previous load accepted it is not parsed again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::Window;
use super::parse::{CronCache, parse_file_with};
use crate::diag::Diagnostic;

/// The state of one file after a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Parsed and valid; its windows are in force.
    Ok,
    /// Invalid now; nothing of it is in force (it was never valid, or it is new).
    Invalid,
    /// Invalid now, but its last good version's windows stay in force.
    Stale,
}

/// What a load found for one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub status: FileStatus,
    /// The windows in force from this file (the last good ones when stale).
    pub windows: Vec<Window>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// The file's content as last read: kept so a later load can tell what changed.
    pub content: Option<String>,
}

/// A file in the directory that is not a window file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub path: PathBuf,
    pub reason: &'static str,
}

/// The result of loading a directory: every file with its status, and the windows in force.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    pub files: Vec<FileReport>,
    pub ignored: Vec<Ignored>,
    /// The directory itself could not be read; when set, `files` is the previous load's.
    pub dir_error: Option<String>,
}

impl Catalog {
    /// Every window in force (from valid and stale files), in file then declaration order.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.files.iter().flat_map(|f| f.windows.iter())
    }

    /// True when every file is valid and the directory was readable.
    pub fn all_valid(&self) -> bool {
        self.dir_error.is_none() && self.files.iter().all(|f| f.status == FileStatus::Ok)
    }

    pub fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }
}

/// Why a directory entry is not a window file, or `None` when it is one.
pub fn ignore_reason(file_name: &str) -> Option<&'static str> {
    const LEFTOVERS: &[&str] = &[
        ".dpkg-new",
        ".dpkg-old",
        ".dpkg-dist",
        ".dpkg-tmp",
        ".dpkg-bak",
        ".ucf-new",
        ".ucf-old",
        ".ucf-dist",
        ".rpmnew",
        ".rpmsave",
        ".rpmorig",
        ".swp",
        ".swo",
        ".bak",
        ".orig",
        ".rej",
        ".tmp",
        ".disabled",
    ];
    if file_name.starts_with('.') {
        return Some("hidden file");
    }
    if file_name.ends_with('~') {
        return Some("editor backup");
    }
    if LEFTOVERS.iter().any(|s| file_name.ends_with(s)) {
        return Some("backup or package-manager leftover");
    }
    if !file_name.ends_with(".toml") {
        return Some("not a *.toml file");
    }
    None
}

/// Loads every window file of `dir`. `previous` is the last load (for last-good retention);
/// `now` is only used for warnings. Never fails: problems are reported in the catalog.
pub fn load_dir(dir: &Path, previous: Option<&Catalog>, now: Timestamp) -> Catalog {
    let mut catalog = Catalog {
        dir: dir.to_path_buf(),
        ..Catalog::default()
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            catalog.dir_error = Some(format!("{}: cannot read directory: {e}", dir.display()));
            if let Some(prev) = previous {
                catalog.files = prev
                    .files
                    .iter()
                    .filter(|f| !f.windows.is_empty())
                    .cloned()
                    .map(|mut f| {
                        f.status = FileStatus::Stale;
                        f
                    })
                    .collect();
            }
            return catalog;
        }
    };
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(reason) = ignore_reason(&name) {
            tracing::info!(file = %path.display(), reason, "ignoring file in windows directory");
            catalog.ignored.push(Ignored { path, reason });
            continue;
        }
        // Follows symlinks: a link to a regular file counts, anything else does not.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => names.push((name, path)),
            Ok(_) => {
                tracing::info!(file = %path.display(), "ignoring non-regular file in windows directory");
                catalog.ignored.push(Ignored {
                    path,
                    reason: "not a regular file",
                });
            }
            Err(_) => catalog.ignored.push(Ignored {
                path,
                reason: "dangling symlink",
            }),
        }
    }
    names.sort();
    catalog.ignored.sort_by(|a, b| a.path.cmp(&b.path));

    let previous_by_path: HashMap<&Path, &FileReport> = previous
        .map(|p| p.files.iter().map(|f| (f.path.as_path(), f)).collect())
        .unwrap_or_default();
    // Window id -> file that declared it first (in name order).
    let mut taken: HashMap<String, PathBuf> = HashMap::new();
    let mut crons = CronCache::default();

    for (_, path) in names {
        let prev = previous_by_path.get(path.as_path()).copied();
        let mut report = match std::fs::read_to_string(&path) {
            // Unchanged since a load that accepted it: its windows and warnings are reused, not
            // parsed again (a reload after one edit then costs reading the files). Validity does
            // not depend on `now`, so the status is the same; the few warnings that do (a one-off
            // that has ended, a recurrence without occurrence or overlapping itself in the next
            // 400 days) are kept as of the load that parsed the file, and are recomputed when
            // the file changes or on a load without a previous catalog (start, `check`, `plan`).
            // The duplicate-id check across files below runs again either way.
            Ok(text)
                if prev.is_some_and(|p| {
                    p.status == FileStatus::Ok && p.content.as_deref() == Some(text.as_str())
                }) =>
            {
                let (windows, warnings) = prev
                    .map(|p| (p.windows.clone(), p.warnings.clone()))
                    .unwrap_or_default();
                FileReport {
                    path: path.clone(),
                    status: FileStatus::Ok,
                    windows,
                    errors: Vec::new(),
                    warnings,
                    content: Some(text),
                }
            }
            Ok(text) => {
                let parsed = parse_file_with(&path, &text, now, &mut crons);
                FileReport {
                    status: if parsed.errors.is_empty() {
                        FileStatus::Ok
                    } else {
                        FileStatus::Invalid
                    },
                    path: path.clone(),
                    windows: parsed.windows,
                    errors: parsed.errors,
                    warnings: parsed.warnings,
                    content: Some(text),
                }
            }
            Err(e) => FileReport {
                path: path.clone(),
                status: FileStatus::Invalid,
                windows: Vec::new(),
                errors: vec![Diagnostic::new(&path, None, format!("cannot read: {e}"))],
                warnings: Vec::new(),
                content: None,
            },
        };
        if report.status == FileStatus::Ok {
            let clash = report
                .windows
                .iter()
                .find_map(|w| taken.get(&w.id).map(|first| (w, first.clone())));
            if let Some((w, first)) = clash {
                report.errors.push(Diagnostic::new(
                    &path,
                    Some(crate::diag::LineCol {
                        line: w.line,
                        col: 1,
                    }),
                    format!(
                        "duplicate window id \"{}\": already declared in {}",
                        w.id,
                        first.display()
                    ),
                ));
                report.status = FileStatus::Invalid;
                report.windows.clear();
            }
        }
        if report.status == FileStatus::Invalid
            && let Some(prev) = prev
            && !prev.windows.is_empty()
        {
            // Last good version stays in force.
            report.status = FileStatus::Stale;
            report.windows = prev.windows.clone();
        }
        for w in &report.windows {
            taken.entry(w.id.clone()).or_insert_with(|| path.clone());
        }
        catalog.files.push(report);
    }
    catalog
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn window(id: &str, duration: &str) -> String {
        format!(
            "[[window]]\nid = \"{id}\"\nregion = \"EU\"\ncloudlets = [\"O/{id}\"]\ncron = \"0 2 * * Sun\"\nduration = \"{duration}\"\n"
        )
    }

    /// Name, status, windows, errors, warnings.
    type Summary = (String, FileStatus, Vec<String>, Vec<String>, Vec<String>);

    fn summary(c: &Catalog) -> Vec<Summary> {
        c.files
            .iter()
            .map(|f| {
                (
                    f.path.file_name().unwrap().to_string_lossy().into_owned(),
                    f.status,
                    f.windows
                        .iter()
                        .map(|w| format!("{}@{}:{:?}", w.id, w.line, w.duration))
                        .collect(),
                    f.errors.iter().map(ToString::to_string).collect(),
                    f.warnings.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    }

    /// A reload that reuses unchanged files ends where a load from scratch ends.
    #[test]
    fn a_reload_reusing_unchanged_files_matches_a_full_load() {
        let now = Timestamp::from_str("2026-11-29T12:00:00Z").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "10-a.toml",
            &(window("a", "4h") + "\n" + &window("a2", "10d")),
        );
        write("20-b.toml", &window("b", "4h"));
        write("30-c.toml", &window("c", "4h"));
        let mut previous = load_dir(dir.path(), None, now);
        assert!(previous.all_valid());
        let steps: Vec<(&str, String)> = vec![
            // An edit of one file.
            ("20-b.toml", window("b", "5h")),
            // An unchanged file now clashes with an edited one before it: its previous (still
            // valid) version stays, stale.
            ("10-a.toml", window("a", "4h") + "\n" + &window("c", "4h")),
            // The clash resolved.
            ("10-a.toml", window("a", "4h")),
            // A typo: the last good version stays.
            ("30-c.toml", window("c", "4 hourz")),
            ("30-c.toml", window("c", "6h")),
        ];
        for (name, text) in steps {
            write(name, &text);
            let reloaded = load_dir(dir.path(), Some(&previous), now);
            let fresh = load_dir(dir.path(), None, now);
            let stale: Vec<_> = reloaded
                .files
                .iter()
                .filter(|f| f.status == FileStatus::Stale)
                .map(|f| f.path.clone())
                .collect();
            // A load from scratch has no last good version to keep: compare the others.
            let comparable = |c: &Catalog| {
                summary(c)
                    .into_iter()
                    .zip(&c.files)
                    .filter(|(_, f)| !stale.contains(&f.path))
                    .map(|(s, _)| s)
                    .collect::<Vec<_>>()
            };
            assert_eq!(comparable(&reloaded), comparable(&fresh), "after {name}");
            previous = reloaded;
        }
    }

    #[test]
    fn an_unchanged_file_that_now_clashes_keeps_its_last_good_version() {
        let now = Timestamp::from_str("2026-11-29T12:00:00Z").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("10-a.toml", &window("a", "4h"));
        write("20-b.toml", &window("b", "4h"));
        let first = load_dir(dir.path(), None, now);
        write(
            "10-a.toml",
            &(window("a", "4h") + "\n" + &window("b", "4h")),
        );
        let second = load_dir(dir.path(), Some(&first), now);
        let b = &second.files[1];
        assert_eq!(b.status, FileStatus::Stale);
        assert_eq!(b.windows.len(), 1);
        assert!(
            b.errors[0]
                .to_string()
                .contains("duplicate window id \"b\": already declared in"),
            "{:?}",
            b.errors
        );
    }
}
