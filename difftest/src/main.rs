//! `ember-difftest`: runs SQL through an embedded Ember cluster and through
//! single-process DataFusion and reports every statement on which they
//! differ (values, types, errors).
//!
//! ```text
//! ember-difftest slt path/to/test_files [--json report.json] [--show 50]
//! ```
//!
//! sqllogictest files refer to data by paths relative to the directory
//! DataFusion's runner starts in (the parent of `test_files`); the process
//! moves there (`--cwd` says otherwise).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ember::{EmberContext, StandaloneOptions};

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
    let Command::Slt { paths, cwd, common } = Args::parse().command;
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(std::path::absolute)
        .collect::<Result<_, _>>()?;
    let files = ember_difftest::slt::files(&paths)?;
    if let Some(dir) = cwd.or_else(|| runner_dir(&paths)) {
        std::env::set_current_dir(&dir)?;
    }
    let cluster = EmberContext::standalone_with(StandaloneOptions {
        executors: common.executors,
        slots: Some(1),
        ..Default::default()
    })
    .await?;
    let report = ember_difftest::slt::run_files(
        &files,
        cluster.url(),
        Duration::from_secs(common.timeout_secs),
    )
    .await;
    println!("{}", report.text(common.show));
    if let Some(path) = common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
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
