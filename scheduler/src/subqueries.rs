//! Uncorrelated scalar subqueries, run first as jobs of their own.
//!
//! As Spark does: before a query is planned into stages, each uncorrelated
//! scalar subquery (`x > (SELECT avg(y) FROM t)`) runs as a job, the
//! scheduler fetches its one value from the executor holding it, and the
//! query is planned with that value as a literal. The answer and its type
//! are then DataFusion's (which also runs such subqueries first); so is its
//! nullability, which clients are told from DataFusion's plan of the query
//! ([`nullable_as`]: a substituted value is never NULL, the subquery's
//! column may be), a subquery may stand anywhere an expression may (an aggregate's
//! argument, `ORDER BY`, a join condition, DML), and its value reaches the
//! scans as a filter. Innermost subqueries run first; identical ones once.
//! `EXPLAIN` runs nothing and shows the query as planned without values
//! (the subqueries as joins).
//!
//! A subquery that stands in a filter ([`defer_filter_subqueries`]) needs
//! neither: its value never reaches an output column, and a scan predicate
//! can take it as late as when a task opens a file. Such a subquery's job
//! runs *beside* the query's, which is planned with a placeholder for the
//! value (`ember_planner::subquery_value`): its stages that do not read the
//! value run meanwhile (`ember.concurrent_subqueries`, on by default).

use arrow::array::RecordBatch;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, Ticket};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, Subquery};
use ember_planner::subquery_value::placeholder;
use ember_proto::JobStatus;
use futures::TryStreamExt;

use crate::error::SchedulerError;

