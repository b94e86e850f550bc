//! The interactive shell: line editing and history (rustyline), statements
//! spanning lines until `;`, meta-commands, completion from the catalog.

use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

use ember::sql::Piece;

use crate::completion::{Catalog, SqlHelper};
use crate::output::Format;
use crate::shell::{Shell, format_error};

const HELP: &str = "\
Statements end with ';' and may span lines; pasted text runs statement by
statement, and a meta-command may follow a ';' on the same line. Ctrl-C cancels a running query,
Ctrl-R searches history, Tab completes keywords, tables and columns.

  \\?                     this help
  \\q                     quit (or Ctrl-D)
  \\d                     list tables
  \\d NAME                describe a table: columns, types, location
  \\timing on|off         show elapsed time after results
  \\format table|csv|json output format
  \\maxrows N             rows shown per result in table format (0: all)
  \\i FILE                run the statements in FILE
  \\o [FILE]              send results to FILE (no FILE: back to the terminal)
  \\cluster               executors, slots, memory, running jobs
";

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("ember").join("history"))
}

pub async fn run(shell: &mut Shell) -> Result<(), String> {
    let info = shell.ctx.cluster_info().await.map_err(|e| e.to_string())?;
    let slots: u32 = info.executors.iter().map(|e| e.slots).sum();
    println!(
        "ember-sql {} · connected to {} · {} executor{}, {slots} slot{} · \\? for help",
        env!("CARGO_PKG_VERSION"),
        shell.ctx.url(),
        info.executors.len(),
        if info.executors.len() == 1 { "" } else { "s" },
        if slots == 1 { "" } else { "s" },
    );
    if let Some(ui) = shell.ctx.web_url() {
        println!("web UI and metrics: {ui}/");
    }

    let config = Config::builder().auto_add_history(false).build();
    let mut editor: Editor<SqlHelper, DefaultHistory> =
        Editor::with_config(config).map_err(|e| e.to_string())?;
    let helper = SqlHelper::new();
    let catalog = helper.catalog.clone();
    editor.set_helper(Some(helper));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    refresh_catalog(shell, &catalog).await;

    // One line-editor session holds a whole input: the validator keeps
    // editing until every statement ends with `;`, so pasted or typed-ahead
    // lines are never dropped between two reads.
    'session: loop {
        let input = match editor.readline("ember> ") {
            Ok(input) => input,
            // Ctrl-C at the prompt drops the statement being typed.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.to_string()),
        };
        if input.trim().is_empty() {
            continue;
        }
        // Statements that set secrets are not kept in the history file.
        if !ember::sql::sets_secret(&input) {
            let _ = editor.add_history_entry(input.trim_end());
        }
        let pieces = ember::sql::split_input(&input)
            .unwrap_or_else(|| vec![Piece::Statement(input.trim().to_string())]);
        let mut catalog_changed = false;
        for piece in pieces {
            match piece {
                Piece::Meta(command) => {
                    catalog_changed = true;
                    match meta(shell, &command).await {
                        Ok(Meta::Quit) => break 'session,
                        Ok(Meta::Continue) => {}
                        Err(e) => eprintln!("Error: {e}"),
                    }
                }
                Piece::Statement(stmt) => {
                    catalog_changed |= changes_catalog(&stmt);
                    if let Err(e) = shell.execute(&stmt).await {
                        eprintln!("Error: {}", format_error(&stmt, &e));
                    }
                }
            }
        }
        if catalog_changed {
            refresh_catalog(shell, &catalog).await;
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

fn changes_catalog(sql: &str) -> bool {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(first.as_str(), "create" | "drop" | "alter")
}

/// Loads table and column names for completion.
async fn refresh_catalog(shell: &Shell, catalog: &std::sync::Arc<std::sync::Mutex<Catalog>>) {
    let sql = "SELECT table_name, column_name FROM information_schema.columns \
               WHERE table_schema <> 'information_schema'";
    let Ok(result) = shell.ctx.run_sql(sql).await else {
        return;
    };
    let Ok(rows) = ember::verify::rows_as_text(&result.batches) else {
        return;
    };
    let mut fresh = Catalog::default();
    for row in rows {
        if let [table, column] = row.as_slice() {
            fresh.tables.push(table.clone());
            fresh.columns.push(column.clone());
        }
    }
    fresh.tables.sort();
    fresh.tables.dedup();
    fresh.columns.sort();
    fresh.columns.dedup();
    if let Ok(mut c) = catalog.lock() {
        *c = fresh;
    }
}

pub enum Meta {
    Continue,
    Quit,
}

/// Runs a script the way the shell reads a terminal: statements end with
/// `;` (the last one need not), and a line starting with `\` is a
/// meta-command. Stops at the first error, or at `\q`.
pub async fn run_script(shell: &mut Shell, text: &str) -> Result<(), String> {
    let mut buffer = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if buffer.trim().is_empty() && trimmed.starts_with('\\') {
            buffer.clear();
            match Box::pin(meta(shell, trimmed)).await? {
                Meta::Quit => return Ok(()),
                Meta::Continue => continue,
            }
        }
        buffer.push_str(line);
        buffer.push('\n');
        if ember::sql::is_complete(&buffer) {
            run_statements(shell, &buffer).await?;
            buffer.clear();
        }
    }
    run_statements(shell, &buffer).await
}

async fn run_statements(shell: &mut Shell, text: &str) -> Result<(), String> {
    for stmt in ember::sql::split_statements(text) {
        shell
            .execute(&stmt)
            .await
            .map_err(|e| format_error(&stmt, &e))?;
    }
    Ok(())
}

pub async fn meta(shell: &mut Shell, line: &str) -> Result<Meta, String> {
    let mut parts = line.splitn(2, char::is_whitespace);
    let cmd = parts.next().unwrap_or("");
    let arg = parts.next().map(str::trim).unwrap_or("");
    let result: Result<(), String> = match cmd {
        "\\q" => return Ok(Meta::Quit),
        "\\?" | "\\h" | "\\help" => {
            print!("{HELP}");
            Ok(())
        }
        "\\d" if arg.is_empty() => {
            run_quietly(
                shell,
                "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema <> 'information_schema' ORDER BY table_name",
            )
            .await
        }
        "\\d" => describe(shell, arg).await,
        "\\timing" => match arg {
            "on" => {
                shell.timing = true;
                Ok(())
            }
            "off" => {
                shell.timing = false;
                Ok(())
            }
            "" => {
                shell.timing = !shell.timing;
                println!("timing is {}", if shell.timing { "on" } else { "off" });
                Ok(())
            }
            _ => Err("usage: \\timing on|off".into()),
        },
        "\\format" => match arg.parse::<Format>() {
            Ok(f) => {
                shell.format = f;
                Ok(())
            }
            Err(_) => Err("usage: \\format table|csv|json".into()),
        },
        "\\maxrows" => match arg.parse::<usize>() {
            Ok(0) => {
                shell.max_rows = None;
                Ok(())
            }
            Ok(n) => {
                shell.max_rows = Some(n);
                Ok(())
            }
            Err(_) => Err("usage: \\maxrows N (0 shows all rows)".into()),
        },
        "\\i" if !arg.is_empty() => match std::fs::read_to_string(arg) {
            Ok(text) => Box::pin(run_script(shell, &text)).await,
            Err(e) => Err(format!("cannot read {arg}: {e}")),
        },
        "\\o" if arg.is_empty() => {
            shell.output = None;
            Ok(())
        }
        "\\o" => match std::fs::File::create(arg) {
            Ok(f) => {
                shell.output = Some((arg.to_string(), f));
                Ok(())
            }
            Err(e) => Err(format!("cannot write {arg}: {e}")),
        },
        "\\cluster" => cluster(shell).await,
        _ => Err(format!("unknown command {cmd}: \\? lists the commands")),
    };
    result.map(|()| Meta::Continue)
}

/// Runs a catalog query and prints it as a table whatever the format.
async fn run_quietly(shell: &mut Shell, sql: &str) -> Result<(), String> {
    let result = shell.ctx.run_sql(sql).await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    crate::output::write_table(&result, None, &mut out).map_err(|e| e.to_string())
}

async fn describe(shell: &mut Shell, name: &str) -> Result<(), String> {
    let escaped = name.replace('\'', "''");
    let columns = shell
        .ctx
        .run_sql(&format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_name = '{escaped}' ORDER BY ordinal_position"
        ))
        .await
        .map_err(|e| e.to_string())?;
    if columns.num_rows() == 0 {
        return Err(format!("no table named {name}"));
    }
    println!("Table {name}");
    let mut out = std::io::stdout();
    crate::output::write_table(&columns, None, &mut out).map_err(|e| e.to_string())?;
    // The definition holds the location of external tables.
    if let Ok(def) = shell
        .ctx
        .run_sql(&format!(
            "SELECT definition FROM information_schema.views WHERE table_name = '{escaped}'"
        ))
        .await
        && let Ok(rows) = ember::verify::rows_as_text(&def.batches)
        && let Some(d) = rows.first().and_then(|r| r.first())
        && d != "NULL"
    {
        println!("Definition: {d}");
    }
    Ok(())
}

async fn cluster(shell: &Shell) -> Result<(), String> {
    let info = shell.ctx.cluster_info().await.map_err(|e| e.to_string())?;
    println!(
        "scheduler {}  running jobs: {}",
        shell.ctx.url(),
        info.running_jobs
    );
    if let Some(ui) = shell.ctx.web_url() {
        println!("web UI and metrics: {ui}/");
    }
    for e in &info.executors {
        println!(
            "  executor {:<38} {:<22} {} slot{}  {:.1} GiB",
            e.executor_id,
            e.address,
            e.slots,
            if e.slots == 1 { "" } else { "s" },
            e.memory_bytes as f64 / (1u64 << 30) as f64
        );
    }
    let slots: u32 = info.executors.iter().map(|e| e.slots).sum();
    println!("  {} executors, {slots} slots", info.executors.len());
    Ok(())
}
