//! `ember-sql` as users run it: golden output of `-c`/`-f` in every format,
//! and the interactive shell driven through a pseudo-terminal.

use std::process::Command;
use std::time::Duration;

use expectrl::{ControlCode, Eof, Expect, Regex, Session};

use crate::common::{binary, tpch_dir};

fn ember_sql(args: &[&str]) -> std::process::Output {
    let dir = tpch_dir().display().to_string();
    Command::new(binary("ember-sql"))
        .args(["--tpch", "0.01", "--tpch-dir", &dir])
        .args(args)
        .output()
        .expect("run ember-sql")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ember_sql(args);
    assert!(
        out.status.success(),
        "ember-sql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

const NATIONS: &str =
    "SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 3 ORDER BY n_nationkey";

#[test]
fn csv_output_is_rfc4180_with_one_header_row() {
    let out = stdout_of(&[
        "--format",
        "csv",
        "-c",
        NATIONS,
        "-c",
        "SELECT 'a,b' AS x, 'say \"hi\"' AS y",
    ]);
    assert_eq!(
        out,
        "n_nationkey,n_name\n0,ALGERIA\n1,ARGENTINA\n2,BRAZIL\nx,y\n\"a,b\",\"say \"\"hi\"\"\"\n"
    );
}

#[test]
fn json_output_is_an_array_of_objects() {
    let out = stdout_of(&["--format", "json", "-c", NATIONS]);
    assert_eq!(
        out,
        "[{\"n_nationkey\":0,\"n_name\":\"ALGERIA\"},{\"n_nationkey\":1,\"n_name\":\"ARGENTINA\"},{\"n_nationkey\":2,\"n_name\":\"BRAZIL\"}]\n"
    );
}

#[test]
fn table_output_is_aligned_with_a_row_count() {
    let out = stdout_of(&["-c", NATIONS]);
    assert_eq!(
        out,
        "+-------------+-----------+\n\
         | n_nationkey | n_name    |\n\
         +-------------+-----------+\n\
         | 0           | ALGERIA   |\n\
         | 1           | ARGENTINA |\n\
         | 2           | BRAZIL    |\n\
         +-------------+-----------+\n\
         3 rows\n"
    );
    let cut = stdout_of(&["--max-rows", "1", "-c", NATIONS]);
    assert!(cut.contains("| 0           | ALGERIA |"), "{cut}");
    assert!(!cut.contains("ARGENTINA"), "{cut}");
    // Fetching stopped at the limit: the rest was never transferred.
    assert!(
        cut.contains("(more rows not shown: fetching stopped"),
        "{cut}"
    );
    assert!(cut.ends_with("1 row shown\n"), "{cut}");
}

#[test]
fn files_and_commands_run_in_order_in_one_session_and_ddl_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "-- a comment; with a semicolon\nSET datafusion.execution.batch_size = 123;\n\
         SELECT 1 AS one;\nCREATE VIEW v AS SELECT 2 AS two;",
    )
    .unwrap();
    let script = script.display().to_string();
    let out = stdout_of(&[
        "--format",
        "csv",
        "-c",
        "SELECT 0 AS zero",
        "-f",
        &script,
        "-c",
        "SELECT two FROM v",
        "-c",
        "SHOW datafusion.execution.batch_size",
    ]);
    assert_eq!(
        out,
        "zero\n0\none\n1\ntwo\n2\nname,value\ndatafusion.execution.batch_size,123\n"
    );
}