/// The first uncorrelated scalar subquery of `plan` (at any depth) that
/// holds none itself. Those of `LIMIT` / `OFFSET` stay: DataFusion refuses
/// them, and so does Ember.
pub fn next_scalar_subquery(plan: &LogicalPlan) -> Option<Subquery> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::Limit(_)) {
            return Ok(TreeNodeRecursion::Continue);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarSubquery(s) = e
                    && s.outer_ref_columns.is_empty()
                    && next_scalar_subquery(&s.subquery).is_none()
                {
                    found = Some(s.clone());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// `plan` with each uncorrelated scalar subquery that stands in one of its
/// filters (`WHERE`, `HAVING`, not inside another subquery) and that `defer`
/// accepts replaced by a placeholder for its value (see
/// `ember_planner::subquery_value`), and those subqueries: the placeholder
/// of the n-th reads value n. Identical subqueries share one.
pub fn defer_filter_subqueries(
    plan: LogicalPlan,
    defer: impl Fn(&Subquery) -> bool,
) -> datafusion::error::Result<(LogicalPlan, Vec<Subquery>)> {
    let mut deferred: Vec<Subquery> = vec![];
    let plan = plan
        .transform_up(|node| {
            if !matches!(node, LogicalPlan::Filter(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::ScalarSubquery(s) if s.outer_ref_columns.is_empty() && defer(&s) => {
                        let id = match deferred.iter().position(|d| d == &s) {
                            Some(i) => i,
                            None => {
                                deferred.push(s.clone());
                                deferred.len() - 1
                            }
                        };
                        let data_type = s.subquery.schema().field(0).data_type().clone();
                        Ok(Transformed::yes(placeholder(id as u32, data_type)))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data;
    Ok((plan, deferred))
}

/// Whether substituting values for `plan`'s uncorrelated scalar subqueries
/// can change what its output columns may hold, and so their nullability:
/// `false` when every such subquery stands in a filter (`WHERE`, `HAVING`),
/// whose value never reaches a column. Only then can the second, nullability
/// only, optimization of the statement be skipped.
pub fn may_reach_outputs(plan: &LogicalPlan) -> bool {
    let mut reaches = false;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::Filter(_)) {
            return Ok(TreeNodeRecursion::Continue);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if matches!(e, Expr::ScalarSubquery(s) if s.outer_ref_columns.is_empty()) {
                    reaches = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if reaches {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    reaches
}

/// `plan` with every occurrence of `subquery` replaced by `value`, each
/// changed expression keeping its name.
pub fn substitute(
    plan: LogicalPlan,
    subquery: &Subquery,
    value: &ScalarValue,
) -> datafusion::error::Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let names = NamePreserver::new(&node);
        let rewritten = node.map_expressions(|expr| {
            let name = names.save(&expr);
            let replaced = expr.transform_up(|e| match e {
                Expr::ScalarSubquery(s) if &s == subquery => {
                    Ok(Transformed::yes(Expr::Literal(value.clone(), None)))
                }
                other => Ok(Transformed::no(other)),
            })?;
            Ok(replaced.update_data(|e| name.restore(e)))
        })?;
        if rewritten.transformed {
            rewritten.map_data(|p| p.recompute_schema())
        } else {
            Ok(rewritten)
        }
    })
    .map(|t| t.data)
}

/// `schema` with each field nullable where `declared`'s is (the same
/// columns by position; `schema` itself if they differ in number).
pub fn nullable_as(schema: &SchemaRef, declared: &SchemaRef) -> SchemaRef {
    let relax = schema.fields().len() == declared.fields().len()
        && schema
            .fields()
            .iter()
            .zip(declared.fields())
            .any(|(f, d)| d.is_nullable() && !f.is_nullable());
    if !relax {
        return Arc::clone(schema);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(declared.fields())
        .map(|(f, d)| {
            Arc::new(
                f.as_ref()
                    .clone()
                    .with_nullable(f.is_nullable() || d.is_nullable()),
            )
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The value of a scalar subquery of type `data_type` from its rows: NULL
/// for none, an error past one (DataFusion's words).
pub fn scalar_value(
    batches: &[RecordBatch],
    data_type: &DataType,
) -> Result<ScalarValue, SchedulerError> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > 1 {
        return Err(SchedulerError::InvalidQuery(
            "Execution error: Scalar subquery returned more than one row".into(),
        ));
    }
    let value = match batches.iter().find(|b| b.num_rows() == 1) {
        Some(batch) => ScalarValue::try_from_array(batch.column(0), 0)?,
        None => ScalarValue::try_from(data_type)?,
    };
    Ok(if value.data_type() == *data_type {
        value
    } else {
        value.cast_to(data_type)?
    })
}

/// A result partition of a finished job that could not be fetched.
#[derive(Debug)]
pub struct LostResult {
    pub partition: u32,
    pub attempt: u64,
    pub why: String,
}

/// Why a finished job's rows could not be read.
#[derive(Debug)]
pub enum FetchFailure {
    /// A partition its executor could not serve: recomputable.
    Lost(LostResult),
    /// A partition that came with the job's status and does not decode:
    /// no executor holds it, so there is nothing to recompute.
    Corrupt(String),
}

/// Every row of a finished job: partitions sent with its status, and the
/// others fetched from the executors over Flight.
pub async fn fetch_rows(
    status: &JobStatus,
    max_message_size: usize,
) -> Result<Vec<RecordBatch>, FetchFailure> {
    let mut results = status.results.clone();
    results.sort_by_key(|r| r.partition);
    let mut batches = vec![];
    for r in results {
        let lost = |e: &dyn std::fmt::Display| {
            FetchFailure::Lost(LostResult {
                partition: r.partition,
                attempt: r.attempt,
                why: format!(
                    "cannot fetch a scalar subquery's result from executor {}: {e}",
                    r.executor_id
                ),
            })
        };
        if !r.direct_result.is_empty() {
            let (_, rows) =
                ember_planner::ipc_types::read_stream(&r.direct_result).map_err(|e| {
                    FetchFailure::Corrupt(format!(
                        "partition {} of a scalar subquery's result, sent with its task's report, \
                     does not decode: {e}",
                        r.partition
                    ))
                })?;
            batches.extend(rows);
            continue;
        }
        let channel = ember_proto::data_endpoint(&r.flight_address)
            .map_err(|e| lost(&e))?
            .connect()
            .await
            .map_err(|e| lost(&e))?;
        let client = FlightServiceClient::new(channel).max_decoding_message_size(max_message_size);
        let stream = FlightClient::new_from_inner(client)
            .do_get(Ticket::new(r.ticket.clone()))
            .await
            .map_err(|e| lost(&e))?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(|e| lost(&e))?);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn subqueries_are_found_innermost_first_and_replaced_under_their_names() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x BIGINT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();
        let sql = "SELECT x + (SELECT max(x) FROM t WHERE x < (SELECT avg(x) FROM t)) FROM t \
                   ORDER BY x + (SELECT min(x) FROM t)";
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let names: Vec<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();

        // avg first (the max depends on it), then the others, then none.
        let mut plan = plan;
        let mut seen = vec![];
        while let Some(s) = next_scalar_subquery(&plan) {
            let value = ctx
                .execute_logical_plan(s.subquery.as_ref().clone())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let data_type = s.subquery.schema().field(0).data_type().clone();
            let value = scalar_value(&value, &data_type).unwrap();
            seen.push(value.to_string());
            plan = substitute(plan, &s, &value).unwrap();
            assert!(seen.len() <= 3, "{plan}");
        }
        seen.sort();
        assert_eq!(seen, ["1", "1", "2"]);
        let got: Vec<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(got, names);
        let rows = ctx
            .execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        assert!(text.contains("| 2 ") && text.contains("| 4 "), "{text}");
    }

    #[tokio::test]
    async fn filter_subqueries_are_deferred_once_each_and_others_left_in_place() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x BIGINT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();
        let sql = "SELECT x + (SELECT min(x) FROM t) FROM t \
                   WHERE x > (SELECT avg(x) FROM t) AND x < (SELECT avg(x) FROM t) + 5 \
                   AND EXISTS (SELECT 1 FROM t u WHERE u.x > (SELECT max(x) FROM t))";
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let (deferred_plan, deferred) = defer_filter_subqueries(plan.clone(), |_| true).unwrap();
        // avg, once; the projection's min and the EXISTS's max stay.
        assert_eq!(deferred.len(), 1, "{deferred_plan}");
        assert!(
            deferred[0]
                .subquery
                .display_indent()
                .to_string()
                .contains("avg")
        );
        let text = deferred_plan.display_indent().to_string();
        assert_eq!(
            text.matches("scalar_subquery_value(Int64(0))").count(),
            2,
            "{text}"
        );
        let left = next_scalar_subquery(&deferred_plan).unwrap();
        assert!(!left.subquery.display_indent().to_string().contains("avg"));
        assert_eq!(deferred_plan.schema(), plan.schema());
        // Refused by the caller: nothing deferred.
        let (same, none) = defer_filter_subqueries(plan.clone(), |_| false).unwrap();
        assert!(none.is_empty());
        assert_eq!(same, plan);
    }

    #[tokio::test]
    async fn only_subqueries_outside_filters_can_reach_output_columns() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x BIGINT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();
        let reaches = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx.state().create_logical_plan(sql).await.unwrap();
                may_reach_outputs(&plan)
            }
        };
        assert!(!reaches("SELECT x FROM t WHERE x > (SELECT avg(x) FROM t)").await);
        assert!(
            !reaches(
                "SELECT x, count(*) FROM t GROUP BY x HAVING count(*) > (SELECT min(x) FROM t)"
            )
            .await
        );
        assert!(reaches("SELECT x + (SELECT max(x) FROM t) FROM t").await);
        assert!(reaches("SELECT sum(x * (SELECT max(x) FROM t)) FROM t").await);
        assert!(
            reaches("SELECT x FROM t WHERE x > (SELECT max(x) + (SELECT min(x) FROM t) FROM t)")
                .await
        );
    }

    #[test]
    fn a_subquery_value_is_null_for_no_row_and_an_error_past_one() {
        let none = scalar_value(&[], &DataType::Int32).unwrap();
        assert_eq!(none, ScalarValue::Int32(None));
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let e = scalar_value(&[batch], &DataType::Int64).unwrap_err();
        assert!(e.to_string().contains("more than one row"), "{e}");
    }

    /// A value sent with its task's report is read from the status, with
    /// no executor to ask; one that does not decode fails at once rather
    /// than being reported lost (nothing could recompute it).
    #[tokio::test]
    async fn a_value_sent_with_the_status_is_read_from_it_and_garbage_fails_at_once() {
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(arrow::array::Int64Array::from(vec![7])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let bytes = ember_planner::ipc_types::write_stream(&batch.schema(), [&batch]).unwrap();
        let status = |direct_result: Vec<u8>| JobStatus {
            results: vec![ember_proto::ResultLocation {
                partition: 0,
                // Nothing listens there: a fetch would fail as lost.
                flight_address: "127.0.0.1:1".into(),
                direct_result,
                ..Default::default()
            }],
            ..Default::default()
        };
        let rows = fetch_rows(&status(bytes.clone()), 1 << 20).await.unwrap();
        let value = scalar_value(&rows, &DataType::Int64).unwrap();
        assert_eq!(value, ScalarValue::Int64(Some(7)));

        let garbage = bytes[..bytes.len() / 2].to_vec();
        match fetch_rows(&status(garbage), 1 << 20).await {
            Err(FetchFailure::Corrupt(why)) => assert!(why.contains("does not decode"), "{why}"),
            other => panic!("expected a corrupt result, got {other:?}"),
        }
    }
}
