//! Helpers the planner's unit tests share.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionContext;

/// `sql` planned by `ctx` into a physical plan.
pub async fn physical_plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// The rows `plan` produces, printed one per line and sorted.
pub async fn sorted_rows(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> Vec<String> {
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .unwrap();
    let mut lines: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `plan`'s operators, one per line.
pub fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(false).to_string()
}

/// A table of nullable `Int32` columns named `names`, each partition given
/// as its columns' values.
pub fn int_table(names: &[&str], partitions: Vec<Vec<Vec<Option<i32>>>>) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int32, true))
            .collect::<Vec<_>>(),
    ));
    let partitions = partitions
        .into_iter()
        .map(|columns| {
            let columns = columns
                .into_iter()
                .map(|c| Arc::new(Int32Array::from(c)) as ArrayRef)
                .collect();
            vec![RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()]
        })
        .collect();
    Arc::new(MemTable::try_new(schema, partitions).unwrap())
}
