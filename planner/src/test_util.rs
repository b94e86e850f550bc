//! Helpers the planner's unit tests share.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::{ExecutionPlan, collect_partitioned, displayable};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::config::distributed_session_config;
use crate::replicate::ReplicateExec;

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

/// `plan` with each replicated input collected once, as its stage's
/// output is on a cluster (in one process, each partition of an
/// exchange can be read once).
pub async fn replicated_inputs_collected(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> Arc<dyn ExecutionPlan> {
    let mut inputs = vec![];
    plan.apply(|node| {
        if let Some(r) = node.downcast_ref::<ReplicateExec>() {
            inputs.push(Arc::clone(r.input()));
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    let mut collected: Vec<(Arc<dyn ExecutionPlan>, _)> = vec![];
    for input in inputs {
        if collected.iter().any(|(i, _)| Arc::ptr_eq(i, &input)) {
            continue;
        }
        let partitions = collect_partitioned(Arc::clone(&input), ctx.task_ctx())
            .await
            .unwrap();
        collected.push((input, partitions));
    }
    plan.transform_up(|node| {
        let Some(r) = node.downcast_ref::<ReplicateExec>() else {
            return Ok(Transformed::no(node));
        };
        let (input, partitions) = collected
            .iter()
            .find(|(input, _)| Arc::ptr_eq(input, r.input()))
            .expect("collected");
        let memory = MemorySourceConfig::try_new_exec(partitions, input.schema(), None)?;
        Ok(Transformed::yes(Arc::new(ReplicateExec::new(
            memory,
            r.partitions(),
        ))))
    })
    .unwrap()
    .data
}

/// `files` Parquet files of `rows` rows each under `dir`: `k` (0.. across
/// the files) and `name`.
fn write_table(dir: &std::path::Path, files: i64, rows: i64) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let k = Int64Array::from_iter_values(f * rows..(f + 1) * rows);
        let name = StringArray::from_iter_values((0..rows).map(|i| format!("n{}", f * rows + i)));
        let batch =
            RecordBatch::try_from_iter([("k", Arc::new(k) as _), ("name", Arc::new(name) as _)])
                .unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}

/// A distributed session (2 partitions) with two Parquet tables of 4 files
/// written under `dir`: `small` (400 rows) and `big` (20,000 rows), each
/// `k` (0..) and `name` (`n<k>`).
pub async fn small_and_big_tables(dir: &std::path::Path) -> SessionContext {
    write_table(&dir.join("small"), 4, 100);
    write_table(&dir.join("big"), 4, 5_000);
    let ctx = SessionContext::new_with_config(distributed_session_config(2));
    for t in ["small", "big"] {
        let path = dir.join(t);
        ctx.register_parquet(t, path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    ctx
}
