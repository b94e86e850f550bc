//! Tables a client names in a plan it sends to the cluster.
//!
//! A client (the DataFrame API) plans over [`ClusterTable`]s: the name and
//! schema of a table that lives in the session's catalog on the scheduler.
//! [`ClusterTableCodec`] is the datafusion-proto extension that carries them:
//! on the wire a `ClusterTable` is its name, UTF-8. The client decodes a name
//! back into a `ClusterTable`; the scheduler resolves it in the session's
//! catalog ([`ClusterTableCodec::resolving`]). Scanning a `ClusterTable` is an
//! error: only the cluster reads the real table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::{DefaultLogicalExtensionCodec, LogicalExtensionCodec};

/// A table of the cluster session, as a client sees it.
#[derive(Debug)]
pub struct ClusterTable {
    name: String,
    schema: SchemaRef,
}

impl ClusterTable {
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            name: name.into(),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Execution(format!(
            "table {} lives on the Ember cluster and is only scanned there",
            self.name
        )))
    }
}

/// Encodes [`ClusterTable`]s by name (any other table is refused: register
/// it in the session instead), and decodes names into `ClusterTable`s or,
/// on the scheduler, into the session's own tables.
#[derive(Debug, Default)]
pub struct ClusterTableCodec {
    /// The session's tables by name; `None` on the client.
    tables: Option<HashMap<String, Arc<dyn TableProvider>>>,
    /// Tables the scheduler names when it sends a plan to a client.
    names: Vec<(String, Arc<dyn TableProvider>)>,
}

impl ClusterTableCodec {
    /// Decodes names into these tables (the scheduler's session catalog).
    pub fn resolving(tables: HashMap<String, Arc<dyn TableProvider>>) -> Self {
        Self {
            tables: Some(tables),
            names: vec![],
        }
    }

    /// Encodes these session tables by their name (the scheduler sending a
    /// plan it made from SQL to a client).
    pub fn naming(names: Vec<(String, Arc<dyn TableProvider>)>) -> Self {
        Self {
            tables: None,
            names,
        }
    }
}

impl ClusterTableCodec {
    /// A plan names a function this side does not know.
    fn unknown_function(&self, name: &str) -> DataFusionError {
        let fix = if self.tables.is_some() {
            "start the scheduler with it (ember_scheduler::SchedulerBuilder::with_udf, or \
             StandaloneOptions::with_udf for an embedded cluster)"
        } else {
            "register it in the EmberContext (register_udf)"
        };
        DataFusionError::Plan(format!("unknown function '{name}': {fix}"))
    }
}

impl LogicalExtensionCodec for ClusterTableCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        Err(DataFusionError::NotImplemented(
            "Ember plans carry no extension nodes".into(),
        ))
    }

    fn try_encode(&self, node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        Err(DataFusionError::NotImplemented(format!(
            "the logical plan node {} cannot be sent to an Ember cluster",
            node.node.name()
        )))
    }

    // COPY TO / write_* name a file format with its options: datafusion-proto's
    // default codec knows Parquet, CSV, JSON, Arrow and Avro.
    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        DefaultLogicalExtensionCodec {}.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        DefaultLogicalExtensionCodec {}.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(
        &self,
        name: &str,
        _buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::ScalarUDF>> {
        if name == crate::scalar_subquery::SINGLE_ROW {
            return Ok(crate::scalar_subquery::single_row_udf());
        }
        Err(self.unknown_function(name))
    }

    fn try_decode_udaf(
        &self,
        name: &str,
        _buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::AggregateUDF>> {
        Err(self.unknown_function(name))
    }

    fn try_decode_udwf(
        &self,
        name: &str,
        _buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::WindowUDF>> {
        Err(self.unknown_function(name))
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let name = String::from_utf8(buf.to_vec())
            .map_err(|e| DataFusionError::Internal(format!("bad table name: {e}")))?;
        match &self.tables {
            None => Ok(Arc::new(ClusterTable::new(name, schema))),
            Some(tables) => tables.get(&name).cloned().ok_or_else(|| {
                DataFusionError::Plan(format!("table '{name}' not found in this session"))
            }),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let named = self
            .names
            .iter()
            .find(|(_, t)| std::ptr::addr_eq(Arc::as_ptr(t), Arc::as_ptr(&node)))
            .map(|(name, _)| name.as_str());
        match node
            .downcast_ref::<ClusterTable>()
            .map(|t| t.name.as_str())
            .or(named)
        {
            Some(name) => {
                buf.extend_from_slice(name.as_bytes());
                Ok(())
            }
            None => Err(DataFusionError::NotImplemented(format!(
                "table {table_ref} is not a table of the Ember session; register it \
                 through EmberContext (register_parquet, ...) so the cluster can read it"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn a_plan_over_a_cluster_table_travels_by_name_and_resolves_in_the_session() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let client = SessionContext::new();
        client
            .register_table("t", Arc::new(ClusterTable::new("t", Arc::clone(&schema))))
            .unwrap();
        let plan = client
            .sql("SELECT a FROM t WHERE a > 1")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(
            &plan,
            &ClusterTableCodec::default(),
        )
        .unwrap();
        let real: Arc<dyn TableProvider> = Arc::new(
            datafusion::datasource::MemTable::try_new(Arc::clone(&schema), vec![vec![]]).unwrap(),
        );
        let scheduler = ClusterTableCodec::resolving(HashMap::from([("t".to_string(), real)]));
        let decoded = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
            &bytes,
            &SessionContext::new().task_ctx(),
            &scheduler,
        )
        .unwrap();
        assert!(format!("{decoded}").contains("TableScan: t"), "{decoded}");
        let unknown = ClusterTableCodec::resolving(HashMap::new());
        let e = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
            &bytes,
            &SessionContext::new().task_ctx(),
            &unknown,
        )
        .unwrap_err();
        assert!(e.to_string().contains("table 't' not found"), "{e}");
    }
}
