//! Result formatting: aligned tables (cut at a row limit), RFC 4180 CSV,
//! JSON.

use std::io::Write;

use clap::ValueEnum;
use ember::QueryResult;
use ember::arrow::csv::WriterBuilder;
use ember::arrow::json::ArrayWriter;
use ember::arrow::record_batch::RecordBatch;
use ember::arrow::util::pretty::pretty_format_batches;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Format as ValueEnum>::from_str(s, true)
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The first `max` rows of `batches`.
fn head(batches: &[RecordBatch], max: usize) -> Vec<RecordBatch> {
    let mut out = vec![];
    let mut left = max;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        out.push(b.slice(0, n));
        left -= n;
    }
    out
}

/// An aligned table; beyond `max_rows` rows, a line says how many were cut.
pub fn write_table(
    result: &QueryResult,
    max_rows: Option<usize>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let rows = result.num_rows();
    let shown = match max_rows {
        Some(max) if rows > max => head(&result.batches, max),
        _ => result.batches.clone(),
    };
    let shown = if shown.iter().all(|b| b.num_rows() == 0) {
        // Still show the column names.
        vec![RecordBatch::new_empty(result.schema.clone())]
    } else {
        shown
    };
    writeln!(out, "{}", pretty_format_batches(&shown).map_err(io_err)?)?;
    if let Some(max) = max_rows.filter(|m| rows > *m) {
        writeln!(
            out,
            "({} more rows not shown; change the limit with \\maxrows N or --max-rows)",
            rows - max
        )?;
    }
    Ok(())
}

/// One header row, then the rows; fields quoted when they need it.
pub fn write_csv(result: &QueryResult, out: &mut dyn Write) -> std::io::Result<()> {
    let mut writer = WriterBuilder::new().with_header(true).build(out);
    if result.batches.is_empty() {
        writer
            .write(&RecordBatch::new_empty(result.schema.clone()))
            .map_err(io_err)?;
    }
    for batch in &result.batches {
        writer.write(batch).map_err(io_err)?;
    }
    Ok(())
}

/// A JSON array of objects, one per row.
pub fn write_json(result: &QueryResult, out: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = Vec::new();
    {
        let mut writer = ArrayWriter::new(&mut buf);
        for batch in &result.batches {
            writer.write(batch).map_err(io_err)?;
        }
        writer.finish().map_err(io_err)?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    out.write_all(&buf)?;
    writeln!(out)
}
