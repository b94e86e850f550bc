//! The scheduler's error type and its mapping to gRPC statuses.

use datafusion::error::DataFusionError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown session {0}: open a new session")]
    UnknownSession(String),
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("no executors are registered: start at least one ember-executor")]
    NoExecutors,
    #[error("{0}")]
    InvalidQuery(String),
    /// Something Ember itself refuses.
    #[error("{0} is not supported by Ember yet")]
    NotSupported(String),
    /// DataFusion's "This feature is not implemented", in its words.
    #[error("{0}")]
    Unimplemented(String),
    #[error("executor registration refused: {0}")]
    Registration(String),
    #[error("limit reached: {0}")]
    LimitExceeded(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

impl From<DataFusionError> for SchedulerError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::NotImplemented(_) => {
                SchedulerError::Unimplemented(e.strip_backtrace())
            }
            DataFusionError::Internal(_) => SchedulerError::Internal(e.strip_backtrace()),
            _ => SchedulerError::InvalidQuery(e.strip_backtrace()),
        }
    }
}

impl From<ember_planner::PlannerError> for SchedulerError {
    fn from(e: ember_planner::PlannerError) -> Self {
        match e {
            ember_planner::PlannerError::DataFusion(d) => d.into(),
            other => SchedulerError::NotSupported(other.to_string()),
        }
    }
}

impl From<SchedulerError> for Status {
    fn from(e: SchedulerError) -> Self {
        let msg = e.to_string();
        match e {
            SchedulerError::UnknownSession(_) | SchedulerError::UnknownJob(_) => {
                Status::not_found(msg)
            }
            SchedulerError::NoExecutors => Status::failed_precondition(msg),
            SchedulerError::InvalidQuery(_) => Status::invalid_argument(msg),
            SchedulerError::NotSupported(_) | SchedulerError::Unimplemented(_) => {
                Status::unimplemented(msg)
            }
            SchedulerError::Registration(_) => Status::already_exists(msg),
            SchedulerError::LimitExceeded(_) => Status::resource_exhausted(msg),
            SchedulerError::Internal(_) => Status::internal(msg),
        }
    }
}
