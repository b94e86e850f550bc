//! `ember-bench`: Ember's TPC-H benchmark runner.
//!
//! * `tpch gen` writes TPC-H Parquet with the `tpchgen` crates.
//! * `tpch run` runs the queries on Ember (embedded or remote cluster) and,
//!   with `--baseline`, on single-process DataFusion with the same total
//!   number of cores in the same run; `--verify` checks every answer against
//!   the reference answers in `benchmarks/answers/`.
//!   `--kill-executor-after` measures recovery: it runs its own cluster of
//!   processes and kills one executor once per query.
//! * `tpch explain` prints single-process DataFusion's `EXPLAIN ANALYZE`.
//! * `tpch answers` writes reference answers (single-process DataFusion).
//! * `report` compares JSON reports of runs and draws them as SVG.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cluster;
mod csv;
mod report;
mod run;

#[derive(Debug, Parser)]
#[command(name = "ember-bench", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// TPC-H benchmark.
    #[command(subcommand)]
    Tpch(Tpch),
    /// Compare JSON reports of runs (`tpch run --json`).
    Report {
        /// Report files; the first is the reference.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also draw per-query bars into this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Tpch {
    /// Generate TPC-H tables as Parquet, one folder per table.
    Gen {
        /// Scale factor.
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Parquet files per large table.
        #[arg(long, default_value_t = 8)]
        files_per_table: usize,
    },
    /// Run the queries and report timings.
    Run {
        /// Data directory written by `tpch gen`.
        #[arg(long)]
        data: PathBuf,
        /// Queries to run, e.g. `1,3,5-9`.
        #[arg(long, default_value = "1-22")]
        queries: String,
        /// Runs per query; the first is reported as cold.
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        /// Executors of the embedded cluster.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Slots per executor of the embedded cluster.
        #[arg(long, default_value_t = 1)]
        slots: usize,
        /// Memory per executor of the embedded cluster, in MiB.
        #[arg(long, default_value_t = 4096)]
        memory_mib: u64,
        /// Use this cluster instead of an embedded one.
        #[arg(long)]
        scheduler: Option<String>,
        /// Check every answer against the reference answers.
        #[arg(long)]
        verify: bool,
        /// Also run single-process DataFusion with the same total cores.
        #[arg(long)]
        baseline: bool,
        /// A setting for Ember's session, `KEY=VALUE` (repeatable), e.g.
        /// `ember.balance_scans=false`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// A setting for the DataFusion baseline, `KEY=VALUE` (repeatable),
        /// e.g. `datafusion.optimizer.enable_dynamic_filter_pushdown=false`.
        #[arg(long = "baseline-set", value_name = "KEY=VALUE")]
        baseline_settings: Vec<String>,
        /// Write every figure and the environment to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where reference answers live (`sf<SF>/q<N>.csv`).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/answers"))]
        answers: PathBuf,
        /// Start a cluster of real processes (1 ember-scheduler, --executors
        /// ember-executor) and, once per query after its normal runs, SIGKILL
        /// one executor this long into a run (e.g. 300ms, 1s, or 50% of the
        /// query's median), start a replacement, and report the time with the
        /// failure against the time without.
        #[arg(long)]
        kill_executor_after: Option<String>,
        /// Runs per query with a kill; the median is reported.
        #[arg(long, default_value_t = 1)]
        kill_runs: usize,
    },
    /// Print single-process DataFusion's `EXPLAIN ANALYZE` of a query (run
    /// once first, warm), as the baseline runs it: the operator costs to set
    /// beside Ember's `EXPLAIN ANALYZE` stage metrics.
    Explain {
        /// Data directory written by `tpch gen`.
        #[arg(long)]
        data: PathBuf,
        /// The query's number.
        #[arg(long)]
        query: usize,
        /// Target partitions (the baseline uses the cluster's total slots).
        #[arg(long, default_value_t = 2)]
        partitions: usize,
        /// A DataFusion setting, `KEY=VALUE` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Write reference answers (single-process DataFusion) as CSV.
    Answers {
        /// Data directory written by `tpch gen`.
        #[arg(long)]
        data: PathBuf,
        /// Output directory (e.g. benchmarks/answers/sf0.01).
        #[arg(long)]
        out: PathBuf,
    },
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("ember-bench: {msg}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match args.command {
        Command::Tpch(Tpch::Gen {
            sf,
            out,
            files_per_table,
        }) => generate(sf, &out, files_per_table),
        Command::Tpch(Tpch::Run {
            data,
            queries,
            iterations,
            executors,
            slots,
            memory_mib,
            scheduler,
            verify,
            baseline,
            settings,
            baseline_settings,
            json,
            answers,
            kill_executor_after,
            kill_runs,
        }) => {
            let kill_after = kill_executor_after
                .map(|k| run::parse_kill_point(&k))
                .transpose()
                .unwrap_or_else(|e| fail(e));
            let opts = run::RunOptions {
                data,
                queries: run::parse_queries(&queries).unwrap_or_else(|e| fail(e)),
                iterations: iterations.max(1),
                executors,
                slots,
                memory_bytes: memory_mib << 20,
                scheduler,
                verify,
                baseline,
                settings: run::parse_settings(&settings).unwrap_or_else(|e| fail(e)),
                baseline_settings: run::parse_settings(&baseline_settings)
                    .unwrap_or_else(|e| fail(e)),
                answers_dir: answers,
                kill_after,
                kill_runs,
            };
            let report = run::run(&opts).await.unwrap_or_else(|e| fail(e));
            print!("{}", report.to_table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| fail(e));
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            }
            if report.has_failures() {
                eprintln!("\n*** SOME QUERIES FAILED OR GAVE WRONG ANSWERS (see above) ***");
                std::process::exit(2);
            }
        }
        Command::Tpch(Tpch::Explain {
            data,
            query,
            partitions,
            settings,
        }) => {
            let settings = run::parse_settings(&settings).unwrap_or_else(|e| fail(e));
            let text = run::explain_baseline(&data, query, partitions, &settings)
                .await
                .unwrap_or_else(|e| fail(e));
            print!("{text}");
        }
        Command::Tpch(Tpch::Answers { data, out }) => {
            run::write_answers(&data, &out)
                .await
                .unwrap_or_else(|e| fail(e));
            println!("reference answers written to {}", out.display());
        }
        Command::Report { files, plot } => {
            let reports: Vec<(String, report::RunReport)> = files
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(f)
                        .unwrap_or_else(|e| fail(format!("{}: {e}", f.display())));
                    let r = serde_json::from_str(&text)
                        .unwrap_or_else(|e| fail(format!("{}: {e}", f.display())));
                    (f.display().to_string(), r)
                })
                .collect();
            if reports.len() == 1 {
                print!("{}", reports[0].1.to_table());
            }
            for pair in reports.windows(2) {
                print!("{}", report::compare(&pair[0].1, &pair[1].1));
            }
            if let Some(path) = plot {
                let runs: Vec<(String, &report::RunReport)> =
                    reports.iter().map(|(n, r)| (n.clone(), r)).collect();
                std::fs::write(&path, report::svg(&runs))
                    .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
                println!("plot written to {}", path.display());
            }
        }
    }
}

fn generate(sf: f64, out: &std::path::Path, files_per_table: usize) {
    if sf <= 0.0 {
        fail("--sf must be positive");
    }
    let started = std::time::Instant::now();
    let tables = ember::tpch::generate(out, sf, files_per_table).unwrap_or_else(|e| fail(e));
    let secs = started.elapsed().as_secs_f64();
    let rows: u64 = tables.iter().map(|(_, r)| r).sum();
    for (t, r) in &tables {
        println!("{t:>10} {r:>12} rows");
    }
    println!(
        "{rows} rows in {secs:.2} s ({:.0} rows/s) into {}",
        rows as f64 / secs.max(1e-9),
        out.display()
    );
}
