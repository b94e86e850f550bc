//! `ember-bench tpch run`: the 22 queries on Ember and, with `--baseline`, on
//! single-process DataFusion with the same total cores, in the same run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use ember::{EmberContext, StandaloneOptions};

use crate::cluster::ProcessCluster;
use crate::report::{Breakdown, Environment, ExecutorMemory, KillRun, QueryReport, RunReport};

/// When `--kill-executor-after` kills an executor during a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KillPoint {
    /// This long after the query is submitted.
    After(Duration),
    /// This fraction of the query's median time without failure.
    Fraction(f64),
}

/// Parses `300ms`, `1.5s`, `2s` or `50%`.
pub fn parse_kill_point(s: &str) -> Result<KillPoint, String> {
    let s = s.trim();
    let bad = || format!("invalid --kill-executor-after {s:?}: use e.g. 300ms, 1.5s or 50%");
    let number = |n: &str| {
        n.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| *v >= 0.0 && v.is_finite())
    };
    if let Some(p) = s.strip_suffix('%') {
        return number(p)
            .map(|v| KillPoint::Fraction(v / 100.0))
            .ok_or_else(bad);
    }
    if let Some(ms) = s.strip_suffix("ms") {
        return number(ms)
            .map(|v| KillPoint::After(Duration::from_secs_f64(v / 1000.0)))
            .ok_or_else(bad);
    }
    if let Some(secs) = s.strip_suffix('s') {
        return number(secs)
            .map(|v| KillPoint::After(Duration::from_secs_f64(v)))
            .ok_or_else(bad);
    }
    Err(bad())
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data: PathBuf,
    pub queries: Vec<usize>,
    pub iterations: usize,
    pub executors: usize,
    pub slots: usize,
    pub memory_bytes: u64,
    pub scheduler: Option<String>,
    pub verify: bool,
    pub baseline: bool,
    /// `SET key = value` for Ember's session, before the queries.
    pub settings: Vec<(String, String)>,
    /// The same for the DataFusion baseline.
    pub baseline_settings: Vec<(String, String)>,
    pub answers_dir: PathBuf,
    /// Kill one executor process once per query at this point (and start a
    /// replacement); needs a cluster of processes that ember-bench starts.
    pub kill_after: Option<KillPoint>,
    /// Runs per query with a kill (the median is reported).
    pub kill_runs: usize,
}

/// Parses `1,3,5-9` into query numbers.
/// `KEY=VALUE` settings.
pub fn parse_settings(specs: &[String]) -> Result<Vec<(String, String)>, String> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
            _ => Err(format!("expected KEY=VALUE, got {s:?}")),
        })
        .collect()
}

/// The statement that applies one setting.
fn set_statement((key, value): &(String, String)) -> String {
    format!("SET {key} = '{}'", value.replace('\'', "''"))
}

