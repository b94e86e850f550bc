//! Tallies and the list of differences, as text and JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::compare::{Class, Verdict};

/// One statement on which Ember and DataFusion differ.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// `file:line`, or the generator's seed and index.
    pub location: String,
    /// The statement.
    pub sql: String,
    /// How they differ.
    pub class: Class,
    /// The first difference.
    pub detail: String,
}

/// Counts over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Statements compared (both engines ran them).
    pub compared: usize,
    /// Of those, answered the same (values and types).
    pub agreed: usize,
    /// Of those, failed on both engines (e.g. data the corpus refers to
    /// that is not here); not counted in `compared`.
    pub both_failed: usize,
    /// Not run, by reason (EXPLAIN text, volatile functions, conditions).
    pub skipped: BTreeMap<String, usize>,
    /// Differences by class.
    pub by_class: BTreeMap<Class, usize>,
    /// Statements compared per source (file), and how many agreed.
    pub by_source: BTreeMap<String, (usize, usize)>,
    /// Every difference.
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    /// Records the verdict on one statement of `source`.
    pub fn record(&mut self, source: &str, location: String, sql: &str, verdict: Verdict) {
        if verdict == Verdict::BothFailed {
            self.both_failed += 1;
            return;
        }
        self.compared += 1;
        let entry = self.by_source.entry(source.to_string()).or_default();
        entry.0 += 1;
        match verdict {
            Verdict::Agree => {
                self.agreed += 1;
                entry.1 += 1;
            }
            Verdict::BothFailed => unreachable!(),
            Verdict::Differ(class, detail) => {
                *self.by_class.entry(class).or_default() += 1;
                self.mismatches.push(Mismatch {
                    location,
                    sql: sql.to_string(),
                    class,
                    detail,
                });
            }
        }
    }

    /// Records a statement not run.
    pub fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: Report) {
        self.compared += other.compared;
        self.agreed += other.agreed;
        self.both_failed += other.both_failed;
        for (k, v) in other.skipped {
            *self.skipped.entry(k).or_default() += v;
        }
        for (k, v) in other.by_class {
            *self.by_class.entry(k).or_default() += v;
        }
        for (k, (c, a)) in other.by_source {
            let e = self.by_source.entry(k).or_default();
            e.0 += c;
            e.1 += a;
        }
        self.mismatches.extend(other.mismatches);
    }

    /// The one-line figure: agreed of compared.
    pub fn headline(&self) -> String {
        let pct = if self.compared == 0 {
            100.0
        } else {
            100.0 * self.agreed as f64 / self.compared as f64
        };
        format!(
            "{} of {} statements agree with DataFusion ({pct:.1} %); {} failed on both; {} skipped",
            self.agreed,
            self.compared,
            self.both_failed,
            self.skipped.values().sum::<usize>()
        )
    }

    /// The headline, the classes and the first `show` differences.
    pub fn text(&self, show: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        for class in Class::ALL {
            if let Some(n) = self.by_class.get(&class) {
                let _ = writeln!(out, "  {:<16} {n}", class.name());
            }
        }
        for (reason, n) in &self.skipped {
            let _ = writeln!(out, "  skipped: {reason}: {n}");
        }
        for m in self.mismatches.iter().take(show) {
            let _ = writeln!(
                out,
                "\n{} [{}]\n  {}\n  {}",
                m.location,
                m.class.name(),
                one_line(&m.sql, 300),
                one_line(&m.detail, 500)
            );
        }
        if self.mismatches.len() > show {
            let _ = writeln!(out, "\n... and {} more", self.mismatches.len() - show);
        }
        out
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}
