//! Cutting a DataFusion physical plan into a DAG of stages.
//!
//! A stage is a piece of plan that runs as one task per output partition
//! without talking to other tasks. Stages are cut at every exchange:
//!
//! * `RepartitionExec` (hash or round-robin): the input becomes a map stage
//!   whose [`ShuffleWriterExec`] splits each partition into buckets; the
//!   repartition itself is replaced by a hashed [`ShuffleReaderExec`].
//! * `CoalescePartitionsExec` / `SortPreservingMergeExec` over several
//!   partitions: the input becomes a pass-through map stage; the merge stays
//!   and reads it through a pass-through reader. A `CollectLeft` hash join's
//!   build side is such a merge, so every join task reads the whole build
//!   side: a broadcast.
//!
//! The root of the plan becomes the final stage, written pass-through; the
//! client streams its partitions in order.
//!
//! ```text
//!   SortPreservingMergeExec              stage 2: SortPreservingMerge
//!     SortExec                                      └ Reader(stage 1, pass-through)
//!       AggregateExec(final)       ──▶   stage 1: Writer(pass-through)
//!         RepartitionExec(hash)                     └ Sort └ Aggregate(final)
//!           AggregateExec(partial)                      └ Reader(stage 0, hashed)
//!             DataSourceExec             stage 0: Writer(hash) └ Aggregate(partial) └ Scan
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::physical_expr::ConstExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, displayable,
    replace_children_if_necessary,
};

use crate::aggregate_prefilter::prefilter_aggregates;
use crate::choice::{self, Adaptive, Resolved, reader_stages};
use crate::config::EmberOptions;
use crate::distinct_exchange::one_exchange_distinct;
use crate::error::Result;
use crate::finish_here::FinishHere;
use crate::joins::{JoinOptions, distribute_joins};
use crate::one_task_scans::in_one_task;
use crate::result_merge::ResultMerge;
use crate::shuffle_reader::ShuffleReaderExec;
use crate::shuffle_writer::ShuffleWriterExec;
use crate::small_scans::read_small_scans_in_task;
use crate::write::{FileWriteExec, WriteTarget, distribute_write};
use datafusion::error::DataFusionError;

/// One stage of a job.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: u32,
    /// Root is always a [`ShuffleWriterExec`].
    pub plan: Arc<dyn ExecutionPlan>,
    /// Number of tasks (= output partitions of the plan under the writer).
    pub partitions: usize,
    /// Buckets each task writes.
    pub buckets: usize,
    /// Stages whose output this stage reads (either form of its plan).
    pub inputs: BTreeSet<u32>,
    /// The form of the plan to run instead when an input turned out small
    /// (see [`crate::choice`]).
    pub adaptive: Option<Adaptive>,
}

/// How [`StageDag::cut`] distributes a plan before cutting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutOptions {
    pub joins: JoinOptions,
    /// Distinct aggregates over small inputs planned with one exchange
    /// instead of two ([`crate::distinct_exchange`]).
    pub one_exchange_distinct: bool,
    /// Small bare scans that every task of a stage reads whole read by
    /// each task, not by a stage of their own ([`crate::small_scans`]).
    pub small_scans_in_task: bool,
    /// Aggregates a broadcast join mostly drops fed only the rows of groups
    /// it can keep ([`crate::aggregate_prefilter`]).
    pub prefilter_aggregates: bool,
    /// A stage that only scans at most this many rows runs as one task
    /// ([`crate::one_task_scans`]; 0: as many as the scan's partitions).
    pub one_task_scan_max_rows: usize,
}

impl CutOptions {
    /// `partitions`, with the rewrites as a session's `ember.*` settings say.
    pub fn new(partitions: usize, ember: &EmberOptions) -> Self {
        Self {
            joins: JoinOptions {
                partitions,
                reduce_semi_joins: ember.reduce_semi_joins,
            },
            one_exchange_distinct: ember.one_exchange_distinct,
            small_scans_in_task: ember.small_scans_in_task,
            prefilter_aggregates: ember.prefilter_aggregates,
            one_task_scan_max_rows: ember.one_task_scan_max_rows,
        }
    }
}

impl From<usize> for CutOptions {
    /// `partitions` with the default settings (every rewrite on).
    fn from(partitions: usize) -> Self {
        Self::new(partitions, &EmberOptions::default())
    }
}

/// The stages of one query, inputs before the stages that read them.
#[derive(Debug, Clone)]
pub struct StageDag {
    stages: Vec<Stage>,
    /// Set when the job writes files (see [`crate::write`]).
    write: Option<WriteTarget>,
    /// Set when the client merges the final stage's sorted partitions
    /// (see [`StageDag::merge_on_client`]).
    result_merge: Option<ResultMerge>,
}

