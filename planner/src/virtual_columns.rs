//! A Parquet scan's virtual columns, which datafusion-proto 55 does not
//! encode.
//!
//! `file_row_index()` makes DataFusion add a virtual column (a row number
//! the Parquet reader fills) to the scan's table schema, and the scan's
//! projection reads it. The encoding keeps the projection but not the
//! column, so decoding fails ("Column index 1 out of bounds for projected
//! expressions"). The fields travel beside the scan ([`scan_virtual_columns`]
//! into a `FixupNode`), and [`decode_with_virtual_columns`] rebuilds the
//! scan's source with them before applying the projection, as DataFusion's
//! own Parquet decoder does without them.

use std::sync::Arc;

use arrow::datatypes::{Fields, Schema};
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::projection::{ProjectionExpr, ProjectionExprs};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalPlanDecodeContext, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;

use crate::codec::{schema_from_bytes, schema_to_bytes};

/// The virtual columns of a Parquet scan (`config`), as IPC schema bytes
/// (empty: none).
pub fn scan_virtual_columns(config: &FileScanConfig) -> Result<Vec<u8>> {
    let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(vec![]);
    };
    let fields = parquet.table_schema().virtual_columns();
    if fields.is_empty() {
        return Ok(vec![]);
    }
    schema_to_bytes(&Schema::new(fields.clone()))
}

/// Decodes `inner`, a Parquet scan encoded without its `virtual_columns`
/// (bytes from [`scan_virtual_columns`]), with them.
pub fn decode_with_virtual_columns(
    inner: &protobuf::PhysicalPlanNode,
    virtual_columns: &[u8],
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let bad = |what: &str| {
        DataFusionError::Plan(format!(
            "cannot decode a Parquet scan with virtual columns: {what}"
        ))
    };
    let virtual_fields: Fields = schema_from_bytes(virtual_columns)?.fields().clone();
    // Decoded without its projection first: the projection reads the
    // virtual columns the decoded source lacks.
    let mut unprojected = inner.clone();
    let Some(PhysicalPlanType::ParquetScan(scan)) = unprojected.physical_plan_type.as_mut() else {
        return Err(bad("not a Parquet scan"));
    };
    let projection = scan
        .base_conf
        .as_mut()
        .and_then(|conf| conf.projection_exprs.take());
    let plan = converter.proto_to_execution_plan(&unprojected, ctx)?;
    let config = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        .ok_or_else(|| bad("decoded as another operator"))?;
    let parquet = config
        .file_source()
        .downcast_ref::<ParquetSource>()
        .ok_or_else(|| bad("decoded as a scan of another format"))?;

    let decoded = parquet.table_schema();
    let table_schema = TableSchema::builder(Arc::clone(decoded.file_schema()))
        .with_table_partition_cols(decoded.table_partition_cols().clone())
        .with_virtual_columns(virtual_fields)
        .build();
    let mut source = ParquetSource::new(table_schema.clone())
        .with_table_parquet_options(parquet.table_parquet_options().clone());
    if let Some(factory) = parquet.parquet_file_reader_factory() {
        source = source.with_parquet_file_reader_factory(Arc::clone(factory));
    }
    if let Some(predicate) = parquet.filter() {
        source = source.with_predicate(predicate);
    }
    let mut source: Arc<dyn FileSource> = Arc::new(source);
    if let Some(projection) = projection {
        let full = table_schema.table_schema();
        let exprs = projection
            .projections
            .iter()
            .map(|p| {
                let expr = p
                    .expr
                    .as_ref()
                    .ok_or_else(|| bad("a projection without expression"))?;
                Ok(ProjectionExpr::new(
                    converter.proto_to_physical_expr(expr, full, ctx)?,
                    p.alias.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        source = source
            .try_pushdown_projection(&ProjectionExprs::new(exprs))?
            .ok_or_else(|| bad("the source refused its projection"))?;
    }
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(source)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}
