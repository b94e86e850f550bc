//! `ember.jobs`, `ember.stages`, `ember.tasks`, `ember.executors` and
//! `ember.sessions`: the cluster's own
//! state as tables any session can query (`SELECT * FROM ember.jobs`).
//! Rows are the [`crate::overview`] views at the moment of the scan; such
//! queries are answered by the scheduler itself, like `information_schema`.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session as CatalogSession, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::core::Core;

/// The schema name of the system tables.
pub const SCHEMA: &str = "ember";

const TABLES: [&str; 5] = ["jobs", "stages", "tasks", "executors", "sessions"];

/// Lists the open sessions (they live in the service, not the core).
pub type SessionLister = Arc<dyn Fn() -> Vec<crate::overview::SessionRow> + Send + Sync>;

/// The `ember` schema.
pub struct SystemSchema {
    core: Arc<Core>,
    sessions: SessionLister,
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemSchema")
    }
}

impl SystemSchema {
    pub fn new(core: Arc<Core>, sessions: SessionLister) -> Self {
        Self { core, sessions }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(TABLES.contains(&name).then(|| {
            Arc::new(SystemTable {
                name: TABLES
                    .iter()
                    .find(|t| **t == name)
                    .copied()
                    .unwrap_or("jobs"),
                core: Arc::clone(&self.core),
                sessions: Arc::clone(&self.sessions),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

struct SystemTable {
    name: &'static str,
    core: Arc<Core>,
    sessions: SessionLister,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SystemTable({})", self.name)
    }
}

fn field(name: &str, t: DataType) -> Field {
    Field::new(name, t, false)
}

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn u64s(v: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(v))
}

fn u32s(v: Vec<u32>) -> ArrayRef {
    Arc::new(UInt32Array::from(v))
}

/// The columns of system table `name` (known without taking a snapshot).
fn schema_of(name: &str) -> SchemaRef {
    use DataType::{Boolean, UInt32, UInt64, Utf8};
    let fields = match name {
        "jobs" => vec![
            field("job_id", Utf8),
            field("session_id", Utf8),
            field("description", Utf8),
            field("state", Utf8),
            field("error", Utf8),
            field("submitted_at_ms", UInt64),
            field("elapsed_ms", UInt64),
            field("planning_us", UInt64),
            field("subqueries_us", UInt64),
            field("result_rows", UInt64),
            field("stages", UInt64),
            field("tasks", UInt64),
            field("events", UInt64),
        ],
        "stages" => vec![
            field("job_id", Utf8),
            field("stage_id", UInt32),
            field("inputs", Utf8),
            field("tasks_total", UInt64),
            field("tasks_done", UInt64),
            field("tasks_running", UInt64),
            field("tasks_failed", UInt64),
            field("input_rows", UInt64),
            field("output_rows", UInt64),
            field("output_bytes", UInt64),
            field("spilled_bytes", UInt64),
            field("local_fetches", UInt64),
            field("remote_fetches", UInt64),
            field("local_fetch_bytes", UInt64),
            field("remote_fetch_bytes", UInt64),
            field("attempt", UInt64),
            field("task_time_ms", UInt64),
            field("task_time_max_ms", UInt64),
            field("task_setup_us", UInt64),
            field("task_queued_us", UInt64),
            field("executors", Utf8),
        ],
        "tasks" => vec![
            field("job_id", Utf8),
            field("stage_id", UInt32),
            field("partition", UInt32),
            field("state", Utf8),
            field("attempt", UInt64),
            field("executor_id", Utf8),
            field("output_rows", UInt64),
            field("elapsed_ms", UInt64),
        ],
        "sessions" => vec![field("session_id", Utf8), field("idle_ms", UInt64)],
        _ => vec![
            field("executor_id", Utf8),
            field("address", Utf8),
            field("slots", UInt32),
            field("slots_busy", UInt32),
            field("memory_bytes", UInt64),
            field("http_address", Utf8),
            field("memory_pool_used_bytes", UInt64),
            field("memory_pool_peak_bytes", UInt64),
            field("resident_peak_bytes", UInt64),
            field("shuffle_memory_bytes", UInt64),
            field("shuffle_spilled_bytes", UInt64),
            field("tasks_succeeded", UInt64),
            field("tasks_failed", UInt64),
            field("tasks_queued", UInt64),
            field("last_heartbeat_ms_ago", UInt64),
            field("connected", Boolean),
            field("lost_reason", Utf8),
        ],
    };
    Arc::new(Schema::new(fields))
}

impl SystemTable {
    fn batch(&self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = match self.name {
            "jobs" => {
                let jobs = self.core.jobs_overview();
                let col = |f: fn(&crate::overview::JobView) -> String| {
                    strings(jobs.iter().map(f).collect())
                };
                let num =
                    |f: fn(&crate::overview::JobView) -> u64| u64s(jobs.iter().map(f).collect());
                vec![
                    col(|j| j.id.clone()),
                    col(|j| j.session.clone()),
                    col(|j| j.description.clone()),
                    col(|j| j.state.clone()),
                    col(|j| j.error.clone()),
                    num(|j| j.submitted_at_ms),
                    num(|j| j.elapsed_ms),
                    num(|j| j.planning_us),
                    num(|j| j.subqueries_us),
                    num(|j| j.result_rows),
                    num(|j| j.stages.len() as u64),
                    num(|j| j.stages.iter().map(|s| s.tasks_total as u64).sum()),
                    num(|j| j.events.len() as u64),
                ]
            }
            "stages" => {
                let stages: Vec<(String, crate::overview::StageView)> = self
                    .core
                    .jobs_overview()
                    .into_iter()
                    .flat_map(|j| {
                        let id = j.id.clone();
                        j.stages.into_iter().map(move |s| (id.clone(), s))
                    })
                    .collect();
                let num = |f: fn(&crate::overview::StageView) -> u64| {
                    u64s(stages.iter().map(|(_, s)| f(s)).collect())
                };
                vec![
                    strings(stages.iter().map(|(j, _)| j.clone()).collect()),
                    u32s(stages.iter().map(|(_, s)| s.id).collect()),
                    strings(
                        stages
                            .iter()
                            .map(|(_, s)| {
                                s.inputs
                                    .iter()
                                    .map(|i| i.to_string())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .collect(),
                    ),
                    num(|s| s.tasks_total as u64),
                    num(|s| s.tasks_done as u64),
                    num(|s| s.tasks_running as u64),
                    num(|s| s.tasks_failed as u64),
                    num(|s| s.input_rows),
                    num(|s| s.output_rows),
                    num(|s| s.output_bytes),
                    num(|s| s.spilled_bytes),
                    num(|s| s.local_fetches),
                    num(|s| s.remote_fetches),
                    num(|s| s.local_fetch_bytes),
                    num(|s| s.remote_fetch_bytes),
                    num(|s| s.attempt as u64),
                    num(|s| s.task_time_ms),
                    num(|s| s.task_time_max_ms),
                    num(|s| s.task_setup_us),
                    num(|s| s.task_queued_us),
                    strings(stages.iter().map(|(_, s)| s.executors.join(",")).collect()),
                ]
            }
            "tasks" => {
                let tasks = self.core.tasks_overview();
                vec![
                    strings(tasks.iter().map(|t| t.job_id.clone()).collect()),
                    u32s(tasks.iter().map(|t| t.stage).collect()),
                    u32s(tasks.iter().map(|t| t.partition).collect()),
                    strings(tasks.iter().map(|t| t.state.to_string()).collect()),
                    u64s(tasks.iter().map(|t| t.attempt).collect()),
                    strings(tasks.iter().map(|t| t.executor.clone()).collect()),
                    u64s(tasks.iter().map(|t| t.rows).collect()),
                    u64s(tasks.iter().map(|t| t.elapsed_ms).collect()),
                ]
            }
            "sessions" => {
                let sessions = (self.sessions)();
                vec![
                    strings(sessions.iter().map(|s| s.session_id.clone()).collect()),
                    u64s(sessions.iter().map(|s| s.idle_ms).collect()),
                ]
            }
            _ => {
                let executors = self.core.executors_overview();
                let num = |f: fn(&crate::overview::ExecutorView) -> u64| {
                    u64s(executors.iter().map(f).collect())
                };
                vec![
                    strings(executors.iter().map(|e| e.id.clone()).collect()),
                    strings(executors.iter().map(|e| e.address.clone()).collect()),
                    u32s(executors.iter().map(|e| e.slots).collect()),
                    u32s(executors.iter().map(|e| e.slots_busy).collect()),
                    num(|e| e.memory_bytes),
                    strings(
                        executors
                            .iter()
                            .map(|e| e.http_address.clone().unwrap_or_default())
                            .collect(),
                    ),
                    num(|e| e.memory_pool_used_bytes),
                    num(|e| e.memory_pool_peak_bytes),
                    num(|e| e.resident_peak_bytes),
                    num(|e| e.shuffle_memory_bytes),
                    num(|e| e.shuffle_spilled_bytes),
                    num(|e| e.tasks_succeeded),
                    num(|e| e.tasks_failed),
                    num(|e| e.tasks_queued),
                    num(|e| e.last_heartbeat_ms_ago),
                    Arc::new(BooleanArray::from(
                        executors.iter().map(|e| e.connected).collect::<Vec<_>>(),
                    )),
                    strings(
                        executors
                            .iter()
                            .map(|e| e.lost_reason.clone().unwrap_or_default())
                            .collect(),
                    ),
                ]
            }
        };
        Ok(RecordBatch::try_new(schema_of(self.name), columns)?)
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        schema_of(self.name)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.batch()?;
        let schema = batch.schema();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            projection.cloned(),
        )?)
    }
}
