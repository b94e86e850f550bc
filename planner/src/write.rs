//! Distributed file writes: `COPY (query) TO`, `INSERT INTO` an external
//! table and `DataFrame::write_*` run on the executors, every task writing its
//! own partition, and the job publishes all the files at once.
//!
//! DataFusion plans a write as one `DataSinkExec` over a single merged
//! partition: one writer. [`distribute_write`] turns it into a write stage
//! with one [`FileWriteExec`] task per input partition and a final stage that
//! adds up the rows written:
//!
//! ```text
//!   DataSinkExec(file sink)              final: Aggregate(sum(count))
//!     CoalescePartitionsExec       ──▶            └ Reader(write stage)
//!       input (n partitions)             write: Writer(pass-through)
//!                                                 └ FileWriteExec └ input
//! ```
//!
//! **Exactly once.** A task attempt writes under
//! `<dir>/.ember-staging/<job>/p<partition>-a<attempt>/` ([`attempt_url`]),
//! never into `<dir>` itself. DataFusion lists a table's files one level deep,
//! so readers never see staged files. Once the job's last stage is done the
//! scheduler moves into `<dir>` the files of the one attempt it accepted for
//! each partition, then deletes the staging directory; a failed or cancelled
//! job only deletes it. A retried task, a late zombie attempt or a partition
//! recomputed after its executor died leaves files only in staging.
//!
//! A single-file output (`COPY ... TO 'out.parquet'`) keeps one writer task
//! and is staged next to the file (`<parent>/.ember-staging/...`).

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::common::file_options::json_writer::JsonWriterOptions;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, execute_input_stream};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};

use crate::arrow_write::ArrowSink;

/// Name of the hidden directory task attempts write into.
pub const STAGING_DIR: &str = ".ember-staging";

/// Which job and attempt a task belongs to: the executor puts it into each
/// task's `SessionConfig` (a [`FileWriteExec`] needs it to name its files).
#[derive(Debug, Clone)]
pub struct TaskIdentity {
    pub job_id: String,
    pub attempt: u64,
}

/// Where a write job's files go, as the scheduler needs it to commit them.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    /// The stage whose tasks write files.
    pub stage: u32,
    /// The table directory, or the file of a single-file output.
    pub destination: ListingTableUrl,
    pub single_file: bool,
    /// URL of the staging directory (ends with `/`).
    pub staging_root: String,
}

impl WriteTarget {
    /// The staging directory of one job.
    pub fn job_staging_url(&self, job_id: &str) -> String {
        format!("{}{job_id}/", self.staging_root)
    }
}

/// The directory attempt `attempt` of write task `partition` writes into.
pub fn attempt_url(staging_root: &str, job_id: &str, partition: usize, attempt: u64) -> String {
    format!("{staging_root}{job_id}/p{partition}-a{attempt}/")
}

/// The file formats Ember can write, with their writer options.
#[derive(Debug, Clone)]
enum Format {
    Parquet(Box<TableParquetOptions>),
    Csv(CsvWriterOptions),
    Json(JsonWriterOptions),
    /// Arrow IPC files (see `arrow_write`).
    Arrow,
}

impl Format {
    fn of(sink: &dyn DataSink) -> Option<(FileSinkConfig, Self)> {
        if let Some(s) = sink.downcast_ref::<ParquetSink>() {
            return Some((
                s.config().clone(),
                Self::Parquet(Box::new(s.parquet_options().clone())),
            ));
        }
        if let Some(s) = sink.downcast_ref::<CsvSink>() {
            return Some((s.config().clone(), Self::Csv(s.writer_options().clone())));
        }
        if let Some(s) = sink.downcast_ref::<JsonSink>() {
            return Some((s.config().clone(), Self::Json(s.writer_options().clone())));
        }
        if let Some(s) = sink.downcast_ref::<ArrowSink>() {
            return Some((s.config().clone(), Self::Arrow));
        }
        None
    }

    fn sink(&self, config: FileSinkConfig) -> Result<Arc<dyn DataSink>> {
        Ok(match self {
            Self::Parquet(o) => Arc::new(ParquetSink::new(config, o.as_ref().clone())),
            Self::Csv(o) => Arc::new(CsvSink::new(config, o.clone())),
            Self::Json(o) => Arc::new(JsonSink::new(config, o.clone())),
            Self::Arrow => Arc::new(ArrowSink::try_new(config)?),
        })
    }

