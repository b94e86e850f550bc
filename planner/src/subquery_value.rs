//! The value of a scalar subquery that runs beside the job reading it.
//!
//! The scheduler runs an uncorrelated scalar subquery that stands in a
//! filter (`WHERE x > (SELECT avg(x) ...)`, `HAVING sum(v) > (SELECT ...)`)
//! as a job of its own *beside* the query's job, instead of first: the query
//! is planned with [`placeholder`] where the subquery stood, the stages whose
//! plans read a placeholder ([`awaited_by`]) wait for its value, and the
//! other stages run meanwhile. The value reaches executors with each launch
//! (`LaunchTasksRequest.subquery_values`, [`SubqueryValues`] in the task's
//! config); the decoded function returns it.
//!
//! The placeholder takes the subquery's number as a literal argument, so the
//! Parquet scan, which simplifies its predicate when it opens a file, turns
//! it into the value and prunes row groups by it. On the scheduler, where
//! the value is not known, evaluating it fails, and DataFusion's constant
//! folding leaves it in place.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, exec_err, internal_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf;
use prost::Message;

/// The function's name, as plans show it.
pub const NAME: &str = "scalar_subquery_value";

/// `scalar_subquery_value(id)`: the value of subquery `id`, of `data_type`.
pub fn placeholder(id: u32, data_type: DataType) -> Expr {
    udf(id, data_type, None).call(vec![lit(i64::from(id))])
}

fn udf(id: u32, data_type: DataType, value: Option<ScalarValue>) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(SubqueryValue {
        id,
        data_type,
        value,
        signature: Signature::exact(vec![DataType::Int64], Volatility::Stable),
    }))
}

/// The values of a job's scalar subqueries known to a task (a
/// `SessionConfig` extension).
#[derive(Debug, Default, Clone)]
pub struct SubqueryValues(pub HashMap<u32, ScalarValue>);

impl SubqueryValues {
    /// The values of a launch (`LaunchTasksRequest.subquery_values`).
    pub fn decode(encoded: &HashMap<u32, Vec<u8>>) -> Result<Self> {
        encoded
            .iter()
            .map(|(id, bytes)| Ok((*id, decode_value(bytes)?)))
            .collect::<Result<_>>()
            .map(Self)
    }

    /// The values a task's config carries, if any.
    pub fn of(config: &SessionConfig) -> Option<Arc<Self>> {
        config.get_extension::<Self>()
    }
}

/// datafusion-proto bytes of a subquery's value, as launches carry it.
pub fn encode_value(value: &ScalarValue) -> Result<Vec<u8>> {
    Ok(protobuf::ScalarValue::try_from(value)?.encode_to_vec())
}

fn decode_value(bytes: &[u8]) -> Result<ScalarValue> {
    let proto = protobuf::ScalarValue::decode(bytes).map_err(|e| {
        DataFusionError::Plan(format!("cannot decode a scalar subquery's value: {e}"))
    })?;
    Ok(ScalarValue::try_from(&proto)?)
}

/// The numbers of the subqueries whose values `plan`'s expressions read.
pub fn awaited_by(plan: &Arc<dyn ExecutionPlan>) -> Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    plan.apply(|node| {
        node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>()
                    && let Some(v) = f.fun().inner().downcast_ref::<SubqueryValue>()
                {
                    ids.insert(v.id);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(ids)
}

/// What the codec writes for the function, if `udf` is one.
pub(crate) fn encode_udf(udf: &ScalarUDF) -> Result<Option<Vec<u8>>> {
    let Some(v) = udf.inner().downcast_ref::<SubqueryValue>() else {
        return Ok(None);
    };
    let node = ember_proto::ScalarSubqueryValueNode {
        id: v.id,
        data_type: protobuf::ArrowType::try_from(&v.data_type)?.encode_to_vec(),
    };
    Ok(Some(node.encode_to_vec()))
}

/// The function `bytes` describe, returning its value from `values` (or
/// failing when evaluated, where the value is not known).
pub(crate) fn decode_udf(bytes: &[u8], values: Option<&SubqueryValues>) -> Result<Arc<ScalarUDF>> {
    let bad = |e: &dyn std::fmt::Display| {
        DataFusionError::Plan(format!("cannot decode Ember {NAME}: {e}"))
    };
    let node = ember_proto::ScalarSubqueryValueNode::decode(bytes).map_err(|e| bad(&e))?;
    let data_type = protobuf::ArrowType::decode(node.data_type.as_slice()).map_err(|e| bad(&e))?;
    let data_type = DataType::try_from(&data_type).map_err(|e| bad(&e))?;
    let value = values.and_then(|v| v.0.get(&node.id)).cloned();
    Ok(udf(node.id, data_type, value))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SubqueryValue {
    id: u32,
    data_type: DataType,
    value: Option<ScalarValue>,
    signature: Signature,
}

impl ScalarUDFImpl for SubqueryValue {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(value) = &self.value else {
            // On the scheduler (constant folding tries it) this is expected;
            // a task reaching it would be a scheduling bug.
            return exec_err!("the value of scalar subquery {} is not known yet", self.id);
        };
        if value.data_type() != self.data_type {
            return internal_err!(
                "scalar subquery {} has a value of type {}, not {}",
                self.id,
                value.data_type(),
                self.data_type
            );
        }
        Ok(ColumnarValue::Scalar(value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn a_placeholder_survives_planning_is_found_and_travels_with_its_value() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x BIGINT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();
        let plan = ctx
            .table("t")
            .await
            .unwrap()
            .filter(datafusion::prelude::col("x").gt(placeholder(7, DataType::Int64)))
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        assert!(plan.display_indent().to_string().contains(NAME), "{plan}");
        let physical = ctx.state().create_physical_plan(&plan).await.unwrap();
        assert_eq!(awaited_by(&physical).unwrap(), BTreeSet::from([7]));

        // Not known here: running it fails, saying so.
        let e = datafusion::physical_plan::collect(Arc::clone(&physical), ctx.task_ctx())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not known yet"), "{e}");

        // Decoded with the value, it filters by it.
        let bytes = crate::codec::encode_plan(physical).unwrap();
        let values = SubqueryValues::decode(&HashMap::from([(
            7,
            encode_value(&ScalarValue::Int64(Some(1))).unwrap(),
        )]))
        .unwrap();
        let config = ctx.copied_config().with_extension(Arc::new(values));
        let task_ctx = Arc::new(
            datafusion::execution::TaskContext::from(&ctx.state()).with_session_config(config),
        );
        let decoded = crate::codec::decode_plan(&bytes, &task_ctx).unwrap();
        assert_eq!(awaited_by(&decoded).unwrap(), BTreeSet::from([7]));
        let rows: usize = datafusion::physical_plan::collect(decoded, task_ctx)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 2);
    }
}
