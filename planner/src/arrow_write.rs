//! Arrow IPC file writes: `COPY ... STORED AS ARROW` and `INSERT INTO` an
//! Arrow table.
//!
//! DataFusion's Arrow sink is private: where and how it writes (its
//! `FileSinkConfig`) cannot be read back from a plan, so `write.rs` could
//! not give each task attempt a sink of its own, and datafusion-proto cannot
//! encode it. Ember sessions register [`ArrowWriteFactory`] for `arrow`
//! instead of DataFusion's: its format reads exactly as DataFusion's
//! `ArrowFormat` (it delegates) and plans writes with an [`ArrowSink`],
//! which keeps its configuration and hands the writing itself to
//! DataFusion's sink (LZ4-compressed IPC files, as DataFusion writes them).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{GetExt, Statistics};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSinkConfig, FileSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::physical_expr::LexRequirement;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::FutureExt;
use object_store::{ObjectMeta, ObjectStore};

/// The `arrow` file format of Ember sessions (see the module docs).
#[derive(Debug, Default)]
pub struct ArrowWriteFactory;

impl GetExt for ArrowWriteFactory {
    fn get_ext(&self) -> String {
        ArrowFormat.get_ext()
    }
}

impl FileFormatFactory for ArrowWriteFactory {
    fn create(
        &self,
        _state: &dyn Session,
        _format_options: &HashMap<String, String>,
    ) -> Result<Arc<dyn FileFormat>> {
        Ok(Arc::new(ArrowWriteFormat))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(ArrowWriteFormat)
    }
}

/// DataFusion's `ArrowFormat`, writing through an [`ArrowSink`].
#[derive(Debug, Default)]
pub struct ArrowWriteFormat;

#[async_trait]
impl FileFormat for ArrowWriteFormat {
    fn get_ext(&self) -> String {
        ArrowFormat.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        ArrowFormat.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        ArrowFormat.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        ArrowFormat.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        ArrowFormat
            .infer_stats(state, store, table_schema, object)
            .await
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        ArrowFormat.create_physical_plan(state, conf).await
    }

    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        _state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let sink = ArrowSink::try_new(conf)?;
        Ok(Arc::new(DataSinkExec::new(
            input,
            Arc::new(sink),
            order_requirements,
        )))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        ArrowFormat.file_source(table_schema)
    }
}

/// Writes Arrow IPC files as DataFusion does, keeping its configuration.
pub struct ArrowSink {
    config: FileSinkConfig,
    /// DataFusion's plan of its sink (a `DataSinkExec`), which owns it.
    inner: Arc<dyn ExecutionPlan>,
}

impl ArrowSink {
    /// A sink writing where `config` says; refuses what DataFusion's Arrow
    /// writer refuses (overwrites).
    pub fn try_new(config: FileSinkConfig) -> Result<Self> {
        // DataFusion's planner for the sink awaits nothing and reads nothing
        // of the session it is given.
        static STATE: LazyLock<SessionState> = LazyLock::new(|| SessionStateBuilder::new().build());
        let input = Arc::new(EmptyExec::new(Arc::clone(config.output_schema())));
        let plan = ArrowFormat
            .create_writer_physical_plan(input, &*STATE, config.clone(), None)
            .now_or_never()
            .ok_or_else(|| {
                DataFusionError::Internal("DataFusion's Arrow writer did not plan at once".into())
            })??;
        if plan.downcast_ref::<DataSinkExec>().is_none() {
            return Err(DataFusionError::Internal(
                "DataFusion's Arrow writer is not a sink".into(),
            ));
        }
        Ok(Self {
            config,
            inner: plan,
        })
    }

    fn inner(&self) -> &dyn DataSink {
        self.inner
            .downcast_ref::<DataSinkExec>()
            .expect("checked in try_new")
            .sink()
    }

    pub fn config(&self) -> &FileSinkConfig {
        &self.config
    }
}

impl fmt::Debug for ArrowSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrowSink")
            .field("url", &self.config.original_url)
            .finish()
    }
}

impl DisplayAs for ArrowSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner().fmt_as(t, f)
    }
}

#[async_trait]
impl DataSink for ArrowSink {
    fn metrics(&self) -> Option<MetricsSet> {
        self.inner().metrics()
    }

    fn schema(&self) -> &SchemaRef {
        self.config.output_schema()
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        self.inner().write_all(data, context).await
    }
}
