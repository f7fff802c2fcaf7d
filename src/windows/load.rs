//! Loading `windows.d/`: which files count, per-file isolation, and last-good retention.
//!
//! Directory rules follow systemd/apt conventions: only regular files (symlinks to regular files
//! count) named `*.toml`, not starting with `.`, processed in name order. Editor backups and
//! package-manager leftovers (`foo.toml~`, `.dpkg-new`, `.swp`, …) are ignored and reported at
//! info. Each file is parsed alone; a bad file is skipped, and **if the previous load accepted
//! it, its previous windows stay in force** (marked stale), so a typo never ends an open window.
//! Removing a file is a deliberate cancel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::Window;
use super::parse::parse_file;
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

    for (_, path) in names {
        let prev = previous_by_path.get(path.as_path()).copied();
        let mut report = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let parsed = parse_file(&path, &text, now);
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