impl StageDag {
    /// Cuts `plan` into stages. Stage ids are 0.. in dependency order; the
    /// last stage is the final one. Joins that cannot run split into tasks are
    /// first rewritten (see [`distribute_joins`]) as `options.joins` says
    /// (with the session's target partitions for the shuffles they need),
    /// then small distinct aggregates given one exchange where
    /// `options` allows (see [`one_exchange_distinct`]), and small scans
    /// every task reads whole read in each task (see
    /// [`read_small_scans_in_task`]), and aggregates a broadcast join
    /// mostly drops fed only the rows it can keep (see
    /// [`prefilter_aggregates`]).
    /// A file write becomes a write stage first (see [`distribute_write`]).
    pub fn cut(plan: Arc<dyn ExecutionPlan>, options: impl Into<CutOptions>) -> Result<Self> {
        let plan = distribute_write(plan)?;
        let options = options.into();
        let plan = distribute_joins(plan, options.joins)?;
        let plan = if options.one_exchange_distinct {
            one_exchange_distinct(plan)?
        } else {
            plan
        };
        let plan = if options.small_scans_in_task {
            read_small_scans_in_task(plan, options.joins.partitions)?
        } else {
            plan
        };
        let plan = if options.prefilter_aggregates {
            prefilter_aggregates(plan)?
        } else {
            plan
        };
        let mut cutter = Cutter {
            stages: vec![],
            one_task_scan_max_rows: options.one_task_scan_max_rows,
        };
        let root = cutter.visit(plan)?;
        cutter.add_stage(root, None)?;
        let write = cutter
            .stages
            .iter()
            .find_map(|s| find_writer(&s.plan).map(|w| w.target(s.id)));
        Ok(Self {
            stages: cutter.stages,
            write,
            result_merge: None,
        })
    }

    /// Hands the query's last merge to the client (see [`ResultMerge`]):
    /// when the final stage only merges the sorted partitions of the stage
    /// before it, by plain columns, that stage becomes the final one and
    /// the merge is returned, for the client to do. Otherwise nothing
    /// changes. Only for jobs whose result a client reads through
    /// [`ResultMerge::merge`].
    pub fn merge_on_client(&mut self) -> Option<&ResultMerge> {
        if self.write.is_some() || self.result_merge.is_some() || self.stages.len() < 2 {
            return self.result_merge.as_ref();
        }
        let last = self.final_stage();
        let merge = last
            .plan
            .children()
            .first()
            .and_then(|p| p.downcast_ref::<SortPreservingMergeExec>())?;
        let reader = merge.input().downcast_ref::<ShuffleReaderExec>()?;
        let input = &self.stages[self.stages.len() - 2];
        // The merge reads, pass-through, every partition of the stage just
        // before it, and nothing else.
        if reader.hashed() || reader.stage_id() != input.id || input.buckets != 1 {
            return None;
        }
        let result_merge = ResultMerge::of(merge)?;
        self.stages.pop();
        self.result_merge = Some(result_merge);
        self.result_merge.as_ref()
    }

    /// Takes a one-row aggregate's last step off the cluster (see
    /// [`FinishHere`]): when the final stage only finishes the aggregate
    /// over the partial rows of the stage before it, that stage becomes the
    /// final one and the step is returned, for whoever reads the result to
    /// run. Otherwise nothing changes. Only for jobs whose result the
    /// scheduler reads (a scalar subquery's).
    pub fn finish_here(&mut self) -> Option<FinishHere> {
        if self.write.is_some() || self.result_merge.is_some() || self.stages.len() < 2 {
            return None;
        }
        let last = self.final_stage();
        let input = &self.stages[self.stages.len() - 2];
        let reads_only_input = last.inputs.len() == 1 && last.inputs.contains(&input.id);
        if !reads_only_input || input.buckets != 1 || last.adaptive.is_some() {
            return None;
        }
        let step = FinishHere::of(last.plan.children().first()?, input.id)?;
        self.stages.pop();
        Some(step)
    }

