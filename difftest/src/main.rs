//! `ember-difftest`: runs SQL through an embedded Ember cluster and through
//! single-process DataFusion and reports every statement on which they
//! differ (values, types, errors).
//!
//! ```text
//! ember-difftest slt path/to/test_files [--json report.json] [--show 50]
//! ember-difftest random --seed 42 --count 1000 [--data dir]
//! ```
//!
//! With `EMBER_DIFFTEST_DEBUG` set, `random` prints every generated query
//! both engines refuse (a generator bug: such a query tests nothing).
//!
//! sqllogictest files refer to data by paths relative to the directory
//! DataFusion's runner starts in (the parent of `test_files`); the process
//! moves there (`--cwd` says otherwise).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ember::{EmberContext, StandaloneOptions};
use ember_difftest::{Engines, Outcome};

#[derive(Debug, Parser)]
#[command(name = "ember-difftest", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run sqllogictest files (or directories of them).
    Slt {
        /// `.slt` files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Directory to run in (default: the parent of `test_files` when a
        /// path goes through one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Run generated queries over TPC-H SF 0.01.
    Random {
        /// Seed of the generator (the same seed, the same queries).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Queries to run.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// TPC-H data (generated there at SF 0.01 if missing).
        #[arg(long, default_value = "target/difftest-tpch-sf0.01")]
        data: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Seconds one statement may take on either engine.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Write the full report (every difference) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Differences to print.
    #[arg(long, default_value_t = 40)]
    show: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (report, common) = match Args::parse().command {
        Command::Slt { paths, cwd, common } => {
            let paths: Vec<PathBuf> = paths
                .iter()
                .map(std::path::absolute)
                .collect::<Result<_, _>>()?;
            let files = ember_difftest::slt::files(&paths)?;
            if let Some(dir) = cwd.or_else(|| runner_dir(&paths)) {
                std::env::set_current_dir(&dir)?;
            }
            let cluster = cluster(&common).await?;
            let report =
                ember_difftest::slt::run_files(&files, cluster.url(), common.timeout()).await;
            (report, common)
        }
        Command::Random {
            seed,
            count,
            data,
            common,
        } => {
            if !data.join(ember::tpch::METADATA_FILE).exists() {
                ember::tpch::generate(&data, 0.01, 3)?;
            }
            let data = std::path::absolute(&data)?;
            let cluster = cluster(&common).await?;
            let engines = Engines::open(cluster.url(), common.timeout()).await?;
            for ddl in ember::tpch::create_table_statements(&data) {
                let (df, ember) = engines.run(&ddl).await;
                if let (Outcome::Failed(e), _) | (_, Outcome::Failed(e)) = (&df, &ember) {
                    return Err(format!("{ddl}: {e}").into());
                }
            }
            let report = ember_difftest::random::run(&engines, seed, count).await;
            (report, common)
        }
    };
    println!("{}", report.text(common.show));
    if let Some(path) = common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

async fn cluster(common: &Common) -> ember::Result<EmberContext> {
    EmberContext::standalone_with(StandaloneOptions {
        executors: common.executors,
        slots: Some(1),
        ..Default::default()
    })
    .await
}

impl Common {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// The parent of the first `test_files` directory on a path.
fn runner_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().find_map(|p| {
        p.ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "test_files"))
            .and_then(|a| a.parent())
            .map(|a| a.to_path_buf())
    })
}
