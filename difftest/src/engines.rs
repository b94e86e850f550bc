//! The two engines: a session on an Ember cluster and a single-process
//! DataFusion context configured as DataFusion's own sqllogictest runner
//! configures it.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember::EmberContext;

/// What one engine answered.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A result (empty for statements without one).
    Rows(Table),
    /// The error's text.
    Failed(String),
}

/// A result: the announced schema and the batches.
#[derive(Debug, Clone)]
pub struct Table {
    /// The schema the engine announced.
    pub schema: SchemaRef,
    /// The batches it delivered.
    pub batches: Vec<RecordBatch>,
}

/// One Ember session and one DataFusion context, fed the same statements.
pub struct Engines {
    /// The Ember session.
    pub ember: EmberContext,
    /// The single-process oracle.
    pub datafusion: SessionContext,
    /// How long one statement may take on either engine.
    pub timeout: Duration,
}

impl Engines {
    /// A new session on the cluster at `url` and a fresh DataFusion context
    /// (4 target partitions, as DataFusion's sqllogictest runner uses).
    pub async fn open(url: &str, timeout: Duration) -> ember::Result<Self> {
        Ok(Self {
            ember: EmberContext::remote(url).await?,
            datafusion: SessionContext::new_with_config(
                SessionConfig::new().with_target_partitions(4),
            ),
            timeout,
        })
    }

    /// Runs `sql` on DataFusion, then on Ember.
    pub async fn run(&self, sql: &str) -> (Outcome, Outcome) {
        let df = self.run_datafusion(sql).await;
        let ember = self.run_ember(sql).await;
        (df, ember)
    }

    /// Does `sql` order its result (a sort at the top of DataFusion's plan)?
    pub async fn orders(&self, sql: &str) -> bool {
        let Ok(mut plan) = self.datafusion.state().create_logical_plan(sql).await else {
            return false;
        };
        loop {
            plan = match plan {
                LogicalPlan::Sort(_) => return true,
                LogicalPlan::Projection(p) => Arc::unwrap_or_clone(p.input),
                LogicalPlan::Limit(l) => Arc::unwrap_or_clone(l.input),
                LogicalPlan::SubqueryAlias(a) => Arc::unwrap_or_clone(a.input),
                _ => return false,
            }
        }
    }

    async fn run_datafusion(&self, sql: &str) -> Outcome {
        let run = async {
            // The physical plan's schema: what DataFusion's batches have.
            let plan = self
                .datafusion
                .sql(sql)
                .await?
                .create_physical_plan()
                .await?;
            let schema = plan.schema();
            let batches = collect(plan, self.datafusion.task_ctx()).await?;
            Ok::<_, datafusion::error::DataFusionError>(Table { schema, batches })
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(table)) => Outcome::Rows(table),
            Ok(Err(e)) => Outcome::Failed(e.strip_backtrace()),
            Err(_) => Outcome::Failed(format!("timed out after {:?}", self.timeout)),
        }
    }

    async fn run_ember(&self, sql: &str) -> Outcome {
        match tokio::time::timeout(self.timeout, self.ember.run_sql(sql)).await {
            Ok(Ok(result)) => Outcome::Rows(Table {
                schema: result.schema,
                batches: result.batches,
            }),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed(format!("timed out after {:?}", self.timeout)),
        }
    }
}

impl Engines {
    /// Runs `sql` on both engines and compares the answers (row order only
    /// where the query orders its rows).
    pub async fn check(&self, sql: &str) -> crate::compare::Verdict {
        let ordered = self.orders(sql).await;
        let (df, ember) = self.run(sql).await;
        crate::compare::compare(&df, &ember, true, ordered)
    }
}
