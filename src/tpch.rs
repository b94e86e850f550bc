//! TPC-H data for demos, tests and benchmarks, generated with the `tpchgen`
//! crates (no external dbgen) straight into Parquet: one folder per table,
//! several files per large table.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::error::{EmberError, Result};

/// Written next to the tables: how they were generated.
pub const METADATA_FILE: &str = "ember-tpch.json";

fn metadata_number(dir: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(METADATA_FILE)).ok()?;
    let rest = text.split(&format!("\"{key}\":")).nth(1)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// The scale factor recorded by [`generate`] in `dir`.
pub fn scale_factor(dir: &Path) -> Option<f64> {
    metadata_number(dir, "scale_factor")
}

/// The files per large table recorded by [`generate`] in `dir`.
pub fn files_per_table(dir: &Path) -> Option<usize> {
    metadata_number(dir, "files_per_table").map(|n| n as usize)
}

/// The eight TPC-H tables.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

fn write_parquet(path: &Path, reader: impl RecordBatchReader) -> Result<u64> {
    let file =
        File::create(path).map_err(|e| EmberError::Io(format!("{}: {e}", path.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, reader.schema(), Some(props))
        .map_err(|e| EmberError::Io(e.to_string()))?;
    let mut rows = 0;
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| EmberError::Io(e.to_string()))?;
        rows += batch.num_rows() as u64;
        writer
            .write(&batch)
            .map_err(|e| EmberError::Io(e.to_string()))?;
    }
    writer.close().map_err(|e| EmberError::Io(e.to_string()))?;
    Ok(rows)
}

fn table_part(table: &str, sf: f64, part: i32, parts: i32, path: &Path) -> Result<u64> {
    macro_rules! gen_table {
        ($arrow:ident, $gen:ident) => {{ write_parquet(path, $arrow::new($gen::new(sf, part, parts))) }};
    }
    match table {
        "customer" => gen_table!(CustomerArrow, CustomerGenerator),
        "lineitem" => gen_table!(LineItemArrow, LineItemGenerator),
        "nation" => gen_table!(NationArrow, NationGenerator),
        "orders" => gen_table!(OrderArrow, OrderGenerator),
        "part" => gen_table!(PartArrow, PartGenerator),
        "partsupp" => gen_table!(PartSuppArrow, PartSuppGenerator),
        "region" => gen_table!(RegionArrow, RegionGenerator),
        "supplier" => gen_table!(SupplierArrow, SupplierGenerator),
        other => Err(EmberError::Io(format!("unknown TPC-H table {other}"))),
    }
}

/// Generates all eight tables at scale factor `sf` under `dir/<table>/`,
/// `files_per_table` Parquet files each (one for nation and region), using
/// every core. Returns the rows written per table.
pub fn generate(dir: &Path, sf: f64, files_per_table: usize) -> Result<Vec<(String, u64)>> {
    let files_per_table = files_per_table.max(1) as i32;
    let mut work: Vec<(String, i32, i32, PathBuf)> = vec![];
    for table in TABLES {
        let table_dir = dir.join(table);
        std::fs::create_dir_all(&table_dir)
            .map_err(|e| EmberError::Io(format!("{}: {e}", table_dir.display())))?;
        let parts = if matches!(table, "nation" | "region") {
            1
        } else {
            files_per_table
        };
        for part in 1..=parts {
            work.push((
                table.to_string(),
                part,
                parts,
                table_dir.join(format!("part-{part}.parquet")),
            ));
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let queue = Mutex::new(work);
    let results = Mutex::new(Vec::<(String, u64)>::new());
    let errors = Mutex::new(Vec::<EmberError>::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let item = lock(&queue).pop();
                    let Some((table, part, parts, path)) = item else {
                        break;
                    };
                    match table_part(&table, sf, part, parts, &path) {
                        Ok(rows) => lock(&results).push((table, rows)),
                        Err(e) => lock(&errors).push(e),
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
    {
        return Err(e);
    }
    let mut totals: Vec<(String, u64)> = TABLES.iter().map(|t| (t.to_string(), 0)).collect();
    for (table, rows) in results.into_inner().unwrap_or_else(PoisonError::into_inner) {
        if let Some(t) = totals.iter_mut().find(|(n, _)| *n == table) {
            t.1 += rows;
        }
    }
    // Remember how the data was made, for benchmark reports and verification.
    let meta = format!(
        "{{\"scale_factor\": {sf}, \"files_per_table\": {files_per_table}, \"generator\": \"tpchgen 4\"}}\n"
    );
    std::fs::write(dir.join(METADATA_FILE), meta)
        .map_err(|e| EmberError::Io(format!("{}: {e}", dir.display())))?;
    Ok(totals)
}

/// A worker that panicked leaves the lists as they were: still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `CREATE EXTERNAL TABLE` statements for tables generated under `dir`.
pub fn create_table_statements(dir: &Path) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            format!(
                "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{}/'",
                dir.join(t).display()
            )
        })
        .collect()
}
