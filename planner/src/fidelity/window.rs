//! The window operators' part of the fix-ups (see the parent module): per
//! window expression, `IGNORE NULLS` of window functions, the reversal of
//! those DataFusion evaluates over the opposite order, and the `FILTER`
//! column of aggregates (made one by `window_filter`), found on the way out
//! and put back on decoding.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ReversedUDWF;
use datafusion::logical_expr::WindowFunctionDefinition;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::window::SlidingAggregateWindowExpr;
use datafusion::physical_plan::windows::{
    BoundedWindowAggExec, PlainAggregateWindowExpr, StandardWindowExpr, WindowAggExec,
    WindowUDFExpr, create_udwf_window_expr, create_window_expr, schema_add_window_field,
};
use datafusion::physical_plan::{ExecutionPlan, WindowExpr};

/// What encoding the window expressions `exprs` would lose, if anything;
/// a `FILTER` that cannot be carried is an error (never run unfiltered).
pub(super) fn lost_parts(exprs: &[Arc<dyn WindowExpr>]) -> Result<Option<ember_proto::FixupNode>> {
    let filters = exprs
        .iter()
        .map(|e| match (has_filter(e), filter_column(e)) {
            (false, _) => Ok(String::new()),
            (true, Some(column)) => Ok(column),
            (true, None) => Err(DataFusionError::NotImplemented(format!(
                "Ember cannot run this window aggregate with FILTER ({}): \
                 datafusion-proto drops the filter; use CASE WHEN inside the aggregate",
                e.name()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let ignore_nulls: Vec<bool> = exprs.iter().map(standard_ignores_nulls).collect();
    let reversed: Vec<bool> = exprs.iter().map(standard_is_reversed).collect();
    let filtered = filters.iter().any(|f| !f.is_empty());
    Ok(
        (filtered || ignore_nulls.iter().chain(&reversed).any(|&flag| flag)).then(|| {
            ember_proto::FixupNode {
                window_ignore_nulls: ignore_nulls,
                window_reversed: reversed,
                window_filters: if filtered { filters } else { vec![] },
                ..Default::default()
            }
        }),
    )
}

/// `plan`, a window operator decoded without what `fixup` carries for its
/// expressions (`exprs`), rebuilt with it.
pub(super) fn rebuild(
    plan: &Arc<dyn ExecutionPlan>,
    exprs: &[Arc<dyn WindowExpr>],
    fixup: &ember_proto::FixupNode,
) -> Result<Arc<dyn ExecutionPlan>> {
    let input = Arc::clone(plan.children()[0]);
    let input_schema = input.schema();
    let mut reversed = fixup.window_reversed.clone();
    if reversed.is_empty() {
        reversed = vec![false; exprs.len()];
    }
    let mut filters = fixup.window_filters.clone();
    if filters.is_empty() {
        filters = vec![String::new(); exprs.len()];
    }
    if exprs.len() != fixup.window_ignore_nulls.len()
        || exprs.len() != reversed.len()
        || exprs.len() != filters.len()
    {
        return Err(DataFusionError::Plan(
            "cannot decode an Ember fix-up node: window expression count differs".into(),
        ));
    }
    let rebuilt = exprs
        .iter()
        .zip(fixup.window_ignore_nulls.iter().zip(&reversed))
        .zip(&filters)
        .map(|((expr, (&ignore_nulls, &reversed)), filter)| {
            if !filter.is_empty() {
                rebuild_filtered(expr, &input_schema, filter)
            } else if reversed {
                rebuild_reversed(expr, &input_schema, ignore_nulls)
            } else if ignore_nulls {
                rebuild_window_expr(expr, &input_schema, ignore_nulls)
            } else {
                Ok(Arc::clone(expr))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(w) = plan.downcast_ref::<BoundedWindowAggExec>() {
        return Ok(Arc::new(BoundedWindowAggExec::try_new(
            rebuilt,
            input,
            w.input_order_mode.clone(),
            !w.partition_keys().is_empty(),
        )?));
    }
    let can_repartition = plan
        .downcast_ref::<WindowAggExec>()
        .is_some_and(|w| !w.partition_keys().is_empty());
    Ok(Arc::new(WindowAggExec::try_new(
        rebuilt,
        input,
        can_repartition,
    )?))
}

/// The expressions of a window operator (`None`: `plan` is none).
pub(super) fn window_exprs(plan: &Arc<dyn ExecutionPlan>) -> Option<&[Arc<dyn WindowExpr>]> {
    if let Some(w) = plan.downcast_ref::<WindowAggExec>() {
        return Some(w.window_expr());
    }
    plan.downcast_ref::<BoundedWindowAggExec>()
        .map(|w| w.window_expr())
}

/// A window aggregate's `Debug` form, the one place its `FILTER` shows
/// (`None`: not an aggregate).
fn aggregate_debug(expr: &Arc<dyn WindowExpr>) -> Option<String> {
    let any = expr.as_any();
    if let Some(plain) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        Some(format!("{plain:?}"))
    } else {
        any.downcast_ref::<SlidingAggregateWindowExpr>()
            .map(|sliding| format!("{sliding:?}"))
    }
}

/// Does a window aggregate have a `FILTER`?
fn has_filter(expr: &Arc<dyn WindowExpr>) -> bool {
    aggregate_debug(expr).is_some_and(|debug| !debug.ends_with("filter: None }"))
}

/// The column a window aggregate is filtered by, when `window_filter` made
/// its filter one (`Column { name: "__ember_window_filter_0", .. }`).
fn filter_column(expr: &Arc<dyn WindowExpr>) -> Option<String> {
    let debug = aggregate_debug(expr)?;
    let marker = format!(
        "filter: Some(Column {{ name: \"{}",
        crate::window_filter::FILTER_COLUMN
    );
    let start = debug.rfind(&marker)? + "filter: Some(Column { name: \"".len();
    let end = start + debug[start..].find('"')?;
    Some(debug[start..end].to_string())
}

/// A window aggregate decoded without its filter, filtered again by the
/// input column `name` ([`filter_column`]).
fn rebuild_filtered(
    expr: &Arc<dyn WindowExpr>,
    input_schema: &SchemaRef,
    name: &str,
) -> Result<Arc<dyn WindowExpr>> {
    let filter = Arc::new(Column::new(name, input_schema.index_of(name)?)) as _;
    let any = expr.as_any();
    if let Some(plain) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        return Ok(Arc::new(PlainAggregateWindowExpr::new(
            Arc::new(plain.get_aggregate_expr().clone()),
            plain.partition_by(),
            plain.order_by(),
            Arc::clone(plain.get_window_frame()),
            Some(filter),
        )));
    }
    if let Some(sliding) = any.downcast_ref::<SlidingAggregateWindowExpr>() {
        return Ok(Arc::new(SlidingAggregateWindowExpr::new(
            Arc::new(sliding.get_aggregate_expr().clone()),
            sliding.partition_by(),
            sliding.order_by(),
            Arc::clone(sliding.get_window_frame()),
            Some(filter),
        )));
    }
    Err(DataFusionError::Plan(format!(
        "a FILTER for window expression {}, which is no aggregate",
        expr.name()
    )))
}

/// The window function (not an aggregate) of a window expression.
fn window_udf(expr: &Arc<dyn WindowExpr>) -> Option<&WindowUDFExpr> {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()?
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()
}

/// Does a window function (not an aggregate) have `IGNORE NULLS`?
/// `WindowUDFExpr` keeps the flag private; its `Debug` form is the one
/// place it shows (`fidelity` tests catch a change of that form).
fn standard_ignores_nulls(expr: &Arc<dyn WindowExpr>) -> bool {
    window_udf(expr).is_some_and(|udf| format!("{udf:?}").ends_with("ignore_nulls: true }"))
}

/// Is a window function (not an aggregate) evaluated reversed? Private
/// too; see [`standard_ignores_nulls`].
fn standard_is_reversed(expr: &Arc<dyn WindowExpr>) -> bool {
    window_udf(expr).is_some_and(|udf| {
        let debug = format!("{udf:?}");
        debug.ends_with("is_reversed: true, ignore_nulls: true }")
            || debug.ends_with("is_reversed: true, ignore_nulls: false }")
    })
}

/// The window function `expr` decoded as, evaluated reversed. DataFusion
/// reverses `f` into `f.reverse_expr()` with `is_reversed` set (`lag` into
/// `lag`, `first_value` into `last_value`), and the pairs are each other's
/// reverse, so reversing the reverse of the decoded function again gives
/// it back with the flag.
fn rebuild_reversed(
    expr: &Arc<dyn WindowExpr>,
    input_schema: &SchemaRef,
    ignore_nulls: bool,
) -> Result<Arc<dyn WindowExpr>> {
    let cannot = || {
        DataFusionError::Plan(format!(
            "cannot rebuild reversed window function {}",
            expr.name()
        ))
    };
    let udf = window_udf(expr).ok_or_else(cannot)?;
    let original = match udf.fun().reverse_expr() {
        ReversedUDWF::Reversed(original) => original,
        ReversedUDWF::Identical | ReversedUDWF::NotSupported => return Err(cannot()),
    };
    let unreversed = create_udwf_window_expr(
        &original,
        udf.args(),
        input_schema,
        expr.name().to_string(),
        ignore_nulls,
    )?;
    let reversed = unreversed.reverse_expr().ok_or_else(cannot)?;
    let same_function = reversed
        .as_any()
        .downcast_ref::<WindowUDFExpr>()
        .is_some_and(|r| r.fun().name() == udf.fun().name());
    if !same_function {
        return Err(cannot());
    }
    Ok(Arc::new(StandardWindowExpr::new(
        reversed,
        expr.partition_by(),
        expr.order_by(),
        Arc::clone(expr.get_window_frame()),
    )))
}

/// `expr` again, with `ignore_nulls` (an aggregate keeps no filter: see
/// the module's note).
fn rebuild_window_expr(
    expr: &Arc<dyn WindowExpr>,
    input_schema: &SchemaRef,
    ignore_nulls: bool,
) -> Result<Arc<dyn WindowExpr>> {
    let any = expr.as_any();
    let aggregate = any
        .downcast_ref::<PlainAggregateWindowExpr>()
        .map(|w| w.get_aggregate_expr())
        .or_else(|| {
            any.downcast_ref::<SlidingAggregateWindowExpr>()
                .map(|w| w.get_aggregate_expr())
        });
    let (function, args, distinct, ignore_nulls) = if let Some(a) = aggregate {
        (
            WindowFunctionDefinition::AggregateUDF(Arc::new(a.fun().clone())),
            expr.expressions(),
            a.is_distinct(),
            ignore_nulls || a.ignore_nulls(),
        )
    } else if let Some(udf) = window_udf(expr) {
        (
            WindowFunctionDefinition::WindowUDF(Arc::clone(udf.fun())),
            udf.args().to_vec(),
            false,
            ignore_nulls,
        )
    } else {
        return Err(DataFusionError::Plan(format!(
            "cannot rebuild window expression {}",
            expr.name()
        )));
    };
    let name = expr.name().to_string();
    let schema = schema_add_window_field(&args, input_schema, &function, &name)?;
    create_window_expr(
        &function,
        name,
        &args,
        expr.partition_by(),
        expr.order_by(),
        Arc::clone(expr.get_window_frame()),
        schema,
        ignore_nulls,
        distinct,
        None,
    )
}
