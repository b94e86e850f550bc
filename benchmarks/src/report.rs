//! Benchmark reports: the JSON record of a run, the text table, the
//! comparison of two runs, and a per-query SVG bar chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything one `ember-bench tpch run` measured, with its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub environment: Environment,
    pub queries: Vec<QueryReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub ember_version: String,
    pub datafusion_version: String,
    pub git_commit: Option<String>,
    pub cluster: String,
    pub executors: usize,
    pub slots_per_executor: usize,
    pub executor_memory_bytes: u64,
    pub scale_factor: Option<f64>,
    pub data_dir: String,
    pub files_per_table: Option<usize>,
    pub iterations: usize,
    pub cores: usize,
    pub started_unix: u64,
    /// `--set` settings of Ember's session, as `key=value`.
    #[serde(default)]
    pub settings: Vec<String>,
    /// `--baseline-set` settings of the DataFusion baseline.
    #[serde(default)]
    pub baseline_settings: Vec<String>,
    /// Each executor's memory figures at the end of the run (from its last
    /// heartbeat after the last query).
    #[serde(default)]
    pub executor_memory: Vec<ExecutorMemory>,
}

/// What one executor held at most, and spilled, since it started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExecutorMemory {
    /// The most its memory pool (operators and shuffle output, bounded by
    /// `executor_memory_bytes`) held at once.
    pub pool_peak_bytes: u64,
    /// Its process's peak resident memory (with an embedded cluster, the
    /// benchmark's whole process: every executor, the scheduler and
    /// DataFusion's baseline).
    pub resident_peak_bytes: u64,
    /// Shuffle output it wrote to disk.
    pub shuffle_spilled_bytes: u64,
}

impl Environment {
    /// One line saying what was measured where.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} x {} slots, sf {:?}, commit {})",
            self.cluster,
            self.executors,
            self.slots_per_executor,
            self.scale_factor,
            self.git_commit.as_deref().unwrap_or("?")
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryReport {
    pub query: usize,
    pub rows: usize,
    /// Every iteration, the first being the cold run.
    pub ember_seconds: Vec<f64>,
    pub datafusion_seconds: Vec<f64>,
    /// Where each Ember iteration's time went on the scheduler, as its job
    /// reports it (the rest of `ember_seconds` is the client's round trips
    /// and fetching the result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ember_breakdown: Vec<Breakdown>,
    /// `None` when not verified; otherwise whether the answer was right.
    pub verified: Option<bool>,
    pub verify_error: Option<String>,
    pub error: Option<String>,
    /// With `--kill-executor-after`: the run during which one executor was
    /// SIGKILLed (and replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<KillRun>,
}

/// One Ember iteration of a query, split as its job reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Breakdown {
    /// Planning the statement on the scheduler (parsing, optimizers, stage
    /// cutting, plan encoding).
    pub planning_seconds: f64,
    /// Running its scalar subqueries first, each as a job of its own.
    pub subqueries_seconds: f64,
    /// The job itself, from its start to its last stage's end.
    pub job_seconds: f64,
    /// Bytes its tasks spilled to disk (shuffle output and operators; not
    /// those of its scalar subqueries' jobs).
    #[serde(default)]
    pub spilled_bytes: u64,
}

impl Breakdown {
    pub fn of(status: &ember::JobStatus) -> Self {
        Self {
            planning_seconds: status.planning_us as f64 / 1e6,
            subqueries_seconds: status.subqueries_us as f64 / 1e6,
            job_seconds: status.elapsed_ms as f64 / 1e3,
            spilled_bytes: status.stages.iter().map(|s| s.spilled_bytes).sum(),
        }
    }

    /// The time before the job started: planning and scalar subqueries.
    fn before_job(&self) -> f64 {
        self.planning_seconds + self.subqueries_seconds
    }
}

/// One run of a query with an executor killed part-way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillRun {
    /// When the kill was due, from the query's submission.
    pub kill_after_seconds: f64,
    /// The query's time with the failure.
    pub seconds: f64,
    /// False if the query finished before the kill was due (no failure).
    pub landed: bool,
    pub error: Option<String>,
    /// With several kill runs: each run's time (`seconds` is their median
    /// over the runs where the kill landed).
    #[serde(default)]
    pub runs: Vec<f64>,
}

impl KillRun {
    /// One figure from several kill runs: the median of those where the
    /// kill landed mid-query, the first error if any failed.
    pub fn combine(runs: Vec<KillRun>) -> KillRun {
        let landed: Vec<f64> = runs
            .iter()
            .filter(|r| r.landed)
            .map(|r| r.seconds)
            .collect();
        let all: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let pick = if landed.is_empty() { &all } else { &landed };
        let mut sorted = pick.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let seconds = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        KillRun {
            kill_after_seconds: runs.first().map_or(0.0, |r| r.kill_after_seconds),
            seconds,
            landed: !landed.is_empty(),
            error: runs.iter().find_map(|r| r.error.clone()),
            runs: all,
        }
    }
}

