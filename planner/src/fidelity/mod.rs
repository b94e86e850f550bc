//! What datafusion-proto 55 loses when it encodes an operator, carried
//! beside it so the executor runs the plan the scheduler planned.
//!
//! * A window function's `IGNORE NULLS` is encoded only for aggregates:
//!   decoded, `first_value(x) IGNORE NULLS OVER (...)` returns nulls.
//! * A window function DataFusion reversed (to evaluate `ORDER BY id` over
//!   input another window sorted by `id DESC`) is encoded without its
//!   `is_reversed`: decoded, `lag(a, 2) OVER (ORDER BY id)` returns what
//!   `lead(a, 2)` would.
//! * A window aggregate's `FILTER (WHERE ...)` is not encoded at all, and
//!   DataFusion does not expose it (`AggregateWindowExpr` is private).
//!   `window_filter` moves it into the arguments where it can, and makes it
//!   a column of the window's input otherwise: the column's name travels
//!   (found in the aggregate's `Debug` form) and the decoded aggregate is
//!   filtered by it again. Any other filter is refused with a clear error
//!   rather than run without it (which would count every row).
//! * A file scan's compression is not encoded: decoded, a scan of gzipped
//!   CSV or JSON files parses the compressed bytes as text.
//! * A Parquet scan's virtual columns (`file_row_index()`) are not encoded,
//!   while its projection reading them is (see `virtual_columns`).
//! * An Arrow scan of IPC stream files is decoded as a scan of IPC files,
//!   which fails on their missing footer.
//! * A JSON scan's array mode (`format.newline_delimited false`) is not
//!   encoded, and DataFusion keeps it private: decoded, the scan expects one
//!   object per line. The session marks such scans ([`mark_json_array_scans`],
//!   from the tables' options) with a [`JsonArrayScan`] the encoding carries.
//! * `GROUPING SETS (())` (and any aggregate whose grouping sets have no
//!   expression) is encoded as zero groups, so the decoded aggregate emits no
//!   row at all.
//! * A `generate_series` scan that reads no column (`count(*)`) is encoded
//!   with its projected, empty schema, and the decoded generator then builds
//!   batches of one column against a schema of none: it travels as an empty
//!   projection over the whole series instead ([`unproject_series`]).
//!
//! [`EmberConverter`] sees every operator as the plan is encoded; one that
//! would lose something it can carry is wrapped in a `FixupNode` ([`EmberCodec`] tag
//! [`TAG_FIXUP`]) holding the operator's usual encoding plus what it lacks,
//! and [`decode_fixup`] rebuilds the operator whole.
//!
//! [`EmberCodec`]: crate::codec::EmberCodec

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::physical_plan::{
    ArrowSource, FileScanConfig, FileScanConfigBuilder, FileSource, JsonSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::functions_table::generate_series::{GenericSeriesState, TimestampValue};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_plan::InputOrderMode;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::windows::{
    BoundedWindowAggExec, WindowAggExec, get_ordered_partition_by_indices,
};
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream, Statistics, StatisticsArgs, StatisticsContext,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

mod window;

/// The codec tag of a `FixupNode`.
pub const TAG_FIXUP: u8 = 4;

/// datafusion-proto's converter, plus the fix-ups above.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmberConverter;

impl PhysicalProtoConverterExtension for EmberConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.default_proto_to_execution_plan(proto, ctx)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalPlanNode> {
        if crate::codec::is_ember_node(plan) {
            // datafusion-proto would encode the inputs of an extension node
            // without this converter (so without the fix-ups below).
            let mut node = vec![];
            codec.try_encode(Arc::clone(plan), &mut node, self)?;
            let children: Vec<Arc<dyn ExecutionPlan>> =
                match plan.downcast_ref::<RecursiveQueryExec>() {
                    Some(recursive) => vec![
                        Arc::clone(recursive.static_term()),
                        unproject_work_table(recursive.recursive_term(), &recursive.schema())?,
                    ],
                    None => plan.children().into_iter().cloned().collect(),
                };
            let inputs = children
                .iter()
                .map(|child| self.execution_plan_to_proto(child, codec))
                .collect::<Result<_>>()?;
            return Ok(extension(node, inputs));
        }
        if let Some(unprojected) = unproject_series(plan)? {
            return self.execution_plan_to_proto(&unprojected, codec);
        }
        if let Some(sendable) = crate::ipc_types::sendable_memory_scan(plan)? {
            return self.execution_plan_to_proto(&sendable, codec);
        }
        if let Some(marked) = plan.downcast_ref::<JsonArrayScan>() {
            let fixup = ember_proto::FixupNode {
                inner: self
                    .execution_plan_to_proto(&marked.scan, codec)?
                    .encode_to_vec(),
                json_array: true,
                ..Default::default()
            };
            return fixup_node(&fixup);
        }
        let inner = protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )?;
        let Some(mut fixup) = self.lost_parts(plan)? else {
            return Ok(inner);
        };
        fixup.inner = inner.encode_to_vec();
        fixup_node(&fixup)
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &arrow::datatypes::Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.default_proto_to_physical_expr(proto, input_schema, ctx)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalExprNode> {
        let expr = float16_literal_as_cast(expr).unwrap_or_else(|| Arc::clone(expr));
        datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter(
            &expr, codec, self,
        )
    }
}

