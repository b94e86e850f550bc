//! DataFusion operators that datafusion-proto 55 has no encoding for,
//! carried as [`EmberCodec`] nodes (one tag byte, then an `ember-proto`
//! message) so that every operator DataFusion can plan travels to executors:
//!
//! * `RecursiveQueryExec` and `WorkTableExec` (`WITH RECURSIVE`);
//! * `PartitionedTopKExec` (`enable_window_topn`);
//! * `PartialSortExec` (a sort over input already ordered by a prefix);
//! * `PiecewiseMergeJoinExec` (`enable_piecewise_merge_join`).

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::joins::PiecewiseMergeJoinExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::sorts::partial_sort::PartialSortExec;
use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::physical_plan::{PhysicalPlanDecodeContext, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use prost::Message;

use crate::codec::{EmberCodec, decode_err, put, schema_from_bytes, schema_to_bytes};

const TAG_RECURSIVE_QUERY: u8 = 5;
const TAG_WORK_TABLE: u8 = 6;
const TAG_PARTITIONED_TOPK: u8 = 7;
const TAG_PARTIAL_SORT: u8 = 8;
const TAG_PIECEWISE_MERGE_JOIN: u8 = 9;

/// Is `plan` an operator this module encodes?
pub(crate) fn is_df_node(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<RecursiveQueryExec>().is_some()
        || plan.downcast_ref::<WorkTableExec>().is_some()
        || plan.downcast_ref::<PartitionedTopKExec>().is_some()
        || plan.downcast_ref::<PartialSortExec>().is_some()
        || plan.downcast_ref::<PiecewiseMergeJoinExec>().is_some()
}

/// Encodes `node` into `buf` if it is one of this module's operators
/// (`Ok(false)`: it is not).
pub(crate) fn encode(
    codec: &EmberCodec,
    node: &Arc<dyn ExecutionPlan>,
    buf: &mut Vec<u8>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<bool> {
    if let Some(recursive) = node.downcast_ref::<RecursiveQueryExec>() {
        let msg = ember_proto::RecursiveQueryNode {
            name: recursive.name().to_string(),
            schema: schema_to_bytes(&recursive.schema())?,
            is_distinct: recursive.is_distinct(),
        };
        put(buf, TAG_RECURSIVE_QUERY, &msg)?;
    } else if let Some(work_table) = node.downcast_ref::<WorkTableExec>() {
        // The projection is private; only its `Debug` form shows it (the
        // fidelity converter ships a projecting one as a projection over a
        // plain one).
        if format!("{work_table:?}").contains("projection: Some(") {
            return Err(DataFusionError::NotImplemented(
                "Ember cannot ship a recursive query whose recursive term reads \
                 only some columns of the work table yet"
                    .into(),
            ));
        }
        let msg = ember_proto::WorkTableNode {
            name: work_table.name().to_string(),
            schema: schema_to_bytes(&work_table.schema())?,
        };
        put(buf, TAG_WORK_TABLE, &msg)?;
    } else if let Some(topk) = node.downcast_ref::<PartitionedTopKExec>() {
        let msg = ember_proto::PartitionedTopKNode {
            ordering: codec.encode_ordering(topk.expr(), converter)?,
            partition_prefix_len: topk.partition_prefix_len() as u32,
            fetch: topk.fetch() as u64,
            rank: matches!(topk.fn_kind(), WindowFnKind::Rank),
        };
        put(buf, TAG_PARTITIONED_TOPK, &msg)?;
    } else if let Some(sort) = node.downcast_ref::<PartialSortExec>() {
        let msg = ember_proto::PartialSortNode {
            ordering: codec.encode_ordering(sort.expr(), converter)?,
            common_prefix_length: sort.common_prefix_length() as u32,
            preserve_partitioning: sort.preserve_partitioning(),
            fetch: sort.fetch().map(|f| f as u64),
        };
        put(buf, TAG_PARTIAL_SORT, &msg)?;
    } else if let Some(join) = node.downcast_ref::<PiecewiseMergeJoinExec>() {
        let expr = |e: &Arc<dyn PhysicalExpr>| -> Result<Vec<u8>> {
            Ok(converter.physical_expr_to_proto(e, codec)?.encode_to_vec())
        };
        let msg = ember_proto::PiecewiseMergeJoinNode {
            on_buffered: expr(&join.on.0)?,
            on_streamed: expr(&join.on.1)?,
            operator: format!("{:?}", join.operator),
            join_type: protobuf::JoinType::from(join.join_type()) as i32,
        };
        put(buf, TAG_PIECEWISE_MERGE_JOIN, &msg)?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// The one input of a sorting node and its ordering (`ordering`: encoded
/// sort expressions over that input).
fn sorted_input<'a>(
    what: &str,
    ordering: &[u8],
    inputs: &'a [Arc<dyn ExecutionPlan>],
    decode: impl Fn(&[u8], &Arc<dyn ExecutionPlan>) -> Result<Option<LexOrdering>>,
) -> Result<(&'a Arc<dyn ExecutionPlan>, LexOrdering)> {
    let [input] = inputs else {
        return Err(decode_err(what, "expected one input"));
    };
    let ordering = decode(ordering, input)?.ok_or_else(|| decode_err(what, "missing ordering"))?;
    Ok((input, ordering))
}

/// Decodes a node this module encoded (`Ok(None)`: `tag` is not one of its).
pub(crate) fn decode(
    codec: &EmberCodec,
    tag: u8,
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let ordered = |bytes: &[u8], input: &Arc<dyn ExecutionPlan>| {
        codec.decode_ordering(bytes, &input.schema(), ctx, converter)
    };
    let plan: Arc<dyn ExecutionPlan> = match tag {
        TAG_RECURSIVE_QUERY => {
            let node = ember_proto::RecursiveQueryNode::decode(body)
                .map_err(|e| decode_err("recursive query", e))?;
            let [static_term, recursive_term] = inputs else {
                return Err(decode_err("recursive query", "expected two inputs"));
            };
            Arc::new(RecursiveQueryExec::try_new(
                node.name,
                schema_from_bytes(&node.schema)?,
                Arc::clone(static_term),
                Arc::clone(recursive_term),
                node.is_distinct,
            )?)
        }
        TAG_WORK_TABLE => {
            let node = ember_proto::WorkTableNode::decode(body)
                .map_err(|e| decode_err("work table", e))?;
            Arc::new(WorkTableExec::new(
                node.name,
                schema_from_bytes(&node.schema)?,
                None,
            )?)
        }
        TAG_PARTITIONED_TOPK => {
            let what = "partitioned top-k";
            let node =
                ember_proto::PartitionedTopKNode::decode(body).map_err(|e| decode_err(what, e))?;
            let (input, ordering) = sorted_input(what, &node.ordering, inputs, ordered)?;
            let kind = if node.rank {
                WindowFnKind::Rank
            } else {
                WindowFnKind::RowNumber
            };
            Arc::new(PartitionedTopKExec::try_new(
                Arc::clone(input),
                ordering,
                node.partition_prefix_len as usize,
                node.fetch as usize,
                kind,
            )?)
        }
        TAG_PARTIAL_SORT => {
            let what = "partial sort";
            let node =
                ember_proto::PartialSortNode::decode(body).map_err(|e| decode_err(what, e))?;
            let (input, ordering) = sorted_input(what, &node.ordering, inputs, ordered)?;
            if node.common_prefix_length == 0 {
                return Err(decode_err("partial sort", "empty common prefix"));
            }
            Arc::new(
                PartialSortExec::new(
                    ordering,
                    Arc::clone(input),
                    node.common_prefix_length as usize,
                )
                .with_preserve_partitioning(node.preserve_partitioning)
                .with_fetch(node.fetch.map(|f| f as usize)),
            )
        }
        TAG_PIECEWISE_MERGE_JOIN => {
            let node = ember_proto::PiecewiseMergeJoinNode::decode(body)
                .map_err(|e| decode_err("piecewise merge join", e))?;
            let [buffered, streamed] = inputs else {
                return Err(decode_err("piecewise merge join", "expected two inputs"));
            };
            let decode_ctx = PhysicalPlanDecodeContext::new(ctx, codec);
            let expr = |bytes: &[u8], input: &Arc<dyn ExecutionPlan>| {
                let proto = protobuf::PhysicalExprNode::decode(bytes)
                    .map_err(|e| decode_err("piecewise merge join", e))?;
                converter.proto_to_physical_expr(&proto, &input.schema(), &decode_ctx)
            };
            let on = (
                expr(&node.on_buffered, buffered)?,
                expr(&node.on_streamed, streamed)?,
            );
            let operator = Operator::from_proto_name(&node.operator).ok_or_else(|| {
                decode_err(
                    "piecewise merge join",
                    format!("operator {}", node.operator),
                )
            })?;
            let join_type = protobuf::JoinType::try_from(node.join_type)
                .map_err(|e| decode_err("piecewise merge join", e))?;
            // The build side counts the probe partitions of its process
            // before it emits unmatched buffered rows; a task runs one (and
            // `joins::distribute_joins` gives the joins that emit such rows
            // a single probe partition).
            Arc::new(PiecewiseMergeJoinExec::try_new(
                Arc::clone(buffered),
                Arc::clone(streamed),
                on,
                operator,
                JoinType::from(join_type),
                1,
            )?)
        }
        _ => return Ok(None),
    };
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int32Array, RecordBatch};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::codec::{decode_plan, encode_plan};

    /// The rows of `plan`, sorted (partitions come in any order).
    async fn rows(plan: Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Vec<String> {
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// `shipped`, encoded and decoded, contains `operator` and answers as
    /// DataFusion's `plan` does.
    async fn assert_round_trip(
        plan: Arc<dyn ExecutionPlan>,
        shipped: Arc<dyn ExecutionPlan>,
        operator: &str,
        ctx: &SessionContext,
    ) {
        let shown = displayable(shipped.as_ref()).indent(true).to_string();
        assert!(shown.contains(operator), "no {operator} in\n{shown}");
        let decoded = decode_plan(&encode_plan(shipped).unwrap(), &ctx.task_ctx()).unwrap();
        let decoded_shown = displayable(decoded.as_ref()).indent(true).to_string();
        assert!(decoded_shown.contains(operator), "{decoded_shown}");
        assert_eq!(rows(decoded, ctx).await, rows(plan, ctx).await, "{shown}");
    }

    #[tokio::test]
    async fn operators_datafusion_proto_cannot_encode_round_trip() {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config.options_mut().optimizer.enable_window_topn = true;
        config.options_mut().optimizer.enable_piecewise_merge_join = true;
        let ctx = SessionContext::new_with_config(config);
        // Two partitions, so that joins probe with several.
        let part = |a: Vec<i32>, b: Vec<Option<i32>>| {
            RecordBatch::try_from_iter_with_nullable([
                ("a", Arc::new(Int32Array::from(a)) as ArrayRef, true),
                ("b", Arc::new(Int32Array::from(b)) as ArrayRef, true),
            ])
            .unwrap()
        };
        let first = part(vec![1, 1, 2, 2], vec![Some(5), Some(3), Some(9), Some(1)]);
        let second = part(vec![3, 3, 4, 5], vec![Some(4), Some(4), Some(2), None]);
        let table = MemTable::try_new(first.schema(), vec![vec![first], vec![second]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let physical = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let df = ctx.sql(sql).await.unwrap();
                df.create_physical_plan().await.unwrap()
            }
        };

        for sql in [
            "SELECT * FROM (SELECT a, b, row_number() OVER (PARTITION BY a ORDER BY b) AS rn FROM t) \
             WHERE rn <= 1",
            "SELECT * FROM (SELECT a, b, rank() OVER (PARTITION BY a ORDER BY b DESC) AS r FROM t) \
             WHERE r < 2",
        ] {
            let plan = physical(sql).await;
            assert_round_trip(Arc::clone(&plan), plan, "PartitionedTopKExec", &ctx).await;
        }
        for sql in [
            "SELECT l.a, r.b FROM t l JOIN t r ON l.a < r.b",
            "SELECT l.a, r.b FROM t l LEFT JOIN t r ON l.a >= r.b",
            "SELECT l.a, r.b FROM t l FULL JOIN t r ON l.a > r.b + 2",
        ] {
            // Shipped as the scheduler plans it: one probe partition where
            // unmatched buffered rows are emitted.
            let plan = physical(sql).await;
            let shipped = crate::joins::distribute_joins(Arc::clone(&plan), 2).unwrap();
            assert_round_trip(plan, shipped, "PiecewiseMergeJoin", &ctx).await;
        }

        let sorted_by_a = physical("SELECT a, b FROM t ORDER BY a").await;
        let a = col("a", &sorted_by_a.schema()).unwrap();
        let b = col("b", &sorted_by_a.schema()).unwrap();
        let ordering = LexOrdering::new([
            PhysicalSortExpr::new_default(a),
            PhysicalSortExpr::new_default(b).desc(),
        ])
        .unwrap();
        for fetch in [None, Some(3)] {
            let sort = PartialSortExec::new(ordering.clone(), Arc::clone(&sorted_by_a), 1)
                .with_fetch(fetch);
            let sort: Arc<dyn ExecutionPlan> = Arc::new(sort);
            assert_round_trip(Arc::clone(&sort), sort, "PartialSortExec", &ctx).await;
        }
    }
}
