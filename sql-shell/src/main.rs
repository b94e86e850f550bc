//! `ember-sql`: Ember's SQL shell.
//!
//! With no `--scheduler` it starts an embedded cluster (a scheduler and
//! `--executors` executors in this process, on loopback ports, the same
//! gRPC/Flight path as a real cluster). `-c` and `-f` run statements in the
//! order given, in one session; without them, statements are read from
//! standard input (a prompt when it is a terminal).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use ember::{EmberContext, QueryResult, StandaloneOptions};

mod output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let inputs = ordered_inputs(&matches, &args);
    if let Err(e) = run(args, inputs).await {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args, inputs: Vec<Input>) -> Result<(), String> {
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
        if !dir.join("lineitem").exists() {
            eprintln!("generating TPC-H SF {sf} into {} ...", dir.display());
            ember::tpch::generate(&dir, sf, 4).map_err(|e| e.to_string())?;
        }
        for stmt in ember::tpch::create_table_statements(&dir) {
            ctx.sql(&stmt).await.map_err(|e| e.to_string())?;
        }
    }

    let mut out = std::io::stdout().lock();
    if !inputs.is_empty() {
        for input in inputs {
            let text = match input {
                Input::Sql(s) => s,
                Input::File(p) => std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            };
            for stmt in ember::sql::split_statements(&text) {
                run_statement(&ctx, &stmt, args.format, &mut out).await?;
            }
        }
        return Ok(());
    }

    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        for line in stdin.lock().lines() {
            text.push_str(&line.map_err(|e| e.to_string())?);
            text.push('\n');
        }
        for stmt in ember::sql::split_statements(&text) {
            run_statement(&ctx, &stmt, args.format, &mut out).await?;
        }
        return Ok(());
    }
    interactive(&ctx, args.format).await
}

fn default_tpch_dir(sf: f64) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ember").join(format!("tpch-sf{sf}"))
}

async fn run_statement(
    ctx: &EmberContext,
    sql: &str,
    format: Format,
    out: &mut impl Write,
) -> Result<(), String> {
    let started = Instant::now();
    let result = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    print_result(&result, format, started, out).map_err(|e| e.to_string())
}

fn print_result(
    result: &QueryResult,
    format: Format,
    started: Instant,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if !result.has_result_set {
        return Ok(());
    }
    match format {
        Format::Table => {
            output::write_table(result, out)?;
            let rows = result.num_rows();
            writeln!(
                out,
                "{rows} row{} in {:.3} s",
                if rows == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            )?;
        }
        Format::Csv => output::write_csv(result, out)?,
        Format::Json => output::write_json(result, out)?,
    }
    out.flush()
}

async fn interactive(ctx: &EmberContext, format: Format) -> Result<(), String> {
    let info = ctx.cluster_info().await.map_err(|e| e.to_string())?;
    let slots: u32 = info.executors.iter().map(|e| e.slots).sum();
    println!(
        "ember-sql {} connected to {} ({} executors, {slots} slots). End statements with ';', Ctrl-D to exit.",
        env!("CARGO_PKG_VERSION"),
        ctx.url(),
        info.executors.len()
    );
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    let mut out = std::io::stdout();
    loop {
        print!(
            "{}",
            if buffer.is_empty() {
                "ember> "
            } else {
                "   ..> "
            }
        );
        let _ = out.flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => {
                println!();
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let trimmed = line.trim();
        if buffer.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit") {
            return Ok(());
        }
        buffer.push_str(&line);
        if !ember::sql::is_complete(&buffer) {
            continue;
        }
        for stmt in ember::sql::split_statements(&buffer) {
            if let Err(e) = run_statement(ctx, &stmt, format, &mut out).await {
                eprintln!("Error: {e}");
            }
        }
        buffer.clear();
    }
}