#[test]
fn an_error_goes_to_stderr_and_exits_non_zero() {
    let out = ember_sql(&["-c", "SELECT 1", "-c", "SELEC oops", "-c", "SELECT 2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Line: 1, Column: 1"), "{stderr}");
    assert!(stderr.contains("SELEC oops\n  ^"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 row"), "{stdout}");
    assert!(
        !stdout.contains("Int64(2)"),
        "statements after the error must not run"
    );
}

#[test]
fn piped_statements_run_like_a_script() {
    use std::io::Write;
    let dir = tpch_dir().display().to_string();
    let mut child = Command::new(binary("ember-sql"))
        .args(["--tpch", "0.01", "--tpch-dir", &dir, "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT r_name FROM region\nORDER BY r_name LIMIT 1;\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "r_name\nAFRICA\n");
}

fn spawn_shell(data_home: &std::path::Path) -> expectrl::session::OsSession {
    let mut cmd = Command::new(binary("ember-sql"));
    cmd.args([
        "--tpch",
        "0.01",
        "--tpch-dir",
        &tpch_dir().display().to_string(),
    ])
    .env("XDG_DATA_HOME", data_home)
    .env("TERM", "xterm")
    .env_remove("RUST_LOG");
    let mut session = Session::spawn(cmd).expect("spawn ember-sql in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(60)));
    session
}

#[test]
fn interactive_shell_edits_describes_shows_progress_cancels_and_exits() {
    let data_home = tempfile::tempdir().unwrap();
    let mut sh = spawn_shell(data_home.path());
    sh.expect(Regex(
        r"connected to http://127\.0\.0\.1:\d+ · 2 executors, \d+ slots?",
    ))
    .expect("banner");
    sh.expect("ember> ").unwrap();

    // A statement over two lines.
    sh.send_line("SELECT n_name,").unwrap();
    sh.send_line("n_regionkey FROM nation ORDER BY n_name LIMIT 2;")
        .unwrap();
    sh.expect("ALGERIA").unwrap();
    sh.expect(Regex(r"2 rows in \d+\.\d{3} s")).unwrap();

    // Meta-commands.
    sh.send_line("\\d").unwrap();
    sh.expect("lineitem").unwrap();
    sh.send_line("\\d region").unwrap();
    sh.expect("r_regionkey").unwrap();
    sh.expect("LOCATION").unwrap();

    // A long query shows progress; Ctrl-C cancels it on the cluster.
    sh.send_line(
        "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_linenumber = b.l_linenumber;",
    )
    .unwrap();
    sh.expect(Regex(r"tasks \d+/\d+"))
        .expect("progress display");
    sh.send(ControlCode::EndOfText).unwrap();
    sh.expect("query cancelled").unwrap();
    sh.expect("ember> ").unwrap();

    // The next query succeeds; a syntax error does not end the session.
    sh.send_line("SELEC 1;").unwrap();
    sh.expect("Column: 1").unwrap();
    sh.send_line("SELECT 40 + 2 AS answer;").unwrap();
    sh.expect("| 42     |").unwrap();
    sh.expect("ember> ").unwrap();

    // Ctrl-C at the prompt does not end the shell; \q does.
    sh.send(ControlCode::EndOfText).unwrap();
    sh.expect("ember> ").unwrap();
    sh.send_line("SELECT 'still here' AS s;").unwrap();
    sh.expect("still here").unwrap();
    sh.send_line("\\q").unwrap();
    sh.expect(Eof).unwrap();

    let history = std::fs::read_to_string(data_home.path().join("ember/history"))
        .expect("history is saved in the data dir");
    assert!(history.contains("SELECT 40 + 2 AS answer;"), "{history}");
}

#[test]
fn pasted_statements_all_run_in_order() {
    let data_home = tempfile::tempdir().unwrap();
    let mut sh = spawn_shell(data_home.path());
    sh.expect("ember> ").unwrap();

    // A 10-line query arriving at once, as a plain paste (or fast typing):
    // no line after the first may be lost.
    let query = [
        "SELECT",
        "  n_name,",
        "  r_name",
        "FROM nation",
        "JOIN region",
        "  ON n_regionkey = r_regionkey",
        "WHERE",
        "  n_nationkey = 7",
        "ORDER BY",
        "  n_name;",
    ];
    sh.send(format!("{}\r", query.join("\r"))).unwrap();
    sh.expect("GERMANY").unwrap();
    sh.expect("EUROPE").unwrap();
    sh.expect(Regex(r"1 row in \d+\.\d{3} s")).unwrap();
    sh.expect("ember> ").unwrap();

    // Three statements in one bracketed paste (what terminals and tmux
    // send), then Enter: all three run, in order.
    sh.send("\x1b[200~SELECT 'first' AS a;\nSELECT 'second' AS b;\nSELECT 'third' AS c;\x1b[201~")
        .unwrap();
    sh.send("\r").unwrap();
    // (Results, not the echo of the pasted text: the values are unquoted.)
    sh.expect(Regex(r"\| first +\|")).unwrap();
    sh.expect(Regex(r"\| second +\|")).unwrap();
    sh.expect(Regex(r"\| third +\|")).unwrap();
    sh.expect("ember> ").unwrap();

    // A meta-command after a statement on one line, as in psql.
    sh.send_line("SELECT 'seven' AS s; \\d").unwrap();
    sh.expect(Regex(r"\| seven +\|")).unwrap();
    sh.expect("| lineitem").unwrap();
    sh.expect("ember> ").unwrap();
    sh.send_line("\\q").unwrap();
    sh.expect(Eof).unwrap();
}

#[test]
fn meta_commands_work_in_scripts_too() {
    let out = stdout_of(&["-c", "\\d", "-c", "\\format csv", "-c", "SELECT 1 AS one"]);
    assert!(out.contains("| lineitem   | BASE TABLE |"), "{out}");
    assert!(out.ends_with("one\n1\n"), "{out}");
    let bad = ember_sql(&["-c", "\\nonsense"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown command \\nonsense"));
}