pub fn parse_queries(spec: &str) -> Result<Vec<usize>, String> {
    let mut out = vec![];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=22).contains(n))
                .ok_or_else(|| format!("invalid query {s:?}: TPC-H has queries 1 to 22"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("invalid range {part:?}"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("no queries selected".into());
    }
    Ok(out)
}

/// The text of query `n` from `benchmarks/queries/`.
pub fn query_text(n: usize) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/q{n}.sql"));
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Shows `msg` on the terminal's last line in place of the previous one;
/// nothing where stderr is not a terminal (a log, a pipe), which would keep
/// every line and its control codes.
fn progress(msg: &str) {
    let mut err = std::io::stderr();
    if !err.is_terminal() {
        return;
    }
    let _ = write!(err, "\r\x1b[2K{msg}");
    let _ = err.flush();
}

async fn baseline_context(data: &Path, partitions: usize) -> Result<SessionContext, String> {
    let config = SessionConfig::new().with_target_partitions(partitions.max(1));
    let ctx = SessionContext::new_with_config(config);
    for t in ember::tpch::TABLES {
        let path = format!("{}/", data.join(t).display());
        ctx.register_parquet(t, &path, ParquetReadOptions::default())
            .await
            .map_err(|e| format!("registering {t}: {e}"))?;
    }
    Ok(ctx)
}

/// Single-process DataFusion's `EXPLAIN ANALYZE` of TPC-H query `query`
/// over `data`, with `partitions` target partitions and `settings`, after one
/// run to warm the page cache and the file metadata.
pub async fn explain_baseline(
    data: &Path,
    query: usize,
    partitions: usize,
    settings: &[(String, String)],
) -> Result<String, String> {
    let ctx = baseline_context(data, partitions).await?;
    for setting in settings {
        ctx.sql(&set_statement(setting))
            .await
            .map_err(|e| format!("--set {}: {e}", setting.0))?;
    }
    let sql = query_text(query)?;
    let run = |sql: String| {
        let ctx = ctx.clone();
        async move {
            ctx.sql(&sql)
                .await
                .map_err(|e| format!("q{query}: {e}"))?
                .collect()
                .await
                .map_err(|e| format!("q{query}: {e}"))
        }
    };
    run(sql.clone()).await?;
    let explained = run(format!("EXPLAIN ANALYZE {sql}")).await?;
    arrow::util::pretty::pretty_format_batches(&explained)
        .map(|t| format!("{t}\n"))
        .map_err(|e| e.to_string())
}

fn expected_answer(dir: &Path, query: usize) -> Result<Vec<Vec<String>>, String> {
    let path = dir.join(format!("q{query}.csv"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("no reference answer {}: {e}", path.display()))?;
    Ok(crate::csv::parse(&text).into_iter().skip(1).collect())
}

/// Runs the benchmark and returns its report.
pub async fn run(opts: &RunOptions) -> Result<RunReport, String> {
    let data = std::fs::canonicalize(&opts.data)
        .map_err(|e| format!("data directory {}: {e}", opts.data.display()))?;
    let sf = ember::tpch::scale_factor(&data);
    let answers = sf.map(|sf| opts.answers_dir.join(format!("sf{sf}")));
    // Said before the run, not as a wrong answer after each query of it.
    if opts.verify
        && let Some(dir) = answers.as_ref().filter(|dir| !dir.is_dir())
    {
        return Err(format!(
            "--verify: no reference answers in {} (this repository has them for SF 0.01, 0.1 \
             and 1; `ember-bench tpch answers --data {} --out {}` writes them from \
             single-process DataFusion)",
            dir.display(),
            data.display(),
            dir.display()
        ));
    }
    let mut processes = match (opts.kill_after, &opts.scheduler) {
        (Some(_), Some(_)) => {
            return Err(
                "--kill-executor-after starts its own cluster of processes: drop --scheduler"
                    .into(),
            );
        }
        (Some(_), None) => Some(ProcessCluster::start(
            opts.executors,
            opts.slots,
            opts.memory_bytes,
        )?),
        (None, _) => None,
    };
    let scheduler = opts
        .scheduler
        .clone()
        .or_else(|| processes.as_ref().map(|p| p.url.clone()));
    if let Some(p) = &processes {
        wait_for_executors(&p.url, p.executors()).await?;
    }
    let ctx = match &scheduler {
        Some(url) => EmberContext::remote(url).await,
        None => {
            EmberContext::standalone_with(StandaloneOptions {
                executors: opts.executors,
                slots: Some(opts.slots),
                memory_bytes: opts.memory_bytes,
                shuffle_memory_bytes: opts.memory_bytes / 4 * 3,
                ..Default::default()
            })
            .await
        }
    }
    .map_err(|e| e.to_string())?;
    let info = ctx.cluster_info().await.map_err(|e| e.to_string())?;
    let total_slots: usize = info.executors.iter().map(|e| e.slots as usize).sum();
    for stmt in ember::tpch::create_table_statements(&data) {
        ctx.run_sql(&stmt).await.map_err(|e| e.to_string())?;
    }
    for setting in &opts.settings {
        ctx.run_sql(&set_statement(setting))
            .await
            .map_err(|e| format!("--set {}: {e}", setting.0))?;
    }
    let baseline = if opts.baseline {
        let df = baseline_context(&data, total_slots).await?;
        for setting in &opts.baseline_settings {
            df.sql(&set_statement(setting))
                .await
                .map_err(|e| format!("--baseline-set {}: {e}", setting.0))?;
        }
        Some(df)
    } else {
        None
    };

    let mut queries = vec![];
    let total = opts.queries.len();
    for (i, &q) in opts.queries.iter().enumerate() {
        let sql = query_text(q)?;
        let mut report = QueryReport {
            query: q,
            rows: 0,
            ember_seconds: vec![],
            datafusion_seconds: vec![],
            ember_breakdown: vec![],
            verified: None,
            verify_error: None,
            error: None,
            kill: None,
        };
        let mut last = None;
        // Ember's and DataFusion's iterations alternate, so a slower phase
        // of the machine (a neighbour, a throttled core) costs both alike
        // and the ratio of their medians keeps to the engines.
        let (mut ember_failed, mut baseline_failed) = (false, false);
        for it in 0..opts.iterations {
            if !ember_failed {
                progress(&format!(
                    "[{}/{total}] q{q} ember iteration {}/{}",
                    i + 1,
                    it + 1,
                    opts.iterations
                ));
                let started = Instant::now();
                match ctx.run_sql(&sql).await {
                    Ok(r) => {
                        report.ember_seconds.push(started.elapsed().as_secs_f64());
                        report
                            .ember_breakdown
                            .extend(r.job.as_ref().map(Breakdown::of));
                        report.rows = r.num_rows();
                        last = Some(r);
                    }
                    Err(e) => {
                        report.error = Some(e.to_string());
                        ember_failed = true;
                    }
                }
            }
            if let Some(df) = &baseline
                && !baseline_failed
            {
                progress(&format!(
                    "[{}/{total}] q{q} datafusion iteration {}/{}",
                    i + 1,
                    it + 1,
                    opts.iterations
                ));
                let started = Instant::now();
                let r = async { df.sql(&sql).await?.collect().await }.await;
                match r {
                    Ok(_) => report
                        .datafusion_seconds
                        .push(started.elapsed().as_secs_f64()),
                    Err(e) => {
                        report.error = Some(format!("baseline: {e}"));
                        baseline_failed = true;
                    }
                }
            }
        }
        let verify = |result: &ember::QueryResult| match &answers {
            None => {
                Err("unknown scale factor: generate the data with `ember-bench tpch gen`".into())
            }
            Some(dir) => expected_answer(dir, q).and_then(|expected| {
                let actual =
                    ember::verify::rows_as_text(&result.batches).map_err(|e| e.to_string())?;
                ember::verify::compare(actual, expected, ember::verify::is_ordered(&sql))
            }),
        };
        if opts.verify
            && let Some(result) = &last
        {
            let outcome = verify(result);
            report.verified = Some(outcome.is_ok());
            report.verify_error = outcome.err();
        }
        if let (Some(point), Some(cluster)) = (opts.kill_after, processes.as_mut())
            && report.error.is_none()
        {
            let mut runs = vec![];
            for k in 0..opts.kill_runs.max(1) {
                progress(&format!(
                    "[{}/{total}] q{q} with an executor killed, run {}/{}",
                    i + 1,
                    k + 1,
                    opts.kill_runs.max(1)
                ));
                let (run, result) =
                    kill_run(&ctx, cluster, &sql, point, &report.ember_seconds).await;
                // Every answer after a recovery is verified like any other.
                if opts.verify
                    && let Some(result) = &result
                    && let Err(e) = verify(result)
                {
                    report.verified = Some(false);
                    report.verify_error = Some(format!("after a kill: {e}"));
                }
                runs.push(run);
            }
            report.kill = Some(KillRun::combine(runs));
        }
        queries.push(report);
    }
    progress("");
    let executor_memory = executor_memory(&ctx).await;
    Ok(RunReport {
        environment: Environment {
            ember_version: env!("CARGO_PKG_VERSION").to_string(),
            datafusion_version: datafusion::DATAFUSION_VERSION.to_string(),
            git_commit: git_commit(),
            cluster: match (&opts.scheduler, &processes) {
                (Some(url), _) => url.clone(),
                (None, Some(_)) => "processes started by ember-bench".into(),
                (None, None) => "embedded".into(),
            },
            executors: info.executors.len(),
            slots_per_executor: if info.executors.is_empty() {
                0
            } else {
                total_slots / info.executors.len()
            },
            executor_memory_bytes: info.executors.first().map_or(0, |e| e.memory_bytes),
            scale_factor: sf,
            data_dir: data.display().to_string(),
            files_per_table: ember::tpch::files_per_table(&data),
            iterations: opts.iterations,
            settings: opts
                .settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            baseline_settings: opts
                .baseline_settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            executor_memory,
        },
        queries,
    })
}

/// Each executor's memory figures as its first heartbeat after the last
/// query gives them (heartbeats come once a second by default); none if
/// the scheduler cannot say.
async fn executor_memory(ctx: &EmberContext) -> Vec<ExecutorMemory> {
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    match ctx.cluster_info().await {
        Ok(info) => info
            .loads
            .iter()
            .map(|l| ExecutorMemory {
                pool_peak_bytes: l.memory_pool_peak_bytes,
                resident_peak_bytes: l.resident_peak_bytes,
                shuffle_spilled_bytes: l.shuffle_spilled_bytes,
            })
            .collect(),
        Err(_) => vec![],
    }
}

/// Runs `sql` once, SIGKILLing one executor at `point` (a replacement is
/// started at once), and returns the timing and the result.
async fn kill_run(
    ctx: &EmberContext,
    cluster: &mut ProcessCluster,
    sql: &str,
    point: KillPoint,
    no_failure: &[f64],
) -> (KillRun, Option<ember::QueryResult>) {
    let delay = match point {
        KillPoint::After(d) => d,
        KillPoint::Fraction(f) => {
            let median = crate::report::stats(no_failure).map_or(0.0, |s| s.1);
            Duration::from_secs_f64(median * f)
        }
    };
    let mut run = KillRun {
        kill_after_seconds: delay.as_secs_f64(),
        seconds: 0.0,
        landed: false,
        error: None,
        runs: vec![],
    };
    if let Err(e) = wait_for_executors(&cluster.url, cluster.executors()).await {
        run.error = Some(e);
        return (run, None);
    }
    let started = Instant::now();
    let query = ctx.run_sql(sql);
    tokio::pin!(query);
    let outcome = tokio::select! {
        r = &mut query => r,
        _ = tokio::time::sleep(delay) => {
            run.landed = true;
            if let Err(e) = cluster.kill_one_and_replace() {
                run.error = Some(e);
            }
            query.await
        }
    };
    run.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(r) => (run, Some(r)),
        Err(e) => {
            run.error = Some(e.to_string());
            (run, None)
        }
    }
}

/// Waits until the cluster at `url` has `n` executors (e.g. a replacement
/// has registered).
async fn wait_for_executors(url: &str, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ctx) = EmberContext::remote(url).await
            && ctx
                .cluster_info()
                .await
                .is_ok_and(|c| c.executors.len() >= n)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the cluster at {url} did not get {n} executors"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `ember-bench tpch answers`: reference answers from single-process
/// DataFusion, one CSV per query.
pub async fn write_answers(data: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = baseline_context(data, cores).await?;
    for q in 1..=22 {
        progress(&format!("q{q}"));
        let sql = query_text(q)?;
        let batches = async { ctx.sql(&sql).await?.collect().await }
            .await
            .map_err(|e| format!("q{q}: {e}"))?;
        let header: Vec<String> = batches
            .first()
            .map(|b| b.schema())
            .into_iter()
            .flat_map(|s| {
                s.fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let rows = ember::verify::rows_as_text(&batches).map_err(|e| e.to_string())?;
        let text = crate::csv::write(&header, &rows);
        std::fs::write(out.join(format!("q{q}.csv")), text).map_err(|e| e.to_string())?;
    }
    progress("");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_key_value_and_quote_their_value() {
        let s = parse_settings(&["ember.balance_scans = false".into(), "a.b=it's".into()]);
        assert_eq!(
            s,
            Ok(vec![
                ("ember.balance_scans".into(), "false".into()),
                ("a.b".into(), "it's".into())
            ])
        );
        assert_eq!(set_statement(&s.unwrap()[1]), "SET a.b = 'it''s'");
        assert!(parse_settings(&["novalue".into()]).is_err());
        assert!(parse_settings(&["=x".into()]).is_err());
    }

    #[tokio::test]
    async fn verifying_a_scale_without_reference_answers_fails_before_running() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(
            data.path().join("ember-tpch.json"),
            r#"{"scale_factor": 7, "files_per_table": 1}"#,
        )
        .unwrap();
        let answers = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            data: data.path().to_path_buf(),
            queries: vec![6],
            iterations: 1,
            executors: 1,
            slots: 1,
            memory_bytes: 1 << 30,
            scheduler: None,
            verify: true,
            baseline: false,
            settings: vec![],
            baseline_settings: vec![],
            answers_dir: answers.path().to_path_buf(),
            kill_after: None,
            kill_runs: 1,
        };
        let e = run(&opts).await.unwrap_err();
        assert!(e.contains("no reference answers in"), "{e}");
        assert!(e.contains("sf7"), "{e}");
    }

    #[test]
    fn kill_points_parse_as_durations_or_fractions() {
        assert_eq!(
            parse_kill_point("300ms"),
            Ok(KillPoint::After(Duration::from_millis(300)))
        );
        assert_eq!(
            parse_kill_point("1.5s"),
            Ok(KillPoint::After(Duration::from_millis(1500)))
        );
        assert_eq!(parse_kill_point("50%"), Ok(KillPoint::Fraction(0.5)));
        assert!(parse_kill_point("soon").is_err());
        assert!(parse_kill_point("-1s").is_err());
    }
}