    /// A sink datafusion-proto can encode that carries where and how this
    /// format writes: the sink itself, or for Arrow (which datafusion-proto
    /// cannot encode) a JSON sink of the same configuration.
    fn encodable_sink(&self, config: FileSinkConfig) -> Result<Arc<dyn DataSink>> {
        match self {
            Self::Arrow => Self::Json(JsonWriterOptions::new(CompressionTypeVariant::UNCOMPRESSED))
                .sink(config),
            other => other.sink(config),
        }
    }
}

/// Rewrites a plan whose root writes files into a distributed write (see the
/// module docs). Plans that write nothing come back unchanged with `None`.
pub fn distribute_write(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(sink_exec) = plan.downcast_ref::<DataSinkExec>() else {
        return Ok(plan);
    };
    let Some((config, _)) = Format::of(sink_exec.sink()) else {
        // DataFusion does not export `MemSink` (the sink of in-memory tables).
        let debug = format!("{:?}", sink_exec.sink());
        let what = if debug.starts_with("MemSink") {
            "INSERT INTO an in-memory table".to_string()
        } else if debug.starts_with("StreamWrite") {
            "INSERT INTO an UNBOUNDED table (a stream)".to_string()
        } else {
            format!("writing to {:?}", sink_exec.sink())
        };
        return Err(DataFusionError::NotImplemented(format!(
            "{what} (Ember writes Parquet, CSV, JSON and Arrow files: COPY TO, INSERT INTO an \
             external table)"
        )));
    };
    if config.insert_op != InsertOp::Append {
        return Err(DataFusionError::NotImplemented(format!(
            "{} into files (only appending INSERT INTO and COPY TO)",
            config.insert_op
        )));
    }
    let destination = config
        .table_paths
        .first()
        .cloned()
        .ok_or_else(|| DataFusionError::Plan("a file write with no destination".into()))?;
    let single_file = config.file_output_mode.single_file_output(&destination);
    let input = Arc::clone(sink_exec.input());
    // Each partition writes its own files unless the output is one file or
    // the merge does more than concatenate (a limit).
    let input = match input.downcast_ref::<CoalescePartitionsExec>() {
        Some(merge) if !single_file && merge.fetch().is_none() => Arc::clone(merge.input()),
        _ => input,
    };
    let write: Arc<dyn ExecutionPlan> = FileWriteExec::try_new(
        input,
        sink_exec.sink(),
        staging_root(&destination, single_file),
    )?;
    let merged: Arc<dyn ExecutionPlan> = if write.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(write))
    } else {
        write
    };
    let schema = merged.schema();
    let total = AggregateExprBuilder::new(
        datafusion::functions_aggregate::sum::sum_udaf(),
        vec![col("count", &schema)?],
    )
    .schema(Arc::clone(&schema))
    .alias("count")
    .build()?;
    let plan = AggregateExec::try_new(
        AggregateMode::Single,
        PhysicalGroupBy::new_single(vec![]),
        vec![Arc::new(total)],
        vec![None],
        merged,
        schema,
    )?;
    Ok(Arc::new(plan))
}

/// `<dir>/.ember-staging/` for a directory output, `<parent>/.ember-staging/`
/// for a single file.
fn staging_root(destination: &ListingTableUrl, single_file: bool) -> String {
    let url = destination.as_str();
    let dir = if single_file {
        &url[..url.rfind('/').map_or(url.len(), |i| i + 1)]
    } else {
        url.trim_end_matches('/')
    };
    let sep = if dir.ends_with('/') { "" } else { "/" };
    format!("{dir}{sep}{STAGING_DIR}/")
}

/// Writes each partition of its input to files of its own under the task
/// attempt's staging directory; yields one row: the number of rows written.
#[derive(Debug)]
pub struct FileWriteExec {
    input: Arc<dyn ExecutionPlan>,
    config: FileSinkConfig,
    format: Format,
    single_file: bool,
    staging_root: String,
    properties: Arc<PlanProperties>,
}

