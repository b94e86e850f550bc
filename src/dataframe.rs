//! DataFusion's own `DataFrame`, executed on the cluster.
//!
//! An [`EmberContext`](crate::EmberContext) keeps a client-side DataFusion
//! `SessionContext` used only to build and optimize logical plans. Its tables
//! are [`ClusterTable`]s: a name and a schema of a table that lives in the
//! session's catalog on the scheduler; they cannot be scanned here. Its query
//! planner turns *every* plan into one [`ClusterExec`] node, which ships the
//! whole logical plan to the scheduler and streams the result back from the
//! executors. So `collect`, `show`, `count`, `execute_stream` and friends run
//! on the cluster, and nothing is computed in the client.
//!
//! ```text
//!   DataFrame ──optimize──▶ LogicalPlan ──ClusterPlanner──▶ ClusterExec
//!                                                              │ execute
//!   ExecuteRequest{logical_plan bytes} ──▶ scheduler ──▶ job ──▶ ResultStream
//! ```
//!
//! [`ClusterTable`] and its wire format live in the planner crate
//! (`ember_planner::table`), shared with the scheduler that resolves them.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
pub use ember_planner::{ClusterTable, ClusterTableCodec};
use ember_proto::execute_request;
use futures::{StreamExt, TryStreamExt};

use crate::context::Submitted;
use crate::fetch::{Fetcher, ResultStream};

/// The client's query planner: the whole plan becomes one [`ClusterExec`].
#[derive(Debug)]
pub struct ClusterPlanner {
    pub(crate) fetcher: Fetcher,
    pub(crate) session_id: String,
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        _session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(
            logical_plan,
            &ClusterTableCodec::default(),
        )?;
        let schema: SchemaRef = Arc::new(logical_plan.schema().as_arrow().clone());
        Ok(Arc::new(ClusterExec::new(
            self.fetcher.clone(),
            self.session_id.clone(),
            bytes.to_vec(),
            schema,
        )))
    }
}

/// `DataFrame::cache()` would otherwise collect the whole result into the
/// client's memory; until Ember caches on the cluster it is refused.
#[derive(Debug)]
pub struct NoClientCache;

impl datafusion::execution::session_state::CacheFactory for NoClientCache {
    fn create(
        &self,
        _plan: LogicalPlan,
        _state: &datafusion::execution::SessionState,
    ) -> Result<LogicalPlan> {
        Err(DataFusionError::NotImplemented(
            "DataFrame::cache() (it would pull the whole result into the client; Ember has \
             no cluster-side cache yet: write the data with write_parquet and read it back)"
                .into(),
        ))
    }
}

/// A whole query, run by the cluster: executing its one partition submits
/// the logical plan to the scheduler and streams the result back.
pub struct ClusterExec {
    fetcher: Fetcher,
    session_id: String,
    plan: Vec<u8>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ClusterExec {
    fn new(fetcher: Fetcher, session_id: String, plan: Vec<u8>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            fetcher,
            session_id,
            plan,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for ClusterExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterExec")
            .field("session", &self.session_id)
            .finish()
    }
}

impl DisplayAs for ClusterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusterExec: the whole plan runs on the Ember cluster")
    }
}

impl ExecutionPlan for ClusterExec {
    fn name(&self) -> &str {
        "ClusterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal("ClusterExec is a leaf".into()))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClusterExec has one partition, asked for {partition}"
            )));
        }
        let fetcher = self.fetcher.clone();
        let session_id = self.session_id.clone();
        let plan = self.plan.clone();
        let external = |e: crate::EmberError| DataFusionError::External(Box::new(e));
        let stream = futures::stream::once(async move {
            let submitted = fetcher
                .submit(&session_id, execute_request::Query::LogicalPlan(plan))
                .await
                .map_err(external)?;
            let stream = match submitted {
                Submitted::Done(r) => ResultStream::ready(r.schema, r.batches),
                Submitted::Job(job) => ResultStream::job(fetcher, job),
            };
            Ok::<_, DataFusionError>(stream.map_err(external))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream.boxed(),
        )))
    }
}
