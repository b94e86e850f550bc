//! A piece of plan decided when it is launched, from the rows a stage wrote.
//!
//! Some rewrites pay only when an input is small, and DataFusion's estimate
//! of that input can be far off: TPC-H q17 at SF 10 joins `lineitem` with
//! the parts of one brand and container, estimated at 12 M rows (a filter's
//! default selectivity), and 60 k in fact. Where a rewrite reads that input
//! from a stage of its own, the scheduler knows its true size before the
//! stage using it is launched. So the planner puts both forms in the plan:
//! a [`ChoiceExec`] over the rewritten form (`small`) and the plain one
//! (`otherwise`). Cutting the plan into stages resolves it (see
//! [`resolve`]): the stage runs the plain form unless the stage that only
//! `small` reads wrote at most `max_rows` rows, in which case it runs the
//! rewritten one (`Stage::adaptive`). The stage waits for that stage either
//! way. A `ChoiceExec` never reaches an executor.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

use crate::shuffle_reader::ShuffleReaderExec;
use crate::stages::transform_up_shared;

/// `small` where the stage only it reads wrote at most `max_rows` rows,
/// `otherwise` elsewhere (see the module). Both give the same rows.
#[derive(Debug)]
pub struct ChoiceExec {
    small: Arc<dyn ExecutionPlan>,
    otherwise: Arc<dyn ExecutionPlan>,
    max_rows: u64,
    /// Whether the planner's estimate says `small` applies: taken where no
    /// stage can decide (the input `small` reads is computed in the task).
    estimated_small: bool,
    /// Unique in the process: a choice stays itself as its children are
    /// rewritten.
    id: u64,
}

impl ChoiceExec {
    pub fn try_new(
        small: Arc<dyn ExecutionPlan>,
        otherwise: Arc<dyn ExecutionPlan>,
        max_rows: u64,
        estimated_small: bool,
    ) -> Result<Self> {
        if small.schema().fields() != otherwise.schema().fields() {
            return Err(DataFusionError::Internal(format!(
                "ChoiceExec over different schemas: {} and {}",
                small.schema(),
                otherwise.schema()
            )));
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            small,
            otherwise,
            max_rows,
            estimated_small,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        })
    }
}

impl DisplayAs for ChoiceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ChoiceExec: the first child where its input has at most {} rows",
            self.max_rows
        )
    }
}

impl ExecutionPlan for ChoiceExec {
    fn name(&self) -> &str {
        "ChoiceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        // The plain form's: the rewritten one may only claim more.
        self.otherwise.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.small, &self.otherwise]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [small, otherwise] = <[_; 2]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("ChoiceExec has 2 children, given {}", c.len()))
        })?;
        let mut choice = Self::try_new(small, otherwise, self.max_rows, self.estimated_small)?;
        choice.id = self.id;
        Ok(Arc::new(choice))
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(
            "ChoiceExec is resolved when the plan is cut into stages; it does not run".into(),
        ))
    }
}

/// A stage plan's choices resolved: `plain` with the first choice whose
/// rewritten form reads exactly one stage more taking its plain form, and
/// `adaptive` with it taking the rewritten form; every other choice takes
/// the form its estimate says in both.
pub(crate) struct Resolved {
    pub plain: Arc<dyn ExecutionPlan>,
    pub adaptive: Option<Adaptive>,
}

/// The rewritten form of a stage's plan and when to run it.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Run instead of the plain form when stage `decided_by` wrote at most
    /// `max_rows` rows (rooted at the stage's writer, like the plain form).
    pub plan: Arc<dyn ExecutionPlan>,
    /// The stage whose output decides.
    pub decided_by: u32,
    pub max_rows: u64,
}

/// Resolves the choices of `plan`, a stage's plan cut already (its
/// exchanges are readers; see the module).
pub(crate) fn resolve(plan: Arc<dyn ExecutionPlan>) -> Result<Resolved> {
    let decided = decided(&plan);
    let first = decided.map(|(c, _)| c.id);
    // The first decided choice takes `small` when `small_first`; the others
    // what their estimate says.
    let pick = |small_first: bool| {
        transform_up_shared::<DataFusionError>(Arc::clone(&plan), &mut |node| {
            let Some(c) = node.downcast_ref::<ChoiceExec>() else {
                return Ok(node);
            };
            let small = if Some(c.id) == first {
                small_first
            } else {
                c.estimated_small
            };
            Ok(Arc::clone(if small { &c.small } else { &c.otherwise }))
        })
    };
    let plain = pick(false)?;
    let adaptive = match decided {
        Some((choice, decided_by)) => Some(Adaptive {
            plan: pick(true)?,
            decided_by,
            max_rows: choice.max_rows,
        }),
        None => None,
    };
    Ok(Resolved { plain, adaptive })
}

