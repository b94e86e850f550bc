//! `ember-sql`: Ember's SQL shell.
//!
//! With no `--scheduler` it starts an embedded cluster (a scheduler and
//! `--executors` executors in this process, on loopback ports, the same
//! gRPC/Flight path as a real cluster). `-c` and `-f` run statements in the
//! order given, in one session, and exit non-zero on the first error;
//! piped standard input is run the same way. On a terminal it is an
//! interactive shell ([`repl`]).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use ember::{EmberContext, StandaloneOptions};

mod completion;
mod output;
mod progress;
mod repl;
mod shell;

use output::Format;
use shell::Shell;

/// Ember's SQL shell.
#[derive(Debug, Parser)]
#[command(name = "ember-sql", version)]
struct Args {
    /// Run this SQL (repeatable; runs in order with -f).
    #[arg(short = 'c', long = "command", action = ArgAction::Append)]
    command: Vec<String>,
    /// Run the statements in this file (repeatable; runs in order with -c).
    #[arg(short = 'f', long = "file", action = ArgAction::Append)]
    file: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Scheduler URL; without it an embedded cluster is started.
    #[arg(long, env = "EMBER_SCHEDULER")]
    scheduler: Option<String>,
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Rows shown per result in table format (default: 1000 interactively,
    /// all otherwise).
    #[arg(long)]
    max_rows: Option<usize>,
    /// Print the elapsed time after each result (default: on interactively).
    #[arg(long)]
    timing: bool,
    /// Generate TPC-H data at this scale factor (cached) and register its tables.
    #[arg(long)]
    tpch: Option<f64>,
    /// Where --tpch data is kept (default: ~/.cache/ember/tpch-sf<SF>).
    #[arg(long)]
    tpch_dir: Option<PathBuf>,
}

/// One thing to run, in command-line order.
enum Input {
    Sql(String),
    File(PathBuf),
}

fn ordered_inputs(matches: &clap::ArgMatches, args: &Args) -> Vec<Input> {
    let mut items: Vec<(usize, Input)> = vec![];
    if let Some(idx) = matches.indices_of("command") {
        items.extend(idx.zip(args.command.iter().cloned().map(Input::Sql)));
    }
    if let Some(idx) = matches.indices_of("file") {
        items.extend(idx.zip(args.file.iter().cloned().map(Input::File)));
    }
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, i)| i).collect()
}

#[tokio::main]
async fn main() {
    // Quiet unless RUST_LOG asks: the terminal belongs to the user.
    ember::logging::init("off");
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let inputs = ordered_inputs(&matches, &args);
    let code = match run(args, inputs).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    };
    // The session is closed and the output written: leave now rather than
    // wait for the runtime to wind down the embedded cluster's threads.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

async fn connect(args: &Args) -> Result<EmberContext, String> {
    let ctx = match &args.scheduler {
        Some(url) => EmberContext::remote(url).await,
        None => {
            EmberContext::standalone_with(StandaloneOptions {
                executors: args.executors,
                ..Default::default()
            })
            .await
        }
    }
    .map_err(|e| e.to_string())?;
    if let Some(sf) = args.tpch {
        let dir = args
            .tpch_dir
            .clone()
            .unwrap_or_else(|| default_tpch_dir(sf));
        if !dir.join(ember::tpch::METADATA_FILE).exists() {
            eprintln!("generating TPC-H SF {sf} into {} ...", dir.display());
            ember::tpch::generate(&dir, sf, 4).map_err(|e| e.to_string())?;
        }
        for stmt in ember::tpch::create_table_statements(&dir) {
            ctx.run_sql(&stmt).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(ctx)
}

async fn run(args: Args, inputs: Vec<Input>) -> Result<(), String> {
    let interactive = inputs.is_empty() && std::io::stdin().is_terminal();
    let ctx = connect(&args).await?;
    let mut shell = Shell::new(ctx, args.format, interactive);
    shell.timing = args.timing || interactive;
    shell.max_rows = args.max_rows.or(interactive.then_some(1000));
    let result = drive(&mut shell, interactive, inputs).await;
    // Close the session on the scheduler rather than leave it to its TTL.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), shell.ctx.close()).await;
    result
}

async fn drive(shell: &mut Shell, interactive: bool, inputs: Vec<Input>) -> Result<(), String> {
    let shell = &mut *shell;
    if interactive {
        return repl::run(shell).await;
    }
    if inputs.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
        return repl::run_script(shell, &text).await;
    }
    for input in inputs {
        let text = match input {
            Input::Sql(s) => s,
            Input::File(p) => std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        };
        repl::run_script(shell, &text).await?;
    }
    Ok(())
}

fn default_tpch_dir(sf: f64) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ember").join(format!("tpch-sf{sf}"))
}
