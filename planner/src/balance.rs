//! Balanced Parquet scans: a scan's partitions get equal shares of rows,
//! dealt in whole row groups, instead of equal byte ranges.
//!
//! DataFusion splits a scan's files into `target_partitions` byte ranges, and
//! at run time lets an idle partition steal files from its siblings, which in
//! one process keeps every core busy. An Ember task runs one partition alone,
//! so stealing is off ([`distributed_session_config`]) and each task reads
//! exactly its file group. Byte ranges are coarse: a row group belongs to the
//! range that holds its first page, so a range of a few bytes at the start of
//! a file takes that file's whole first row group. TPC-H `lineitem` in 4
//! files of 2 row groups each, over 2 partitions, gives one task 4.05 M rows
//! and the other 1.95 M, and the next stage waits for the larger.
//!
//! [`balance_scans`] reads the footer of every file a Parquet scan names
//! (through DataFusion's file metadata cache, which planning has usually
//! filled already) and deals the row groups, in file order, to the same
//! number of partitions so each gets about the same number of rows. Every
//! row group is still read exactly once; the partition count, and so the rest
//! of the plan, is unchanged. A scan is left as it is when it declares an
//! output ordering or partitioning, when a footer cannot be read (the scan
//! reports that itself when it runs), or when the new split would not be
//! better.
//!
//! [`distributed_session_config`]: crate::config::distributed_session_config

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, stream};
use object_store::ObjectMeta;
use object_store::path::Path;

/// Footers read at once while planning.
const CONCURRENT_FOOTER_READS: usize = 16;