/// A `Float16` literal as a cast of the same `Float32` value: datafusion-proto
/// writes a `Float16` value as a `Float32` one and reads it back as such, so
/// `arrow_cast(1, 'Float16')` would arrive as a `Float32` (and `f16_col + 1`
/// fail on the executor). Every `Float16` is exactly a `Float32`.
fn float16_literal_as_cast(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let literal = expr.downcast_ref::<Literal>()?;
    let ScalarValue::Float16(Some(value)) = literal.value() else {
        return None;
    };
    let widened = Arc::new(Literal::new(ScalarValue::Float32(Some(value.to_f32()))));
    Some(Arc::new(CastExpr::new(widened, DataType::Float16, None)))
}

/// `recursive_term` with a projecting `WorkTableExec` (projection pushed
/// into it) made a projection over a plain one: the projection is private to
/// DataFusion (only `Debug` shows it), so it travels as a `ProjectionExec`.
/// `schema` is the work table's, i.e. the recursive query's output.
fn unproject_work_table(
    recursive_term: &Arc<dyn ExecutionPlan>,
    schema: &SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(recursive_term)
        .transform_down(|plan| {
            let Some(work_table) = plan.downcast_ref::<WorkTableExec>() else {
                return Ok(Transformed::no(plan));
            };
            let debug = format!("{work_table:?}");
            let Some(start) = debug.find("projection: Some([") else {
                return Ok(Transformed::no(plan));
            };
            let rest = &debug[start + "projection: Some([".len()..];
            let indices = rest[..rest.find(']').unwrap_or(0)]
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::parse::<usize>)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| DataFusionError::Internal(format!("work table projection: {e}")))?;
            let full = Arc::new(WorkTableExec::new(
                work_table.name().to_string(),
                Arc::clone(schema),
                None,
            )?);
            let exprs = indices.into_iter().map(|i| {
                let name = schema.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            });
            Ok(Transformed::yes(
                Arc::new(ProjectionExec::try_new(exprs, full)?) as Arc<dyn ExecutionPlan>,
            ))
        })
        .data()
}

/// A `generate_series` scan projected to no column, as an empty projection
/// over the same series with its one column (`None`: `plan` is not such a
/// scan). The projection is private to DataFusion, but the series' column is
/// known from the generator: `value`, an `Int64` or a nanosecond timestamp.
fn unproject_series(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(exec) = plan.downcast_ref::<LazyMemoryExec>() else {
        return Ok(None);
    };
    let [generator] = exec.generators().as_slice() else {
        return Ok(None);
    };
    if !exec.schema().fields().is_empty() {
        return Ok(None);
    }
    let data_type = {
        let generator = generator.read();
        let any = generator.as_any();
        if any.downcast_ref::<GenericSeriesState<i64>>().is_some() {
            DataType::Int64
        } else if let Some(ts) = any.downcast_ref::<GenericSeriesState<TimestampValue>>() {
            DataType::Timestamp(TimeUnit::Nanosecond, ts.current().tz_str().cloned())
        } else {
            return Ok(None);
        }
    };
    let schema = Arc::new(Schema::new(vec![Field::new("value", data_type, false)]));
    let series = Arc::new(LazyMemoryExec::try_new(
        schema,
        vec![Arc::clone(generator)],
    )?);
    let no_columns: Vec<(Arc<dyn PhysicalExpr>, String)> = vec![];
    Ok(Some(Arc::new(ProjectionExec::try_new(no_columns, series)?)))
}

