//! Serialization of stage plans: `datafusion-proto` for DataFusion's own
//! operators, plus [`EmberCodec`] for Ember's shuffle operators and
//! [`EmberConverter`] for what datafusion-proto would lose (see `fidelity`).
//!
//! Every Ember node is encoded as one tag byte followed by a prost message
//! from `ember-proto` (`ShuffleWriterNode`, `ShuffleReaderNode`,
//! `FileWriteNode`).

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{AcrossPartitions, ConstExpr, LexOrdering};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::fidelity::{EmberConverter, TAG_FIXUP, decode_fixup};
use crate::functions::MissingFunction;
use crate::replicate::ReplicateExec;
use crate::shuffle_reader::ShuffleReaderExec;
use crate::shuffle_writer::ShuffleWriterExec;
use crate::subquery_value::SubqueryValues;
use crate::write::FileWriteExec;

const TAG_WRITER: u8 = 1;
const TAG_READER: u8 = 2;
const TAG_FILE_WRITE: u8 = 3;
// 4 is `fidelity::TAG_FIXUP`, 5 to 9 are `df_nodes`'.
const TAG_REPLICATE: u8 = 10;

/// Is `plan` encoded by [`EmberCodec`]: one of Ember's own operators, or a
/// DataFusion operator datafusion-proto cannot encode (`df_nodes`)?
pub fn is_ember_node(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<ShuffleWriterExec>().is_some()
        || plan.downcast_ref::<ShuffleReaderExec>().is_some()
        || plan.downcast_ref::<FileWriteExec>().is_some()
        || plan.downcast_ref::<ReplicateExec>().is_some()
        || crate::df_nodes::is_df_node(plan)
}

/// Encodes and decodes Ember's own operators inside datafusion-proto plans.
#[derive(Debug, Default, Clone)]
pub struct EmberCodec {
    /// Where a decoded plan's scalar subquery values come from (the task's
    /// config; see `subquery_value`).
    subquery_values: Option<Arc<SubqueryValues>>,
}

/// Serializes a stage plan.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let codec = EmberCodec::default();
    Ok(physical_plan_to_bytes_with_proto_converter(plan, &codec, &EmberConverter)?.to_vec())
}

/// Deserializes a stage plan in the context of the task that will run it.
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = EmberCodec {
        subquery_values: SubqueryValues::of(ctx.session_config()),
    };
    physical_plan_from_bytes_with_proto_converter(bytes, ctx, &codec, &EmberConverter)
}

/// Arrow IPC bytes of a schema (a stream with no batches).
pub fn schema_to_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let schema = Arc::new(schema.clone());
    Ok(crate::ipc_types::write_stream(&schema, [])?)
}

/// Reads a schema written by [`schema_to_bytes`].
pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(crate::ipc_types::read_stream(bytes)?.0)
}

/// Writes an Ember node: its tag byte, then its message.
pub(crate) fn put(buf: &mut Vec<u8>, tag: u8, msg: &impl Message) -> Result<()> {
    buf.push(tag);
    msg.encode(buf)
        .map_err(|e| DataFusionError::Internal(e.to_string()))
}

pub(crate) fn decode_err(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("cannot decode Ember {what}: {e}"))
}