    /// The merge the client does, if [`merge_on_client`](Self::merge_on_client)
    /// handed it one.
    pub fn result_merge(&self) -> Option<&ResultMerge> {
        self.result_merge.as_ref()
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Where the job's files go, if it writes any.
    pub fn write_target(&self) -> Option<&WriteTarget> {
        self.write.as_ref()
    }

    pub fn final_stage(&self) -> &Stage {
        // `cut` always adds the final stage last, so there is at least one.
        &self.stages[self.stages.len() - 1]
    }

    /// The DAG as text, for `EXPLAIN`: one block per stage, final stage first.
    pub fn display(&self, verbose: bool) -> String {
        self.display_annotated(verbose, |_| None)
    }

    /// Like [`display`](Self::display), with a line of `annotate(stage id)`
    /// (e.g. run-time metrics) under each stage's header.
    pub fn display_annotated(
        &self,
        verbose: bool,
        annotate: impl Fn(u32) -> Option<String>,
    ) -> String {
        let mut out = String::new();
        if let Some(merge) = &self.result_merge {
            let _ = writeln!(
                out,
                "Client: merges the {} sorted partitions of stage {}",
                self.final_stage().partitions,
                self.final_stage().id
            );
            let _ = writeln!(out, "  {}", merge.display());
        }
        for stage in self.stages.iter().rev() {
            let reads = if stage.inputs.is_empty() {
                "reads from: sources".to_string()
            } else {
                let ids: Vec<String> = stage.inputs.iter().map(|i| format!("stage {i}")).collect();
                format!("reads from: {}", ids.join(", "))
            };
            let role = if stage.id as usize + 1 == self.stages.len() {
                "final".to_string()
            } else {
                format!("{} bucket(s) per task", stage.buckets)
            };
            let _ = writeln!(
                out,
                "Stage {} [{} task(s), {role}] {reads}",
                stage.id, stage.partitions
            );
            if let Some(note) = annotate(stage.id) {
                let _ = writeln!(out, "  -- {note}");
            }
            for line in stage.plan_text(verbose).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

impl Stage {
    /// The stage's plan as text, and its rewritten form if it has one.
    pub fn plan_text(&self, verbose: bool) -> String {
        let mut text = displayable(self.plan.as_ref()).indent(verbose).to_string();
        if let Some(a) = &self.adaptive {
            let _ = writeln!(
                text,
                "-- if stage {} writes at most {} rows, each task runs instead:",
                a.decided_by, a.max_rows
            );
            let body = displayable(a.plan.as_ref()).indent(verbose).to_string();
            for line in body.lines() {
                let _ = writeln!(text, "  {line}");
            }
        }
        text
    }
}

/// `TreeNode::transform_up` for plans in which one node may stand in
/// several places (an exchange [`crate::semi_reduction`] reads both whole
/// and hashed, cut once by pointer): each node is rewritten once, and
/// what stood in several places still does, as one node.
pub(crate) fn transform_up_shared<E: From<DataFusionError>>(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: &mut impl FnMut(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, E>,
) -> Result<Arc<dyn ExecutionPlan>, E> {
    transform_up_shared_within(plan, &|_| true, rewrite)
}

/// [`transform_up_shared`] that goes below a node only where `descend`
/// says so (the node itself is still rewritten).
fn transform_up_shared_within<E: From<DataFusionError>>(
    plan: Arc<dyn ExecutionPlan>,
    descend: &impl Fn(&Arc<dyn ExecutionPlan>) -> bool,
    rewrite: &mut impl FnMut(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, E>,
) -> Result<Arc<dyn ExecutionPlan>, E> {
    type Done = Vec<(Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>)>;
    fn visit<E: From<DataFusionError>>(
        plan: Arc<dyn ExecutionPlan>,
        descend: &impl Fn(&Arc<dyn ExecutionPlan>) -> bool,
        rewrite: &mut impl FnMut(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, E>,
        done: &mut Done,
    ) -> Result<Arc<dyn ExecutionPlan>, E> {
        if let Some((_, out)) = done.iter().find(|(p, _)| Arc::ptr_eq(p, &plan)) {
            return Ok(Arc::clone(out));
        }
        let node = if descend(&plan) {
            let children = plan
                .children()
                .into_iter()
                .map(|c| visit(Arc::clone(c), descend, rewrite, done))
                .collect::<Result<Vec<_>, E>>()?;
            replace_children_if_necessary(Arc::clone(&plan), children)?
        } else {
            Arc::clone(&plan)
        };
        let out = rewrite(node)?;
        // The original is kept, so no other node takes its address.
        done.push((plan, Arc::clone(&out)));
        Ok(out)
    }
    visit(plan, descend, rewrite, &mut Done::new())
}

struct Cutter {
    stages: Vec<Stage>,
    /// See [`CutOptions::one_task_scan_max_rows`].
    one_task_scan_max_rows: usize,
}

impl Cutter {
    /// Rewrites `plan` bottom-up, turning every exchange below it into a
    /// stage boundary. A node that stands in two places of the plan (an
    /// exchange `semi_reduction` reads both hashed and whole, a broadcast
    /// `aggregate_prefilter` reads again) is rewritten once: one stage,
    /// two readers.
    fn visit(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        // A recursive query re-runs its recursive term until it is empty,
        // inside one task: nothing below it becomes a stage (its exchanges
        // run in the task, as in single-process DataFusion).
        transform_up_shared_within(
            plan,
            &|p| p.downcast_ref::<RecursiveQueryExec>().is_none(),
            &mut |node| self.cut(node),
        )
    }

    /// `plan` (its children cut already) as a stage's reader if it is an
    /// exchange, or as a merge over one if it merges several partitions.
    fn cut(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            let input = self.tasks_for(Arc::clone(repartition.input()))?;
            let partitioning = repartition.partitioning().clone();
            let map_partitions = input.output_partitioning().partition_count();
            let schema = input.schema();
            let declared = match &partitioning {
                Partitioning::Hash(..) => partitioning.clone(),
                other => Partitioning::UnknownPartitioning(other.partition_count()),
            };
            // An order-preserving exchange (or one with a single input
            // partition, which keeps its order): the reader merges sorted
            // buckets.
            let ordering = repartition.maintains_input_order()[0]
                .then(|| input.output_ordering().cloned())
                .flatten();
            let constants = trusted_constants(&input);
            let stage_id = self.add_stage(input, Some(partitioning))?;
            let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::try_new(
                stage_id,
                schema,
                true,
                map_partitions,
                declared,
                ordering,
                constants,
            )?);
            return Ok(reader);
        }

        let is_merge = plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
        if is_merge {
            let input = Arc::clone(plan.children()[0]);
            let map_partitions = input.output_partitioning().partition_count();
            // A merge straight over an exchange reads all of it in its task.
            let over_reader = input.downcast_ref::<ShuffleReaderExec>().is_some();
            if map_partitions > 1 && !over_reader {
                let input = self.tasks_for(input)?;
                let map_partitions = input.output_partitioning().partition_count();
                let schema = input.schema();
                let ordering = input.output_ordering().cloned();
                let constants = trusted_constants(&input);
                let stage_id = self.add_stage(input, None)?;
                let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::try_new(
                    stage_id,
                    schema,
                    false,
                    map_partitions,
                    Partitioning::UnknownPartitioning(map_partitions),
                    ordering,
                    constants,
                )?);
                return Ok(replace_children_if_necessary(plan, vec![reader])?);
            }
        }
        Ok(plan)
    }

    /// `input`, about to become a stage, in one partition if it only scans
    /// a few rows (see [`crate::one_task_scans`]).
    fn tasks_for(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(in_one_task(&input, self.one_task_scan_max_rows)?.unwrap_or(input))
    }

    fn add_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Option<Partitioning>,
    ) -> Result<u32> {
        let id = self.stages.len() as u32;
        let Resolved { plain, adaptive } = choice::resolve(input)?;
        // The rewritten form stands in for the plain one only where it
        // gives its readers as much: as many partitions, as ordered. (The
        // writer makes the stage's output partitioning.)
        let adaptive = adaptive.filter(|a| {
            a.plan.output_ordering() == plain.output_ordering()
                && a.plan.output_partitioning().partition_count()
                    == plain.output_partitioning().partition_count()
        });
        let mut inputs = BTreeSet::new();
        reader_stages(&plain, &mut inputs);
        let partitions = plain.output_partitioning().partition_count();
        let adaptive = match adaptive {
            Some(a) => {
                reader_stages(&a.plan, &mut inputs);
                let writer = ShuffleWriterExec::try_new(id, a.plan, partitioning.clone())?;
                Some(Adaptive {
                    plan: Arc::new(writer),
                    ..a
                })
            }
            None => None,
        };
        let writer = ShuffleWriterExec::try_new(id, plain, partitioning)?;
        let buckets = writer.buckets();
        self.stages.push(Stage {
            id,
            plan: Arc::new(writer),
            partitions,
            buckets,
            inputs,
            adaptive,
        });
        Ok(id)
    }
}

/// The constant expressions of a stage's output a reader may declare.
/// DataFusion 55 keeps a filter's constant across an aggregate with grouping
/// sets, which nulls that very column in some sets (`WHERE c = 'x' GROUP BY
/// GROUPING SETS ((c), ())`); an aggregate above a reader declaring it would
/// stream its groups as if sorted and emit one group twice. Below such an
/// aggregate, nothing is declared constant.
fn trusted_constants(input: &Arc<dyn ExecutionPlan>) -> Vec<ConstExpr> {
    fn has_grouping_sets(plan: &Arc<dyn ExecutionPlan>) -> bool {
        plan.downcast_ref::<AggregateExec>()
            .is_some_and(|a| a.group_expr().has_grouping_set())
            || plan.children().into_iter().any(has_grouping_sets)
    }
    if has_grouping_sets(input) {
        vec![]
    } else {
        input.equivalence_properties().constants()
    }
}

fn find_writer(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileWriteExec> {
    plan.downcast_ref::<FileWriteExec>()
        .or_else(|| plan.children().into_iter().find_map(find_writer))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, RecordBatch};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn dag(sql: &str) -> StageDag {
        let ctx = SessionContext::new_with_config(crate::config::distributed_session_config(2));
        let batch = |a: Vec<i32>| {
            RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(a)) as ArrayRef)]).unwrap()
        };
        let t = MemTable::try_new(
            batch(vec![]).schema(),
            vec![
                vec![batch((0..10).collect())],
                vec![batch((5..20).collect())],
            ],
        )
        .unwrap();
        ctx.register_table("t", Arc::new(t)).unwrap();
        let plan = crate::test_util::physical_plan(&ctx, sql).await;
        StageDag::cut(plan, 2).unwrap()
    }

    #[tokio::test]
    async fn a_final_merge_by_columns_is_handed_to_the_client_with_its_limit() {
        let mut dag =
            dag("SELECT a, count(*) AS c FROM t GROUP BY a ORDER BY c DESC, a LIMIT 3").await;
        let stages = dag.stages().len();
        let merge = dag.merge_on_client().cloned().unwrap();
        assert_eq!(dag.stages().len(), stages - 1);
        let names: Vec<(&str, bool)> = merge
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.descending))
            .collect();
        assert_eq!(names, [("c", true), ("a", false)]);
        assert_eq!(merge.fetch, Some(3));
        // The new final stage writes its sorted partitions as they are.
        assert_eq!(dag.final_stage().buckets, 1);
        assert_eq!(dag.final_stage().partitions, 2);
        assert!(
            dag.display(false)
                .starts_with("Client: merges the 2 sorted partitions")
        );
        // Asking again changes nothing.
        assert_eq!(dag.merge_on_client(), Some(&merge));
        assert_eq!(dag.stages().len(), stages - 1);
    }

    #[tokio::test]
    async fn a_one_row_aggregates_last_step_is_finished_from_the_partial_rows() {
        let mut dag = dag("SELECT avg(a) * 2 AS v, count(*) AS n FROM t").await;
        let stages = dag.stages().len();
        let step = dag.finish_here().unwrap();
        assert_eq!(dag.stages().len(), stages - 1);
        assert_eq!(dag.final_stage().partitions, 2);
        // What the new final stage's tasks write: one partial row each.
        let ctx = SessionContext::new();
        let partial = Arc::clone(dag.final_stage().plan.children()[0]);
        let mut rows = vec![];
        for p in 0..2 {
            let stream = partial.execute(p, ctx.task_ctx()).unwrap();
            rows.extend(
                datafusion::physical_plan::common::collect(stream)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        let out = step.run(rows, ctx.task_ctx()).await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        // 0..10 and 5..20: 225 over 25 rows.
        assert!(text.contains("| 18.0 | 25 |"), "{text}");
        // Asking again changes nothing.
        assert!(dag.finish_here().is_none());
        assert_eq!(dag.stages().len(), stages - 1);
    }

    #[tokio::test]
    async fn other_final_stages_stay_on_the_cluster() {
        for sql in [
            "SELECT a, count(*) FROM t GROUP BY a",
            "SELECT count(*) FROM t",
            // A sort by an expression: the client evaluates none.
            "SELECT a FROM t ORDER BY a % 7, a",
        ] {
            let mut dag = dag(sql).await;
            let stages = dag.stages().len();
            assert!(
                dag.merge_on_client().is_none(),
                "{sql}\n{}",
                dag.display(false)
            );
            assert_eq!(dag.stages().len(), stages, "{sql}");
        }
        // Grouped, or more than the aggregate: the cluster finishes it.
        for sql in [
            "SELECT a, count(*) FROM t GROUP BY a",
            "SELECT count(*) FROM t ORDER BY 1",
            "SELECT count(*) FROM t UNION ALL SELECT max(a) FROM t",
            // Partial states as large as the input.
            "SELECT array_agg(a) FROM t",
        ] {
            let mut dag = dag(sql).await;
            let stages = dag.stages().len();
            assert!(dag.finish_here().is_none(), "{sql}\n{}", dag.display(false));
            assert_eq!(dag.stages().len(), stages, "{sql}");
        }
    }
}