fn fixup_node(fixup: &ember_proto::FixupNode) -> Result<protobuf::PhysicalPlanNode> {
    let mut node = vec![TAG_FIXUP];
    fixup
        .encode(&mut node)
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    Ok(extension(node, vec![]))
}

fn extension(node: Vec<u8>, inputs: Vec<protobuf::PhysicalPlanNode>) -> protobuf::PhysicalPlanNode {
    protobuf::PhysicalPlanNode {
        physical_plan_type: Some(protobuf::physical_plan_node::PhysicalPlanType::Extension(
            protobuf::PhysicalExtensionNode { node, inputs },
        )),
    }
}

impl EmberConverter {
    /// What encoding `plan` alone would lose, if anything.
    fn lost_parts(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Option<ember_proto::FixupNode>> {
        if let Some(exprs) = window::window_exprs(plan) {
            return window::lost_parts(exprs);
        }
        if let Some(config) = file_scan_config(plan) {
            let compressed = config.file_compression_type.is_compressed();
            let arrow_stream = config.file_source().file_type() == "arrow_stream";
            let virtual_columns = crate::virtual_columns::scan_virtual_columns(config)?;
            return Ok(
                (compressed || arrow_stream || !virtual_columns.is_empty()).then(|| {
                    ember_proto::FixupNode {
                        file_compression: config.file_compression_type.get_variant().to_string(),
                        arrow_stream,
                        virtual_columns,
                        ..Default::default()
                    }
                }),
            );
        }
        if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
            let group_by = aggregate.group_expr();
            if group_by.expr().is_empty() && !group_by.groups().is_empty() {
                return Ok(Some(ember_proto::FixupNode {
                    empty_grouping_sets: group_by.groups().len() as u32,
                    ..Default::default()
                }));
            }
        }
        Ok(None)
    }
}

fn file_scan_config(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// Rebuilds the operator a `FixupNode` (the payload after the tag) wraps.
pub fn decode_fixup(
    body: &[u8],
    ctx: &TaskContext,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let bad = |e: &dyn std::fmt::Display| {
        DataFusionError::Plan(format!("cannot decode an Ember fix-up node: {e}"))
    };
    let fixup = ember_proto::FixupNode::decode(body).map_err(|e| bad(&e))?;
    let inner = protobuf::PhysicalPlanNode::decode(fixup.inner.as_slice()).map_err(|e| bad(&e))?;
    let decode_ctx = PhysicalPlanDecodeContext::new(ctx, codec);
    let plan = if fixup.virtual_columns.is_empty() {
        converter.proto_to_execution_plan(&inner, &decode_ctx)?
    } else {
        crate::virtual_columns::decode_with_virtual_columns(
            &inner,
            &fixup.virtual_columns,
            &decode_ctx,
            converter,
        )?
    };

    if let Some(exprs) = window::window_exprs(&plan) {
        return window::rebuild(&plan, exprs, &fixup);
    }

    if fixup.json_array {
        let config =
            file_scan_config(&plan).ok_or_else(|| bad(&"JSON array mode for a non-file scan"))?;
        let json = config
            .file_source()
            .downcast_ref::<JsonSource>()
            .ok_or_else(|| bad(&"JSON array mode for a scan of another format"))?;
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(json.clone().with_newline_delimited(false)))
            .build();
        return Ok(DataSourceExec::from_data_source(config));
    }

    if !fixup.file_compression.is_empty() || fixup.arrow_stream {
        let config =
            file_scan_config(&plan).ok_or_else(|| bad(&"file options for a non-file scan"))?;
        let compression: FileCompressionType = fixup.file_compression.parse()?;
        let mut builder =
            FileScanConfigBuilder::from(config.clone()).with_file_compression_type(compression);
        if fixup.arrow_stream {
            let file = config.file_source();
            let stream: Arc<dyn FileSource> = Arc::new(ArrowSource::new_stream_file_source(
                file.table_schema().clone(),
            ));
            let stream = match file.projection() {
                Some(projection) => stream
                    .try_pushdown_projection(projection)?
                    .ok_or_else(|| bad(&"an Arrow stream scan refused its projection"))?,
                None => stream,
            };
            builder = builder.with_source(stream);
        }
        return Ok(DataSourceExec::from_data_source(builder.build()));
    }

    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>()
        && fixup.empty_grouping_sets > 0
    {
        let g = aggregate.group_expr();
        let group_by = PhysicalGroupBy::new(
            g.expr().to_vec(),
            g.null_expr().to_vec(),
            vec![vec![]; fixup.empty_grouping_sets as usize],
            g.has_grouping_set(),
        );
        let rebuilt = AggregateExec::try_new(
            *aggregate.mode(),
            group_by,
            aggregate.aggr_expr().to_vec(),
            aggregate.filter_expr().to_vec(),
            Arc::clone(aggregate.input()),
            aggregate.input_schema(),
        )?
        .with_limit_options(aggregate.limit_options());
        return Ok(Arc::new(rebuilt));
    }
    Ok(plan)
}

