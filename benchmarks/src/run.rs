//! `ember-bench tpch run`: the 22 queries on Ember and, with `--baseline`, on
//! single-process DataFusion with the same total cores, in the same run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use ember::{EmberContext, StandaloneOptions};

use crate::report::{Environment, QueryReport, RunReport};

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
    pub answers_dir: PathBuf,
}

/// Parses `1,3,5-9` into query numbers.
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

fn progress(msg: &str) {
    let mut err = std::io::stderr();
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
    let ctx = match &opts.scheduler {
        Some(url) => EmberContext::remote(url).await,
        None => {
            EmberContext::standalone_with(StandaloneOptions {
                executors: opts.executors,
                slots: Some(opts.slots),
                memory_bytes: opts.memory_bytes,
                shuffle_memory_bytes: opts.memory_bytes / 4,
            })
            .await
        }
    }
    .map_err(|e| e.to_string())?;
    let info = ctx.cluster_info().await.map_err(|e| e.to_string())?;
    let total_slots: usize = info.executors.iter().map(|e| e.slots as usize).sum();
    for stmt in ember::tpch::create_table_statements(&data) {
        ctx.sql(&stmt).await.map_err(|e| e.to_string())?;
    }
    let baseline = if opts.baseline {
        Some(baseline_context(&data, total_slots).await?)
    } else {
        None
    };
    let answers = sf.map(|sf| opts.answers_dir.join(format!("sf{sf}")));

    let mut queries = vec![];
    let total = opts.queries.len();
    for (i, &q) in opts.queries.iter().enumerate() {
        let sql = query_text(q)?;
        let mut report = QueryReport {
            query: q,
            rows: 0,
            ember_seconds: vec![],
            datafusion_seconds: vec![],
            verified: None,
            verify_error: None,
            error: None,
        };
        let mut last = None;
        for it in 0..opts.iterations {
            progress(&format!(
                "[{}/{total}] q{q} ember iteration {}/{}",
                i + 1,
                it + 1,
                opts.iterations
            ));
            let started = Instant::now();
            match ctx.sql(&sql).await {
                Ok(r) => {
                    report.ember_seconds.push(started.elapsed().as_secs_f64());
                    report.rows = r.num_rows();
                    last = Some(r);
                }
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(df) = &baseline {
            for it in 0..opts.iterations {
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
                        break;
                    }
                }
            }
        }
        if opts.verify
            && let Some(result) = &last
        {
            let outcome = match &answers {
                None => Err(
                    "unknown scale factor: generate the data with `ember-bench tpch gen`".into(),
                ),
                Some(dir) => expected_answer(dir, q).and_then(|expected| {
                    let actual =
                        ember::verify::rows_as_text(&result.batches).map_err(|e| e.to_string())?;
                    ember::verify::compare(actual, expected, ember::verify::is_ordered(&sql))
                }),
            };
            report.verified = Some(outcome.is_ok());
            report.verify_error = outcome.err();
        }
        queries.push(report);
    }
    progress("");
    Ok(RunReport {
        environment: Environment {
            ember_version: env!("CARGO_PKG_VERSION").to_string(),
            datafusion_version: datafusion::DATAFUSION_VERSION.to_string(),
            git_commit: git_commit(),
            cluster: opts.scheduler.clone().unwrap_or_else(|| "embedded".into()),
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
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
        queries,
    })
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
