//! Running sqllogictest files through both engines.
//!
//! The files' expected results are not used: DataFusion runs every statement
//! too and is the oracle, so what is compared includes the Arrow types, which
//! the files do not record. Each file gets a fresh Ember session and a fresh
//! DataFusion context, as DataFusion's runner gives it a fresh context.

use std::path::{Path, PathBuf};

use sqllogictest::{Condition, DefaultColumnType, QueryExpect, Record, SortMode};

use crate::compare::compare;
use crate::engines::Engines;
use crate::report::Report;

/// What the corpus' `onlyif` / `skipif` conditions are evaluated against.
const LABELS: &[&str] = &["DataFusion"];

/// Statements whose answer depends on the moment or on chance.
const VOLATILE: &[&str] = &[
    "now()",
    "random()",
    "uuid()",
    "current_time",
    "current_date",
    "current_timestamp",
    "localtime",
    "to_unixtime()",
];

/// The `.slt` files under `paths` (files or directories), sorted. Files under
/// a `spark` directory (Spark-dialect functions DataFusion loads only for
/// them) and `.slt.part` fragments (included by other files) are left out.
pub fn files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for path in paths {
        collect(path, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        if path.file_name().is_some_and(|n| n == "spark") {
            return Ok(());
        }
        for entry in std::fs::read_dir(path)? {
            collect(&entry?.path(), out)?;
        }
    } else if path.extension().is_some_and(|e| e == "slt") {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs every statement and query of one file through `engines`.
pub async fn run_file(path: &Path, engines: &Engines) -> Report {
    let source = path.display().to_string();
    let mut report = Report::default();
    let records = match sqllogictest::parse_file::<DefaultColumnType>(path) {
        Ok(records) => records,
        Err(e) => {
            eprintln!("{source}: cannot parse: {e}");
            report.skip("unparsable file");
            return report;
        }
    };
    let mut default_sort = SortMode::NoSort;
    for record in records {
        let (loc, conditions, sql, query, sort_mode) = match record {
            Record::Statement {
                loc,
                conditions,
                sql,
                ..
            } => (loc, conditions, sql, false, None),
            Record::Query {
                loc,
                conditions,
                sql,
                expected,
                ..
            } => {
                let sort_mode = match expected {
                    QueryExpect::Results { sort_mode, .. } => sort_mode,
                    QueryExpect::Error(_) => None,
                };
                (loc, conditions, sql, true, sort_mode)
            }
            Record::Control(sqllogictest::Control::SortMode(mode)) => {
                default_sort = mode;
                continue;
            }
            Record::Halt { .. } => break,
            _ => continue,
        };
        if conditions.iter().any(skipped_by) {
            report.skip("condition");
            continue;
        }
        let lower = sql.to_ascii_lowercase();
        if lower.trim_start().starts_with("explain") {
            report.skip("EXPLAIN (plan text differs by design)");
            continue;
        }
        if VOLATILE.iter().any(|v| lower.contains(v)) {
            report.skip("volatile function");
            continue;
        }
        let ordered = query
            && matches!(sort_mode.unwrap_or(default_sort), SortMode::NoSort)
            && engines.orders(&sql).await;
        let (df, ember) = engines.run(&sql).await;
        let verdict = compare(&df, &ember, query, ordered);
        let location = format!("{}:{}", loc.file(), loc.line());
        report.record(&source, location, &sql, verdict);
    }
    report
}

fn skipped_by(condition: &Condition) -> bool {
    match condition {
        Condition::OnlyIf { label } => !LABELS.contains(&label.as_str()),
        Condition::SkipIf { label } => LABELS.contains(&label.as_str()),
    }
}

/// Runs `files` one after another, each on a new session of the cluster at
/// `url`, printing one line per file.
pub async fn run_files(files: &[PathBuf], url: &str, timeout: std::time::Duration) -> Report {
    let mut total = Report::default();
    for file in files {
        let engines = match Engines::open(url, timeout).await {
            Ok(engines) => engines,
            Err(e) => {
                eprintln!("{}: cannot open a session: {e}", file.display());
                total.skip("no session");
                continue;
            }
        };
        let report = run_file(file, &engines).await;
        let _ = engines.ember.close().await;
        eprintln!(
            "{:<60} {:>5} compared {:>5} agree {:>4} both failed",
            file.display(),
            report.compared,
            report.agreed,
            report.both_failed
        );
        total.merge(report);
    }
    total
}