/// The first choice in `plan` whose rewritten form reads one stage more
/// than its plain form, and that stage.
fn decided(plan: &Arc<dyn ExecutionPlan>) -> Option<(&ChoiceExec, u32)> {
    if let Some(choice) = plan.downcast_ref::<ChoiceExec>()
        && let Some(stage) = deciding_stage(choice)
    {
        return Some((choice, stage));
    }
    plan.children().into_iter().find_map(decided)
}

/// The one stage `choice`'s rewritten form reads and its plain form does
/// not, if there is one.
fn deciding_stage(choice: &ChoiceExec) -> Option<u32> {
    let mut small = BTreeSet::new();
    let mut otherwise = BTreeSet::new();
    reader_stages(&choice.small, &mut small);
    reader_stages(&choice.otherwise, &mut otherwise);
    match small.difference(&otherwise).collect::<Vec<_>>().as_slice() {
        [stage] => Some(**stage),
        _ => None,
    }
}

/// The stages `plan` reads.
pub(crate) fn reader_stages(plan: &Arc<dyn ExecutionPlan>, out: &mut BTreeSet<u32>) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        out.insert(reader.stage_id());
    }
    for child in plan.children() {
        reader_stages(child, out);
    }
}

/// `plan` with every choice taking one form (`small` or not), to run a
/// plan that was not cut into stages.
#[cfg(test)]
pub(crate) fn take(plan: Arc<dyn ExecutionPlan>, small: bool) -> Arc<dyn ExecutionPlan> {
    transform_up_shared::<DataFusionError>(plan, &mut |node| {
        Ok(match node.downcast_ref::<ChoiceExec>() {
            Some(c) if small => Arc::clone(&c.small),
            Some(c) => Arc::clone(&c.otherwise),
            None => node,
        })
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::union::UnionExec;

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]))
    }

    fn reader(stage: u32) -> Arc<dyn ExecutionPlan> {
        Arc::new(
            ShuffleReaderExec::try_new(
                stage,
                schema(),
                false,
                1,
                Partitioning::UnknownPartitioning(1),
                None,
                vec![],
            )
            .unwrap(),
        )
    }

    fn union(inputs: Vec<Arc<dyn ExecutionPlan>>) -> Arc<dyn ExecutionPlan> {
        UnionExec::try_new(inputs).unwrap()
    }

    #[test]
    fn a_choice_reading_one_stage_more_is_left_to_that_stage_the_others_to_their_estimate() {
        let plain = reader(0);
        let choice = |small: Arc<dyn ExecutionPlan>, estimated_small: bool| {
            Arc::new(ChoiceExec::try_new(small, Arc::clone(&plain), 10, estimated_small).unwrap())
                as Arc<dyn ExecutionPlan>
        };
        // Decided by stage 1; a second choice decidable too, estimated
        // small; a third reading nothing more, estimated small.
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema()));
        let plan = union(vec![
            choice(union(vec![reader(0), reader(1)]), false),
            choice(union(vec![reader(0), reader(2)]), true),
            choice(union(vec![reader(0), empty]), true),
        ]);
        let Resolved { plain, adaptive } = resolve(plan).unwrap();
        let stages = |p: &Arc<dyn ExecutionPlan>| {
            let mut s = BTreeSet::new();
            reader_stages(p, &mut s);
            s
        };
        assert_eq!(stages(&plain), BTreeSet::from([0, 2]));
        let adaptive = adaptive.unwrap();
        assert_eq!((adaptive.decided_by, adaptive.max_rows), (1, 10));
        assert_eq!(stages(&adaptive.plan), BTreeSet::from([0, 1, 2]));
        for p in [&plain, &adaptive.plan] {
            assert!(!crate::test_util::shown(p).contains("ChoiceExec"));
            assert!(crate::test_util::shown(p).contains("EmptyExec"));
        }
    }

    #[test]
    fn a_choice_needs_forms_of_one_schema() {
        let other = Arc::new(Schema::new(vec![Field::new("b", DataType::Utf8, true)]));
        let err =
            ChoiceExec::try_new(Arc::new(EmptyExec::new(other)), reader(0), 1, true).unwrap_err();
        assert!(err.to_string().contains("different schemas"), "{err}");
    }
}