impl EmberCodec {
    fn encode_partitioning(
        &self,
        p: &Partitioning,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Vec<u8>> {
        Ok(serialize_partitioning(p, self, converter)?.encode_to_vec())
    }

    fn decode_partitioning(
        &self,
        bytes: &[u8],
        schema: &Schema,
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Option<Partitioning>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let proto =
            protobuf::Partitioning::decode(bytes).map_err(|e| decode_err("partitioning", e))?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        parse_protobuf_partitioning(Some(&proto), &decode_ctx, schema, converter)
    }
}

impl EmberCodec {
    /// datafusion-proto `PhysicalSortExprNodeCollection` bytes of `ordering`.
    pub(crate) fn encode_ordering(
        &self,
        ordering: &LexOrdering,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Vec<u8>> {
        Ok(protobuf::PhysicalSortExprNodeCollection {
            physical_sort_expr_nodes: serialize_physical_sort_exprs(
                ordering.iter().cloned(),
                self,
                converter,
            )?,
        }
        .encode_to_vec())
    }

    pub(crate) fn decode_ordering(
        &self,
        bytes: &[u8],
        schema: &Schema,
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Option<LexOrdering>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let proto = protobuf::PhysicalSortExprNodeCollection::decode(bytes)
            .map_err(|e| decode_err("ordering", e))?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        let exprs = parse_physical_sort_exprs(
            &proto.physical_sort_expr_nodes,
            &decode_ctx,
            schema,
            converter,
        )?;
        Ok(LexOrdering::new(exprs))
    }
}

impl EmberCodec {
    fn encode_constants(
        &self,
        constants: &[ConstExpr],
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Vec<ember_proto::ShuffleConstant>> {
        constants
            .iter()
            .map(|c| {
                let (uniform, value) = match &c.across_partitions {
                    AcrossPartitions::Uniform(Some(v)) => {
                        (true, protobuf::ScalarValue::try_from(v)?.encode_to_vec())
                    }
                    AcrossPartitions::Uniform(None) => (true, vec![]),
                    AcrossPartitions::Heterogeneous => (false, vec![]),
                };
                Ok(ember_proto::ShuffleConstant {
                    expr: converter
                        .physical_expr_to_proto(&c.expr, self)?
                        .encode_to_vec(),
                    uniform,
                    value,
                })
            })
            .collect()
    }

    fn decode_constants(
        &self,
        constants: &[ember_proto::ShuffleConstant],
        schema: &Schema,
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Vec<ConstExpr>> {
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        constants
            .iter()
            .map(|c| {
                let expr = protobuf::PhysicalExprNode::decode(c.expr.as_slice())
                    .map_err(|e| decode_err("constant", e))?;
                let expr = converter.proto_to_physical_expr(&expr, schema, &decode_ctx)?;
                let across = match (c.uniform, c.value.as_slice()) {
                    (false, _) => AcrossPartitions::Heterogeneous,
                    (true, []) => AcrossPartitions::Uniform(None),
                    (true, bytes) => {
                        let v = protobuf::ScalarValue::decode(bytes)
                            .map_err(|e| decode_err("constant", e))?;
                        AcrossPartitions::Uniform(Some(
                            datafusion::common::ScalarValue::try_from(&v)
                                .map_err(|e| decode_err("constant", e))?,
                        ))
                    }
                };
                Ok(ConstExpr::new(expr, across))
            })
            .collect()
    }
}

impl PhysicalExtensionCodec for EmberCodec {
    // Functions are resolved by name in the task's registry first; reaching
    // the codec means this process was not started with the function.
    fn try_decode_udf(
        &self,
        name: &str,
        buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::ScalarUDF>> {
        if name == crate::scalar_subquery::SINGLE_ROW {
            return Ok(crate::scalar_subquery::single_row_udf());
        }
        if name == crate::subquery_value::NAME && !buf.is_empty() {
            return crate::subquery_value::decode_udf(buf, self.subquery_values.as_deref());
        }
        Err(MissingFunction::error(name))
    }

    fn try_encode_udf(
        &self,
        node: &datafusion::logical_expr::ScalarUDF,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(bytes) = crate::subquery_value::encode_udf(node)? {
            buf.extend(bytes);
        }
        Ok(())
    }

    fn try_decode_udaf(
        &self,
        name: &str,
        _buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::AggregateUDF>> {
        Err(MissingFunction::error(name))
    }

    fn try_decode_udwf(
        &self,
        name: &str,
        _buf: &[u8],
    ) -> Result<Arc<datafusion::logical_expr::WindowUDF>> {
        Err(MissingFunction::error(name))
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((tag, body)) = buf.split_first() else {
            return Err(decode_err("node", "empty payload"));
        };
        match *tag {
            TAG_WRITER => {
                let node = ember_proto::ShuffleWriterNode::decode(body)
                    .map_err(|e| decode_err("shuffle writer", e))?;
                let [input] = inputs else {
                    return Err(decode_err("shuffle writer", "expected one input"));
                };
                let partitioning =
                    self.decode_partitioning(&node.partitioning, &input.schema(), ctx, converter)?;
                Ok(Arc::new(ShuffleWriterExec::try_new(
                    node.stage_id,
                    Arc::clone(input),
                    partitioning,
                )?))
            }
            TAG_READER => {
                let node = ember_proto::ShuffleReaderNode::decode(body)
                    .map_err(|e| decode_err("shuffle reader", e))?;
                let schema = schema_from_bytes(&node.schema)?;
                let partitioning = self
                    .decode_partitioning(&node.partitioning, &schema, ctx, converter)?
                    .ok_or_else(|| decode_err("shuffle reader", "missing partitioning"))?;
                let ordering = self.decode_ordering(&node.ordering, &schema, ctx, converter)?;
                let constants = self.decode_constants(&node.constants, &schema, ctx, converter)?;
                Ok(Arc::new(ShuffleReaderExec::try_new(
                    node.stage_id,
                    schema,
                    node.hashed,
                    node.map_partitions as usize,
                    partitioning,
                    ordering,
                    constants,
                )?))
            }
            TAG_FILE_WRITE => {
                let node = ember_proto::FileWriteNode::decode(body)
                    .map_err(|e| decode_err("file writer", e))?;
                let [input] = inputs else {
                    return Err(decode_err("file writer", "expected one input"));
                };
                let template = protobuf::PhysicalPlanNode::decode(node.template.as_slice())
                    .map_err(|e| decode_err("file writer", e))?;
                let template = converter.proto_to_execution_plan(
                    &template,
                    &PhysicalPlanDecodeContext::new(ctx, self),
                )?;
                Ok(FileWriteExec::from_template(
                    Arc::clone(input),
                    &template,
                    node.arrow,
                    node.staging_root,
                )?)
            }
            TAG_REPLICATE => {
                let node = ember_proto::ReplicateNode::decode(body)
                    .map_err(|e| decode_err("replicate", e))?;
                let [input] = inputs else {
                    return Err(decode_err("replicate", "expected one input"));
                };
                Ok(Arc::new(ReplicateExec::new(
                    Arc::clone(input),
                    node.partitions as usize,
                )))
            }
            TAG_FIXUP => decode_fixup(body, ctx, self, converter),
            other => crate::df_nodes::decode(self, other, body, inputs, ctx, converter)?
                .ok_or_else(|| decode_err("node", format!("unknown tag {other}"))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            let partitioning = match writer.partitioning() {
                Some(p) => self.encode_partitioning(p, converter)?,
                None => vec![],
            };
            let msg = ember_proto::ShuffleWriterNode {
                stage_id: writer.stage_id(),
                partitioning,
            };
            return put(buf, TAG_WRITER, &msg);
        }
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let msg = ember_proto::ShuffleReaderNode {
                stage_id: reader.stage_id(),
                schema: schema_to_bytes(&reader.schema())?,
                hashed: reader.hashed(),
                map_partitions: reader.map_partitions() as u32,
                partitioning: self
                    .encode_partitioning(reader.properties().output_partitioning(), converter)?,
                ordering: match reader.ordering() {
                    Some(ordering) => self.encode_ordering(ordering, converter)?,
                    None => vec![],
                },
                constants: self.encode_constants(reader.constants(), converter)?,
            };
            return put(buf, TAG_READER, &msg);
        }
        if let Some(write) = node.downcast_ref::<FileWriteExec>() {
            let (template, arrow) = write.template()?;
            let msg = ember_proto::FileWriteNode {
                template: converter
                    .execution_plan_to_proto(&template, self)?
                    .encode_to_vec(),
                staging_root: write.staging_root().to_string(),
                arrow,
            };
            return put(buf, TAG_FILE_WRITE, &msg);
        }
        if let Some(replicate) = node.downcast_ref::<ReplicateExec>() {
            let msg = ember_proto::ReplicateNode {
                partitions: replicate.partitions() as u32,
            };
            return put(buf, TAG_REPLICATE, &msg);
        }
        if crate::df_nodes::encode(self, &node, buf, converter)? {
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "Ember cannot serialize operator {}",
            node.name()
        )))
    }
}