/// A scan of JSON array files, as the session planned it: the scan itself,
/// marked so that its encoding says so (see the module's note). It runs as
/// the scan does; executors decode the scan alone.
#[derive(Debug)]
pub struct JsonArrayScan {
    scan: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for JsonArrayScan {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "JsonArrayScan: ")?;
        self.scan.fmt_as(t, f)
    }
}

impl ExecutionPlan for JsonArrayScan {
    fn name(&self) -> &str {
        "JsonArrayScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.scan.apply_expressions(f)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        StatisticsContext::new().compute(self.scan.as_ref(), args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }
}

/// The paths of the tables `plan` reads whose JSON files are arrays.
pub fn json_array_tables(plan: &LogicalPlan) -> Result<Vec<ListingTableUrl>> {
    let mut urls = vec![];
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<ListingTable>()
            && let Some(json) = table.options().format.downcast_ref::<JsonFormat>()
            && !json.options().newline_delimited
        {
            urls.extend(table.table_paths().iter().cloned());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(urls)
}

/// Marks every JSON scan of `plan` that reads files of `array_tables`
/// (tables whose JSON files are arrays) with a [`JsonArrayScan`].
pub fn mark_json_array_scans(
    plan: Arc<dyn ExecutionPlan>,
    array_tables: &[ListingTableUrl],
) -> Result<Arc<dyn ExecutionPlan>> {
    if array_tables.is_empty() {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        let Some(config) = file_scan_config(&node) else {
            return Ok(Transformed::no(node));
        };
        let of_array_table = config.file_source().downcast_ref::<JsonSource>().is_some()
            && config
                .file_groups
                .iter()
                .flat_map(|g| g.iter())
                .all(|file| {
                    array_tables
                        .iter()
                        .any(|t| t.contains(&file.object_meta.location, false))
                });
        Ok(if of_array_table {
            Transformed::yes(Arc::new(JsonArrayScan { scan: node }) as Arc<dyn ExecutionPlan>)
        } else {
            Transformed::no(node)
        })
    })
    .data()
}

/// Encodes a stage's plan and checks that what an executor will decode can
/// run as planned: the stage's output schema is the planned one, and every
/// window operator's input is still ordered by its `PARTITION BY` (an order
/// lost on the way is otherwise an executor error, "Expects PARTITION BY
/// expression to be ordered"). A difference is an error naming
/// the stage, raised here on the scheduler before anything runs.
pub fn encode_checked(
    stage_id: u32,
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &TaskContext,
) -> Result<Vec<u8>> {
    let bytes = crate::codec::encode_plan(Arc::clone(plan))?;
    let decoded = crate::codec::decode_plan(&bytes, ctx)?;
    let fields = |p: &Arc<dyn ExecutionPlan>| {
        p.schema()
            .fields()
            .iter()
            .map(|f| (f.data_type().clone(), f.is_nullable()))
            .collect::<Vec<_>>()
    };
    let difference = if fields(plan) != fields(&decoded) {
        Some(format!(
            "its output schema decodes as {:?} where {:?} was planned",
            decoded.schema(),
            plan.schema()
        ))
    } else {
        unmet_ordering(&decoded)?
    };
    match difference {
        Some(d) => Err(DataFusionError::NotImplemented(format!(
            "Ember cannot ship stage {stage_id} as planned: {d}"
        ))),
        None => Ok(bytes),
    }
}

/// The first window operator of `plan` whose input is not ordered by its
/// `PARTITION BY` as the operator will assert when it runs.
fn unmet_ordering(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<String>> {
    let needs_ordered_partitions = match plan.downcast_ref::<BoundedWindowAggExec>() {
        Some(w) => matches!(w.input_order_mode, InputOrderMode::Sorted),
        None => plan.downcast_ref::<WindowAggExec>().is_some(),
    };
    if needs_ordered_partitions
        && let (Some(exprs), [input]) = (window::window_exprs(plan), plan.children().as_slice())
        && let Some(first) = exprs.first()
    {
        let partition_by = first.partition_by();
        if get_ordered_partition_by_indices(partition_by, input)?.len() != partition_by.len() {
            return Ok(Some(format!(
                "the input of {} ({}) is not ordered by its PARTITION BY [{}]",
                plan.name(),
                input.name(),
                partition_by
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    for child in plan.children() {
        if let Some(unmet) = unmet_ordering(child)? {
            return Ok(Some(unmet));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use crate::codec::{decode_plan, encode_plan};

    use crate::test_util::physical_plan as plan;

    use super::*;

    #[tokio::test]
    async fn ignore_nulls_reversal_and_empty_grouping_sets_survive_encoding() {
        let ctx = SessionContext::new();
        for sql in [
            // The last window sorts by id DESC; DataFusion evaluates the
            // others reversed over that order rather than sort again.
            "SELECT id, lag(a, 2, 'def') OVER (ORDER BY id), \
                    lag(a, 2) IGNORE NULLS OVER (ORDER BY id), lead(a) OVER (ORDER BY id), \
                    nth_value(a, 2) OVER (ORDER BY id), first_value(a) OVER (ORDER BY id), \
                    sum(id) OVER (ORDER BY id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) \
             FROM (VALUES (2, 'b'), (1, NULL), (3, NULL), (4, 'x'), (5, 'y')) AS t(id, a)",
            "SELECT first_value(x) IGNORE NULLS OVER (), \
                    last_value(x) IGNORE NULLS OVER (ORDER BY y), \
                    lag(x) IGNORE NULLS OVER (ORDER BY y) \
             FROM (VALUES (NULL, 1), (3, 2), (NULL, 3), (4, 4), (NULL, 5)) AS t(x, y)",
            "SELECT count(*) FROM (VALUES (1), (2)) AS t(x) GROUP BY GROUPING SETS (())",
            "SELECT count(*) FROM (VALUES (1), (2)) AS t(x) WHERE x > 5 GROUP BY GROUPING SETS ((), ())",
            "SELECT count(*) FROM (SELECT * FROM (VALUES (1), (2)) UNION ALL SELECT * FROM (VALUES (3))) \
             GROUP BY GROUPING SETS (())",
        ] {
            let original = plan(&ctx, sql).await;
            let expected = collect(Arc::clone(&original), ctx.task_ctx())
                .await
                .unwrap();
            // At the root of a stage, as the scheduler ships it.
            let stage: Arc<dyn ExecutionPlan> =
                Arc::new(crate::ShuffleWriterExec::try_new(0, original, None).unwrap());
            let decoded = decode_plan(&encode_plan(stage).unwrap(), &ctx.task_ctx()).unwrap();
            let got = collect(Arc::clone(decoded.children()[0]), ctx.task_ctx())
                .await
                .unwrap();
            let text = |b| {
                arrow::util::pretty::pretty_format_batches(b)
                    .unwrap()
                    .to_string()
            };
            assert_eq!(text(&got), text(&expected), "{sql}");
            assert!(!expected.is_empty(), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_window_filter_is_refused_rather_than_dropped() {
        let ctx = SessionContext::new();
        let filtered = plan(
            &ctx,
            "SELECT count(*) FILTER (WHERE x > 1) OVER () FROM (VALUES (1), (2)) AS t(x)",
        )
        .await;
        let err = encode_plan(filtered).unwrap_err().to_string();
        assert!(err.contains("FILTER"), "{err}");
        let plain = plan(
            &ctx,
            "SELECT count(*) OVER () FROM (VALUES (1), (2)) AS t(x)",
        )
        .await;
        assert!(encode_plan(plain).is_ok());
    }
}
