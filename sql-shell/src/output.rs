//! Result formatting: aligned tables, RFC 4180 CSV, JSON.

use std::io::Write;

use ember::QueryResult;
use ember::arrow::csv::WriterBuilder;
use ember::arrow::json::ArrayWriter;
use ember::arrow::util::pretty::pretty_format_batches;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

pub fn write_table(result: &QueryResult, out: &mut impl Write) -> std::io::Result<()> {
    if result.batches.is_empty() {
        // Still show the column names.
        let empty = ember::arrow::record_batch::RecordBatch::new_empty(result.schema.clone());
        writeln!(out, "{}", pretty_format_batches(&[empty]).map_err(io_err)?)
    } else {
        writeln!(
            out,
            "{}",
            pretty_format_batches(&result.batches).map_err(io_err)?
        )
    }
}

/// One header row, then the rows; fields quoted when they need it.
pub fn write_csv(result: &QueryResult, out: &mut impl Write) -> std::io::Result<()> {
    let mut writer = WriterBuilder::new().with_header(true).build(&mut *out);
    if result.batches.is_empty() {
        let empty = ember::arrow::record_batch::RecordBatch::new_empty(result.schema.clone());
        writer.write(&empty).map_err(io_err)?;
    }
    for batch in &result.batches {
        writer.write(batch).map_err(io_err)?;
    }
    Ok(())
}

/// A JSON array of objects, one per row.
pub fn write_json(result: &QueryResult, out: &mut impl Write) -> std::io::Result<()> {
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