impl FileWriteExec {
    /// A writer for `sink`'s files (Parquet, CSV, JSON or Arrow), staged under
    /// `staging_root`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        sink: &dyn DataSink,
        staging_root: String,
    ) -> Result<Arc<Self>> {
        let (config, format) = Format::of(sink).ok_or_else(|| {
            DataFusionError::NotImplemented(format!("writing files with {sink:?}"))
        })?;
        let single_file = config
            .file_output_mode
            .single_file_output(&config.table_paths[0]);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(Self {
            input,
            config,
            format,
            single_file,
            staging_root,
            properties: Arc::new(properties),
        }))
    }

    pub fn staging_root(&self) -> &str {
        &self.staging_root
    }

    /// What the scheduler needs to commit this writer's files, `stage` being
    /// the stage it runs in.
    pub fn target(&self, stage: u32) -> WriteTarget {
        WriteTarget {
            stage,
            destination: self.config.table_paths[0].clone(),
            single_file: self.single_file,
            staging_root: self.staging_root.clone(),
        }
    }

    /// DataFusion's sink writing where the plan said (for serialization:
    /// datafusion-proto knows how to encode it), and whether the files are
    /// Arrow files after all (the template then being a JSON sink, see
    /// [`Format::encodable_sink`]).
    pub fn template(&self) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        let template = Arc::new(DataSinkExec::new(
            Arc::new(EmptyExec::new(self.input.schema())),
            self.format.encodable_sink(self.config.clone())?,
            None,
        ));
        Ok((template, matches!(self.format, Format::Arrow)))
    }

    /// Rebuilds the writer from a decoded [`template`](Self::template).
    pub fn from_template(
        input: Arc<dyn ExecutionPlan>,
        template: &Arc<dyn ExecutionPlan>,
        arrow: bool,
        staging_root: String,
    ) -> Result<Arc<Self>> {
        let sink = template
            .downcast_ref::<DataSinkExec>()
            .ok_or_else(|| DataFusionError::Plan("file writer template is not a sink".into()))?;
        if !arrow {
            return Self::try_new(input, sink.sink(), staging_root);
        }
        let (config, _) = Format::of(sink.sink())
            .ok_or_else(|| DataFusionError::Plan("file writer template of no format".into()))?;
        Self::try_new(input, &ArrowSink::try_new(config)?, staging_root)
    }

    /// The sink for one task attempt: same format and options, writing into
    /// the attempt's staging directory.
    fn attempt_sink(&self, partition: usize, task: &TaskIdentity) -> Result<Arc<dyn DataSink>> {
        let dir = attempt_url(&self.staging_root, &task.job_id, partition, task.attempt);
        let (url, mode) = if self.single_file {
            let name = self.config.table_paths[0]
                .prefix()
                .filename()
                .unwrap_or("part")
                .to_string();
            (format!("{dir}{name}"), FileOutputMode::SingleFile)
        } else {
            (dir, FileOutputMode::Directory)
        };
        let config = FileSinkConfig {
            table_paths: vec![ListingTableUrl::parse(url)?],
            file_output_mode: mode,
            ..self.config.clone()
        };
        self.format.sink(config)
    }
}

/// Schema of a write's result: the rows written.
fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl DisplayAs for FileWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let format = match self.format {
            Format::Parquet(_) => "parquet",
            Format::Csv(_) => "csv",
            Format::Json(_) => "json",
            Format::Arrow => "arrow",
        };
        write!(
            f,
            "FileWriteExec: {format} to {}{}",
            self.config.table_paths[0],
            if self.single_file { " (one file)" } else { "" }
        )
    }
}

impl ExecutionPlan for FileWriteExec {
    fn name(&self) -> &str {
        "FileWriteExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "FileWriteExec takes exactly one child".into(),
            ));
        }
        let sink = self.format.sink(self.config.clone())?;
        Ok(Self::try_new(
            children.swap_remove(0),
            sink.as_ref(),
            self.staging_root.clone(),
        )?)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let task = context
            .session_config()
            .get_extension::<TaskIdentity>()
            .ok_or_else(|| {
                DataFusionError::Execution(
                    "file writes can only run inside an Ember executor task".into(),
                )
            })?;
        let sink = self.attempt_sink(partition, &task)?;
        // As DataFusion's `DataSinkExec`: a NULL bound for a NOT NULL column
        // fails the write (the file writers would store it as a zero).
        let input = execute_input_stream(
            Arc::clone(&self.input),
            Arc::clone(sink.schema()),
            partition,
            Arc::clone(&context),
        )?;
        let write = async move {
            let rows = sink.write_all(input, &context).await?;
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(write),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_sits_in_the_directory_or_next_to_the_file() {
        let dir = ListingTableUrl::parse("file:///data/out/").unwrap();
        assert_eq!(
            staging_root(&dir, false),
            "file:///data/out/.ember-staging/"
        );
        let file = ListingTableUrl::parse("file:///data/out.parquet").unwrap();
        assert_eq!(staging_root(&file, true), "file:///data/.ember-staging/");
        let bucket = ListingTableUrl::parse("s3://bucket/t").unwrap();
        assert_eq!(
            staging_root(&bucket, false),
            "s3://bucket/t/.ember-staging/"
        );
        assert_eq!(
            attempt_url("s3://b/t/.ember-staging/", "job-1", 3, 17),
            "s3://b/t/.ember-staging/job-1/p3-a17/"
        );
    }
}
