//! DataFusion's read options (`ParquetReadOptions`, `CsvReadOptions`,
//! `NdJsonReadOptions`) turned into the `CREATE EXTERNAL TABLE` that
//! registers files in the session on the scheduler.
//!
//! Tables live in the scheduler's catalog, so files are registered there by
//! DDL rather than by building a `ListingTable` in the client (which may not
//! even see the files). Every option DDL can express is carried over; the
//! others give a clear error instead of being silently dropped.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::file_options::file_type::{
    DEFAULT_CSV_EXTENSION, DEFAULT_JSON_EXTENSION, DEFAULT_PARQUET_EXTENSION,
};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions as NdJsonReadOptions, ParquetReadOptions,
};

use crate::error::{EmberError, Result};

/// The format, partition columns and `OPTIONS` of a files table.
#[derive(Debug, Default)]
pub(crate) struct FilesDdl {
    format: &'static str,
    partition_by: Vec<String>,
    options: Vec<(&'static str, String)>,
}

fn unsupported(what: &str) -> EmberError {
    EmberError::NotSupported(format!(
        "{what} when registering files with Ember (register the table with \
         CREATE EXTERNAL TABLE ... instead)"
    ))
}

impl FilesDdl {
    /// `STORED AS <format> [PARTITIONED BY (...)] LOCATION '<path>' [OPTIONS (...)]`.
    pub fn clause(&self, path: &str) -> String {
        let mut out = format!("STORED AS {}", self.format);
        if !self.partition_by.is_empty() {
            out.push_str(&format!(
                " PARTITIONED BY ({})",
                self.partition_by.join(", ")
            ));
        }
        out.push_str(&format!(" LOCATION '{}'", path.replace('\'', "''")));
        if !self.options.is_empty() {
            let options: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("'{k}' '{}'", v.replace('\'', "''")))
                .collect();
            out.push_str(&format!(" OPTIONS ({})", options.join(", ")));
        }
        out
    }

    pub fn parquet(o: &ParquetReadOptions<'_>) -> Result<Self> {
        let mut ddl = Self::new("PARQUET", o.file_extension, DEFAULT_PARQUET_EXTENSION)?;
        ddl.partitions(&o.table_partition_cols)?;
        if o.schema.is_some() {
            return Err(unsupported("ParquetReadOptions::schema"));
        }
        if !o.file_sort_order.is_empty() {
            return Err(unsupported("ParquetReadOptions::file_sort_order"));
        }
        if o.file_decryption_properties.is_some() {
            return Err(unsupported(
                "ParquetReadOptions::file_decryption_properties",
            ));
        }
        if let Some(p) = o.parquet_pruning {
            ddl.options.push(("format.pruning", p.to_string()));
        }
        if let Some(s) = o.skip_metadata {
            ddl.options.push(("format.skip_metadata", s.to_string()));
        }
        if let Some(h) = o.metadata_size_hint {
            ddl.options
                .push(("format.metadata_size_hint", h.to_string()));
        }
        Ok(ddl)
    }

    pub fn csv(o: &CsvReadOptions<'_>) -> Result<Self> {
        let mut ddl = Self::new("CSV", o.file_extension, DEFAULT_CSV_EXTENSION)?;
        ddl.partitions(&o.table_partition_cols)?;
        if o.schema.is_some() {
            return Err(unsupported("CsvReadOptions::schema"));
        }
        if !o.file_sort_order.is_empty() {
            return Err(unsupported("CsvReadOptions::file_sort_order"));
        }
        let byte = |b: u8| (b as char).to_string();
        ddl.options
            .push(("format.has_header", o.has_header.to_string()));
        ddl.options.push(("format.delimiter", byte(o.delimiter)));
        ddl.options.push(("format.quote", byte(o.quote)));
        if let Some(t) = o.terminator {
            ddl.options.push(("format.terminator", byte(t)));
        }
        if let Some(e) = o.escape {
            ddl.options.push(("format.escape", byte(e)));
        }
        if let Some(c) = o.comment {
            ddl.options.push(("format.comment", byte(c)));
        }
        if o.newlines_in_values {
            ddl.options
                .push(("format.newlines_in_values", "true".into()));
        }
        if let Some(r) = &o.null_regex {
            ddl.options.push(("format.null_regex", r.clone()));
        }
        ddl.options.push((
            "format.schema_infer_max_rec",
            o.schema_infer_max_records.to_string(),
        ));
        ddl.compression(o.file_compression_type)?;
        Ok(ddl)
    }

    pub fn json(o: &NdJsonReadOptions<'_>) -> Result<Self> {
        let mut ddl = Self::new("JSON", o.file_extension, DEFAULT_JSON_EXTENSION)?;
        ddl.partitions(&o.table_partition_cols)?;
        if o.schema.is_some() {
            return Err(unsupported("JsonReadOptions::schema"));
        }
        if !o.file_sort_order.is_empty() {
            return Err(unsupported("JsonReadOptions::file_sort_order"));
        }
        if o.infinite {
            return Err(unsupported("JsonReadOptions::infinite"));
        }
        if !o.newline_delimited {
            ddl.options
                .push(("format.newline_delimited", "false".to_string()));
        }
        ddl.options.push((
            "format.schema_infer_max_rec",
            o.schema_infer_max_records.to_string(),
        ));
        ddl.compression(o.file_compression_type)?;
        Ok(ddl)
    }

    fn new(format: &'static str, extension: &str, default: &str) -> Result<Self> {
        if extension != default {
            return Err(unsupported(&format!(
                "a file extension other than {default} ({extension:?})"
            )));
        }
        Ok(Self {
            format,
            ..Default::default()
        })
    }

    /// Hive-style partition columns. DDL infers their type (dictionary-
    /// encoded strings): other types cannot be honoured.
    fn partitions(&mut self, cols: &[(String, DataType)]) -> Result<()> {
        for (name, ty) in cols {
            let string = matches!(
                ty,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) || matches!(ty, DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8);
            if !string {
                return Err(unsupported(&format!(
                    "partition column {name} of type {ty} (partition columns are read as strings)"
                )));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(EmberError::Query(format!(
                    "invalid partition column name {name:?}"
                )));
            }
            self.partition_by.push(name.clone());
        }
        Ok(())
    }

    fn compression(&mut self, c: FileCompressionType) -> Result<()> {
        if c.is_compressed() {
            let name = format!("{:?}", c.get_variant()).to_ascii_lowercase();
            self.options.push(("format.compression", name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_ddl_and_the_rest_is_refused() {
        let csv = CsvReadOptions::new().has_header(false).delimiter(b';');
        let clause = FilesDdl::csv(&csv).unwrap().clause("/d/it's/");
        assert!(
            clause.starts_with("STORED AS CSV LOCATION '/d/it''s/' OPTIONS ("),
            "{clause}"
        );
        assert!(clause.contains("'format.has_header' 'false'"), "{clause}");
        assert!(clause.contains("'format.delimiter' ';'"), "{clause}");

        let parquet = ParquetReadOptions::default()
            .table_partition_cols(vec![("year".into(), DataType::Utf8)]);
        assert_eq!(
            FilesDdl::parquet(&parquet).unwrap().clause("s3://b/t/"),
            "STORED AS PARQUET PARTITIONED BY (year) LOCATION 's3://b/t/'"
        );
        let typed = ParquetReadOptions::default()
            .table_partition_cols(vec![("year".into(), DataType::Int32)]);
        let e = FilesDdl::parquet(&typed).unwrap_err().to_string();
        assert!(e.contains("partition column year of type Int32"), "{e}");
    }
}
