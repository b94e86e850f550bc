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

/// Decodes a node this module encoded (`Ok(None)`: `tag` is not one of its).
pub(crate) fn decode(
    codec: &EmberCodec,
    tag: u8,
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
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
            let node = ember_proto::PartitionedTopKNode::decode(body)
                .map_err(|e| decode_err("partitioned top-k", e))?;
            let [input] = inputs else {
                return Err(decode_err("partitioned top-k", "expected one input"));
            };
            let ordering = codec
                .decode_ordering(&node.ordering, &input.schema(), ctx, converter)?
                .ok_or_else(|| decode_err("partitioned top-k", "missing ordering"))?;
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
            let node = ember_proto::PartialSortNode::decode(body)
                .map_err(|e| decode_err("partial sort", e))?;
            let [input] = inputs else {
                return Err(decode_err("partial sort", "expected one input"));
            };
            let ordering = codec
                .decode_ordering(&node.ordering, &input.schema(), ctx, converter)?
                .ok_or_else(|| decode_err("partial sort", "missing ordering"))?;
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
