//! Errors of the planner crate, and the typed fetch failure that must survive
//! DataFusion's error wrapping so the scheduler can recompute lost map outputs.

use std::error::Error as StdError;

use datafusion::error::DataFusionError;

/// What can go wrong while cutting or (de)serializing a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("cannot distribute this plan: {0}")]
    Unsupported(String),
    #[error("plan serialization failed: {0}")]
    Serialization(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = PlannerError> = std::result::Result<T, E>;

/// Reading a map output failed because its owner is gone or no longer has it.
///
/// Raised by the shuffle reader inside a `DataFusionError::External`; the
/// executor digs it out with [`find_fetch_failure`] and reports it as a typed
/// `FetchFailed` so the scheduler recomputes exactly that map output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fetch of stage {map_stage} map partition {map_partition} (attempt {map_attempt}) from executor {executor_id} failed: {message}"
)]
pub struct FetchFailedError {
    pub executor_id: String,
    pub map_stage: u32,
    pub map_partition: u32,
    /// The attempt whose output could not be read: only that attempt's
    /// output may be invalidated because of this failure.
    pub map_attempt: u64,
    /// The owner could not be reached at all (refused or broken connection).
    pub unreachable: bool,
    pub message: String,
}

impl From<FetchFailedError> for DataFusionError {
    fn from(e: FetchFailedError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// Finds a [`FetchFailedError`] anywhere in `err`'s chain of causes, however
/// DataFusion wrapped it (context, shared, external, arrow errors).
pub fn find_fetch_failure(err: &(dyn StdError + 'static)) -> Option<FetchFailedError> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(f) = e.downcast_ref::<FetchFailedError>() {
            return Some(f.clone());
        }
        if let Some(DataFusionError::External(inner)) = e.downcast_ref::<DataFusionError>()
            && let Some(f) = inner.downcast_ref::<FetchFailedError>()
        {
            return Some(f.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn failure() -> FetchFailedError {
        FetchFailedError {
            executor_id: "e1".into(),
            map_stage: 2,
            map_partition: 3,
            map_attempt: 7,
            unreachable: true,
            message: "connection refused".into(),
        }
    }

    #[test]
    fn fetch_failure_is_found_through_datafusion_wrapping() {
        let wrapped = DataFusionError::Shared(Arc::new(
            DataFusionError::from(failure()).context("while reading shuffle"),
        ));
        assert_eq!(find_fetch_failure(&wrapped), Some(failure()));
    }

    #[test]
    fn other_errors_are_not_fetch_failures() {
        let e = DataFusionError::Execution("division by zero".into());
        assert_eq!(find_fetch_failure(&e), None);
    }
}
