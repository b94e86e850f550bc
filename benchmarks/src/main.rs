//! `ember-bench`: Ember's TPC-H benchmark runner. For now it generates data;
//! running and comparing against single-process DataFusion is tracked
//! separately.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}

fn main() {
    let args = Args::parse();
    match args.command {
        Command::Tpch(Tpch::Gen {
            sf,
            out,
            files_per_table,
        }) => {
            let started = std::time::Instant::now();
            match ember::tpch::generate(&out, sf, files_per_table) {
                Ok(tables) => {
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
                Err(e) => {
                    eprintln!("ember-bench: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