/// `plan` with every balanceable Parquet scan's file groups re-dealt by rows.
pub async fn balance_scans(
    plan: Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut wanted: Vec<(String, ObjectMeta)> = vec![];
    let mut seen = HashSet::new();
    plan.apply(|node| {
        if let Some(config) = balanceable(node.as_ref()) {
            for file in distinct_files(config) {
                let key = footer_key(config, file);
                if seen.insert(key.clone()) {
                    wanted.push((key.0, file.object_meta.clone()));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if wanted.is_empty() {
        return Ok(plan);
    }

    let runtime = state.runtime_env();
    let cache = runtime.cache_manager.get_file_metadata_cache();
    let footers: Footers = stream::iter(wanted)
        .map(|(url, meta)| {
            let cache = Arc::clone(&cache);
            async move {
                let store_url =
                    datafusion::execution::object_store::ObjectStoreUrl::parse(&url).ok()?;
                let store = runtime.object_store(&store_url).ok()?;
                let footer = DFParquetMetadata::new(store.as_ref(), &meta)
                    .with_file_metadata_cache(Some(cache))
                    .with_page_index_policy(Some(PageIndexPolicy::Skip))
                    .fetch_metadata()
                    .await
                    .ok()?;
                Some(((url, meta.location), footer))
            }
        })
        .buffer_unordered(CONCURRENT_FOOTER_READS)
        .filter_map(|footer| async move { footer })
        .collect()
        .await;

    plan.transform_up(|node| {
        let Some(config) = balanceable(node.as_ref()) else {
            return Ok(Transformed::no(node));
        };
        match rebalanced(config, &footers) {
            Some(groups) => {
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(groups)
                    .build();
                Ok(Transformed::yes(
                    DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
                ))
            }
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// Footers by (object store URL, location).
type Footers = HashMap<(String, Path), Arc<ParquetMetaData>>;

fn footer_key(config: &FileScanConfig, file: &PartitionedFile) -> (String, Path) {
    (
        config.object_store_url.as_str().to_string(),
        file.object_meta.location.clone(),
    )
}

/// Every file of `config` once, in the order the scan first names it (a
/// file split into byte ranges appears in several groups).
fn distinct_files(config: &FileScanConfig) -> Vec<&PartitionedFile> {
    let mut seen = HashSet::new();
    config
        .file_groups
        .iter()
        .flat_map(|g| g.iter())
        .filter(|f| seen.insert(&f.object_meta.location))
        .collect()
}

/// The scan config of `node` if it is a Parquet scan of several partitions
/// whose grouping means nothing: no declared ordering (of the scan or a file)
/// and no declared partitioning (files grouped by partition value).
fn balanceable(node: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    let (config, _) = node
        .downcast_ref::<DataSourceExec>()?
        .downcast_to_file_source::<ParquetSource>()?;
    (config.file_groups.len() > 1 && grouping_is_free(config)).then_some(config)
}

/// Whether a scan's files may be grouped anew: it declares no ordering (of
/// the scan or a file) and no partitioning (files grouped by partition
/// value). [`crate::small_scans`] merges such groups into one.
pub(crate) fn grouping_is_free(config: &FileScanConfig) -> bool {
    let ordered = config.preserve_order
        || !config.output_ordering.is_empty()
        || config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .any(|f| f.ordering.is_some());
    !ordered && config.output_partitioning.is_none()
}

/// One row group of one file, as the byte range that selects it alone.
#[derive(Debug)]
struct Unit {
    file: usize,
    /// Where its first page starts: the offset a range must contain.
    first_page: i64,
    start: i64,
    end: i64,
    rows: u64,
}

/// The row groups of `file` (the `index`th file) in file order, each with a
/// byte range covering exactly it; `None` if their offsets are not
/// increasing (a file this pass does not understand).
fn units_of(index: usize, size: u64, footer: &ParquetMetaData) -> Option<Vec<Unit>> {
    let groups = footer.row_groups();
    let first_pages: Vec<i64> = groups
        .iter()
        .map(|g| {
            let column = g.columns().first()?;
            Some(
                column
                    .dictionary_page_offset()
                    .unwrap_or_else(|| column.data_page_offset()),
            )
        })
        .collect::<Option<_>>()?;
    if first_pages.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    let size = size as i64;
    if groups.is_empty() {
        return Some(vec![Unit {
            file: index,
            first_page: 0,
            start: 0,
            end: size,
            rows: 0,
        }]);
    }
    Some(
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| Unit {
                file: index,
                first_page: first_pages[i],
                start: if i == 0 { 0 } else { first_pages[i] },
                end: first_pages.get(i + 1).copied().unwrap_or(size),
                rows: g.num_rows().max(0) as u64,
            })
            .collect(),
    )
}

/// `config`'s file groups re-dealt by rows, or `None` to keep them.
fn rebalanced(config: &FileScanConfig, footers: &Footers) -> Option<Vec<FileGroup>> {
    let files = distinct_files(config);
    let mut per_file = vec![];
    for (i, file) in files.iter().enumerate() {
        let footer = footers.get(&footer_key(config, file))?;
        per_file.push(units_of(i, file.object_meta.size, footer)?);
    }

    let partitions = config.file_groups.len();
    let now = largest_share(config, &files, &per_file);
    let units: Vec<Unit> = per_file.into_iter().flatten().collect();
    let deal = deal(&units, partitions);
    let mut shares = vec![0u64; partitions];
    for (unit, &p) in units.iter().zip(&deal) {
        shares[p] += unit.rows;
    }
    if shares.iter().copied().max()? >= now {
        return None;
    }
    Some(groups(&files, &units, &deal, partitions))
}

/// The rows of the largest file group of `config` as it stands.
fn largest_share(
    config: &FileScanConfig,
    files: &[&PartitionedFile],
    per_file: &[Vec<Unit>],
) -> u64 {
    let index: HashMap<&Path, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (&f.object_meta.location, i))
        .collect();
    config
        .file_groups
        .iter()
        .map(|group| {
            group
                .iter()
                .flat_map(|f| {
                    per_file[index[&f.object_meta.location]]
                        .iter()
                        .filter(|u| f.range.as_ref().is_none_or(|r| r.contains(u.first_page)))
                })
                .map(|u| u.rows)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// The partition of each unit: by where its middle row falls among the
/// `partitions` equal shares of all rows. Monotonic, so each partition gets a
/// contiguous run of units in file order.
fn deal(units: &[Unit], partitions: usize) -> Vec<usize> {
    let total: u64 = units.iter().map(|u| u.rows).sum::<u64>().max(1);
    let mut before = 0u64;
    units
        .iter()
        .map(|u| {
            let middle = 2 * before + u.rows; // twice the middle row's position
            before += u.rows;
            let p = (middle as u128 * partitions as u128 / (2 * total as u128)) as usize;
            p.min(partitions - 1)
        })
        .collect()
}

/// The file groups of a deal: each run of consecutive units of one file in
/// one partition becomes one file (a byte range, or the whole file).
fn groups(
    files: &[&PartitionedFile],
    units: &[Unit],
    deal: &[usize],
    partitions: usize,
) -> Vec<FileGroup> {
    let mut groups: Vec<Vec<PartitionedFile>> = vec![vec![]; partitions];
    let mut i = 0;
    while i < units.len() {
        let (file, p) = (units[i].file, deal[i]);
        let mut j = i;
        while j + 1 < units.len() && units[j + 1].file == file && deal[j + 1] == p {
            j += 1;
        }
        let mut piece = files[file].clone();
        let whole = units[i].start == 0 && units[j].end == files[file].object_meta.size as i64;
        piece.range = (!whole).then(|| FileRange {
            start: units[i].start,
            end: units[j].end,
        });
        groups[p].push(piece);
        i = j + 1;
    }
    groups.into_iter().map(FileGroup::new).collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array, RecordBatch};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    use super::*;
    use crate::config::distributed_session_config;

    /// Files of uneven sizes, each of a 1,000-row and a smaller row group,
    /// as `tpch gen` writes them at scale.
    fn write_files(dir: &std::path::Path) -> i64 {
        let mut next = 0i64;
        for (f, rows) in [1_400i64, 1_400, 1_600, 1_600].into_iter().enumerate() {
            let values = Int64Array::from_iter_values(next..next + rows);
            next += rows;
            let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).unwrap();
            let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(1_000))
                .build();
            let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        next
    }

    #[tokio::test]
    async fn a_balanced_scan_reads_every_row_once_in_even_shares() {
        let dir = tempfile::tempdir().unwrap();
        let total = write_files(dir.path());
        for partitions in [2, 3, 5] {
            let mut config = distributed_session_config(partitions);
            // Split these small files by bytes as DataFusion splits big ones.
            config.options_mut().optimizer.repartition_file_min_size = 0;
            let ctx = SessionContext::new_with_config(config);
            ctx.register_parquet(
                "t",
                dir.path().to_str().unwrap(),
                ParquetReadOptions::default(),
            )
            .await
            .unwrap();
            let plan = ctx
                .sql("SELECT v FROM t WHERE v >= 0")
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let balanced = balance_scans(Arc::clone(&plan), &ctx.state())
                .await
                .unwrap();
            assert_eq!(
                balanced.properties().partitioning.partition_count(),
                plan.properties().partitioning.partition_count()
            );
            let shares: Vec<Vec<i64>> = collect_partitioned(balanced, ctx.task_ctx())
                .await
                .unwrap()
                .into_iter()
                .map(|batches| {
                    batches
                        .iter()
                        .flat_map(|b| {
                            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
                        })
                        .collect()
                })
                .collect();
            let mut all: Vec<i64> = shares.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..total).collect::<Vec<_>>(),
                "{partitions} partitions"
            );
            let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
            let (max, min) = (sizes.iter().max().unwrap(), sizes.iter().min().unwrap());
            assert!(max - min <= 1_000, "{partitions} partitions: {sizes:?}");
        }
    }

    fn unit(file: usize, rows: u64) -> Unit {
        Unit {
            file,
            first_page: 0,
            start: 0,
            end: 0,
            rows,
        }
    }

    #[test]
    fn row_groups_are_dealt_by_rows_in_order() {
        // TPC-H lineitem, 4 files of a 1 Mi-row and a smaller row group.
        let units: Vec<Unit> = (0..4)
            .flat_map(|f| [unit(f, 1_048_576), unit(f, 451_424)])
            .collect();
        assert_eq!(deal(&units, 2), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let d = deal(&units, 3);
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        let mut shares = [0u64; 3];
        for (u, &p) in units.iter().zip(&d) {
            shares[p] += u.rows;
        }
        assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1_048_576);
    }

    #[test]
    fn empty_units_and_more_partitions_than_units() {
        assert_eq!(deal(&[unit(0, 0), unit(1, 0)], 2), vec![0, 0]);
        assert_eq!(deal(&[unit(0, 5)], 4), vec![2]);
    }
}
