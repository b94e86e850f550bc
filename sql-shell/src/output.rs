//! Result formatting: aligned tables (cut at a row limit), RFC 4180 CSV and
//! JSON written batch by batch.

use std::io::Write;

use clap::ValueEnum;
use ember::QueryResult;
use ember::arrow::csv::WriterBuilder;
use ember::arrow::datatypes::SchemaRef;
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
    let cut = match max_rows {
        Some(max) if rows > max => Some(rows - max),
        _ => None,
    };
    write_table_rows(&result.schema, &result.batches, max_rows, cut, out)
}

/// An aligned table of the first `max_rows` rows of `batches`; `hidden`
/// says how many more rows there are (`Some(0)`: more, but not counted,
/// because fetching stopped).
pub fn write_table_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_rows: Option<usize>,
    hidden: Option<usize>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let shown = match max_rows {
        Some(max) => head(batches, max),
        None => batches.to_vec(),
    };
    let shown = if shown.iter().all(|b| b.num_rows() == 0) {
        // Still show the column names.
        vec![RecordBatch::new_empty(schema.clone())]
    } else {
        shown
    };
    writeln!(out, "{}", pretty_format_batches(&shown).map_err(io_err)?)?;
    match hidden {
        Some(0) => writeln!(
            out,
            "(more rows not shown: fetching stopped at the limit; change it with \\maxrows N or --max-rows)"
        )?,
        Some(n) => writeln!(
            out,
            "({n} more rows not shown; change the limit with \\maxrows N or --max-rows)"
        )?,
        None => {}
    }
    Ok(())
}

/// CSV or JSON written batch by batch, as a result streams in.
pub enum RowWriter<'a> {
    Csv(Box<ember::arrow::csv::Writer<&'a mut dyn Write>>, bool),
    Json(ember::arrow::json::ArrayWriter<&'a mut dyn Write>),
}

impl<'a> RowWriter<'a> {
    /// `None` for the table format, which needs the rows before printing.
    pub fn new(format: Format, out: &'a mut dyn Write) -> Option<Self> {
        match format {
            Format::Table => None,
            Format::Csv => Some(Self::Csv(
                Box::new(WriterBuilder::new().with_header(true).build(out)),
                false,
            )),
            Format::Json => Some(Self::Json(ArrayWriter::new(out))),
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> std::io::Result<()> {
        match self {
            Self::Csv(w, wrote) => {
                *wrote = true;
                w.write(batch).map_err(io_err)
            }
            Self::Json(w) => w.write(batch).map_err(io_err),
        }
    }

    /// Ends and flushes the output; `schema` gives a header when no row came.
    pub fn finish(self, schema: &SchemaRef) -> std::io::Result<()> {
        match self {
            Self::Csv(mut w, wrote) => {
                if !wrote {
                    w.write(&RecordBatch::new_empty(schema.clone()))
                        .map_err(io_err)?;
                }
                w.into_inner().flush()
            }
            Self::Json(mut w) => {
                w.finish().map_err(io_err)?;
                let out = w.into_inner();
                writeln!(out)?;
                out.flush()
            }
        }
    }
}