/// min, median, max of the warm runs (all runs when there is only one).
pub fn stats(seconds: &[f64]) -> Option<(f64, f64, f64)> {
    let warm = if seconds.len() > 1 {
        &seconds[1..]
    } else {
        seconds
    };
    if warm.is_empty() {
        return None;
    }
    let mut v = warm.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((v[0], median, v[v.len() - 1]))
}

fn median(seconds: &[f64]) -> Option<f64> {
    stats(seconds).map(|s| s.1)
}

impl RunReport {
    /// The table printed after a run.
    pub fn to_table(&self) -> String {
        let baseline = self
            .queries
            .iter()
            .any(|q| !q.datafusion_seconds.is_empty());
        let mut out = String::new();
        let _ = write!(
            out,
            "{:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "query", "rows", "cold s", "min s", "median s", "max s", "planned s"
        );
        if baseline {
            let _ = write!(out, " {:>10} {:>8}", "DF median", "ratio");
        }
        let kills = self.queries.iter().any(|q| q.kill.is_some());
        if kills {
            let _ = write!(out, " {:>8} {:>8} {:>10}", "kill at", "kill s", "kill/none");
        }
        let _ = writeln!(out, "  verify");
        let (mut ember_total, mut df_total) = (0.0, 0.0);
        for q in &self.queries {
            let _ = write!(out, "{:>5} ", format!("q{}", q.query));
            if let Some(e) = &q.error {
                let _ = writeln!(out, "FAILED: {e}");
                continue;
            }
            let cold = q.ember_seconds.first().copied().unwrap_or(f64::NAN);
            let (min, med, max) = stats(&q.ember_seconds).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            ember_total += med;
            let _ = write!(
                out,
                "{:>8} {cold:>8.3} {min:>8.3} {med:>8.3} {max:>8.3}",
                q.rows
            );
            // Median time before the job started (planning, scalar
            // subqueries), warm iterations only like the other columns: only
            // where every iteration ran as a job, so the first is the cold one.
            let before: Vec<f64> = q
                .ember_breakdown
                .iter()
                .map(Breakdown::before_job)
                .collect();
            let aligned = before.len() == q.ember_seconds.len();
            match median(&before).filter(|_| aligned) {
                Some(s) => {
                    let _ = write!(out, " {s:>9.3}");
                }
                None => {
                    let _ = write!(out, " {:>9}", "-");
                }
            }
            if baseline {
                match median(&q.datafusion_seconds) {
                    Some(df) => {
                        df_total += df;
                        let _ = write!(out, " {df:>10.3} {:>8.2}", med / df);
                    }
                    None => {
                        let _ = write!(out, " {:>10} {:>8}", "-", "-");
                    }
                }
            }
            if kills {
                match &q.kill {
                    Some(k) if k.error.is_some() => {
                        let _ = write!(
                            out,
                            " {:>8.3} {:>8} {:>10}",
                            k.kill_after_seconds, "FAILED", "-"
                        );
                    }
                    Some(k) if k.landed => {
                        let _ = write!(
                            out,
                            " {:>8.3} {:>8.3} {:>10.2}",
                            k.kill_after_seconds,
                            k.seconds,
                            k.seconds / med
                        );
                    }
                    Some(k) => {
                        let _ = write!(
                            out,
                            " {:>8.3} {:>8.3} {:>10}",
                            k.kill_after_seconds, k.seconds, "(done)"
                        );
                    }
                    None => {
                        let _ = write!(out, " {:>8} {:>8} {:>10}", "-", "-", "-");
                    }
                }
            }
            let verdict = match (q.verified, &q.verify_error) {
                (None, _) => "-".to_string(),
                (Some(true), _) => "ok".to_string(),
                (Some(false), e) => format!("WRONG: {}", e.clone().unwrap_or_default()),
            };
            let _ = writeln!(out, "  {verdict}");
        }
        let _ = write!(
            out,
            "{:>5} {:>8} {:>8} {:>8} {ember_total:>8.3} {:>8}",
            "total", "", "", "", ""
        );
        if baseline && df_total > 0.0 {
            let _ = write!(out, " {df_total:>10.3} {:>8.2}", ember_total / df_total);
        }
        let _ = writeln!(out);
        let spilled: u64 = self
            .queries
            .iter()
            .flat_map(|q| &q.ember_breakdown)
            .map(|b| b.spilled_bytes)
            .sum();
        let _ = writeln!(out, "spilled by Ember's jobs, all runs: {}", gib(spilled));
        let memory = &self.environment.executor_memory;
        if !memory.is_empty() {
            let list = |f: fn(&ExecutorMemory) -> u64| {
                memory
                    .iter()
                    .map(|m| gib(f(m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "executors' memory pools at most: {} (of {} each); peak resident: {}",
                list(|m| m.pool_peak_bytes),
                gib(self.environment.executor_memory_bytes),
                list(|m| m.resident_peak_bytes),
            );
        }
        out
    }

    /// Any query failed or gave a wrong answer.
    pub fn has_failures(&self) -> bool {
        self.queries.iter().any(|q| {
            q.error.is_some()
                || q.verified == Some(false)
                || q.kill.as_ref().is_some_and(|k| k.error.is_some())
        })
    }
}

/// Side-by-side medians of two runs.
pub fn compare(a: &RunReport, b: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "a: {}", a.environment.summary());
    let _ = writeln!(out, "b: {}", b.environment.summary());
    let _ = writeln!(
        out,
        "{:>5} {:>10} {:>10} {:>8}",
        "query", "a median", "b median", "b/a"
    );
    let (mut ta, mut tb) = (0.0, 0.0);
    for qa in &a.queries {
        let Some(qb) = b.queries.iter().find(|q| q.query == qa.query) else {
            continue;
        };
        let (Some(ma), Some(mb)) = (median(&qa.ember_seconds), median(&qb.ember_seconds)) else {
            continue;
        };
        ta += ma;
        tb += mb;
        let _ = writeln!(
            out,
            "{:>5} {ma:>10.3} {mb:>10.3} {:>8.2}",
            format!("q{}", qa.query),
            mb / ma
        );
    }
    if ta > 0.0 {
        let _ = writeln!(out, "{:>5} {ta:>10.3} {tb:>10.3} {:>8.2}", "total", tb / ta);
    }
    out
}

/// A grouped bar chart of median seconds per query: one bar per run (and the
/// DataFusion baseline of the first run when it has one).
pub fn svg(runs: &[(String, &RunReport)]) -> String {
    let mut series: Vec<(String, Vec<(usize, f64)>)> = vec![];
    for (name, run) in runs {
        series.push((
            name.clone(),
            run.queries
                .iter()
                .filter_map(|q| median(&q.ember_seconds).map(|m| (q.query, m)))
                .collect(),
        ));
    }
    if let Some((name, run)) = runs.first() {
        let df: Vec<(usize, f64)> = run
            .queries
            .iter()
            .filter_map(|q| median(&q.datafusion_seconds).map(|m| (q.query, m)))
            .collect();
        if !df.is_empty() {
            series.push((format!("{name}: DataFusion"), df));
        }
    }
    let mut queries: Vec<usize> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .collect();
    queries.sort_unstable();
    queries.dedup();
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let colors = ["#d9480f", "#1c7ed6", "#37b24d", "#ae3ec9", "#f59f00"];
    let (left, top, height) = (60.0, 40.0, 300.0);
    let group = 14.0 * series.len().max(1) as f64 + 10.0;
    let width = left + group * queries.len() as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#,
        w = width.max(400.0),
        h = top + height + 60.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="20" font-size="14">TPC-H median seconds per query (lower is better)</text>"#
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = top + height - height * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{x2}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="5" y="{ty}">{v:.2}s</text>"##,
            x2 = width - 10.0,
            ty = y + 4.0
        );
    }
    for (qi, q) in queries.iter().enumerate() {
        let x0 = left + group * qi as f64 + 5.0;
        for (si, (_, points)) in series.iter().enumerate() {
            if let Some((_, v)) = points.iter().find(|p| p.0 == *q) {
                let h = height * v / max;
                let _ = writeln!(
                    out,
                    r#"<rect x="{x}" y="{y}" width="12" height="{h}" fill="{c}"><title>q{q}: {v:.3}s</title></rect>"#,
                    x = x0 + 14.0 * si as f64,
                    y = top + height - h,
                    c = colors[si % colors.len()]
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{y}">q{q}</text>"#,
            x = x0,
            y = top + height + 15.0
        );
    }
    for (si, (name, _)) in series.iter().enumerate() {
        let y = top + height + 32.0 + 0.0 * si as f64;
        let x = left + 220.0 * si as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{y}">{name}</text>"#,
            ry = y - 9.0,
            tx = x + 14.0,
            c = colors[si % colors.len()],
            name = escape(name)
        );
    }
    let _ = writeln!(out, "</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `bytes` in GiB, to two places (0 as "0").
fn gib(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_leave_out_the_cold_run() {
        assert_eq!(stats(&[9.0, 1.0, 3.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(stats(&[5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(stats(&[]), None);
    }
}
