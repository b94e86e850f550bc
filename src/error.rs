//! The client library's error type.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum EmberError {
    /// The scheduler could not be reached.
    #[error("cannot connect to the scheduler at {url}: {message}")]
    Connect { url: String, message: String },
    /// The statement was refused (syntax, unknown table or column, ...).
    #[error("{0}")]
    Query(String),
    /// The statement is valid but Ember cannot run it.
    #[error("{0}")]
    NotSupported(String),
    /// The job ran and failed.
    #[error("query failed: {0}")]
    JobFailed(String),
    #[error("query cancelled")]
    Cancelled,
    /// Fetching the result from an executor failed.
    #[error("fetching results from executor {executor}: {message}")]
    Fetch { executor: String, message: String },
    /// The cluster refused (no executors, limits, ...).
    #[error("{0}")]
    Cluster(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = EmberError> = std::result::Result<T, E>;

impl From<Status> for EmberError {
    fn from(s: Status) -> Self {
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::NotFound => EmberError::Query(msg),
            Code::Unimplemented => EmberError::NotSupported(msg),
            Code::FailedPrecondition | Code::ResourceExhausted | Code::AlreadyExists => {
                EmberError::Cluster(msg)
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                EmberError::Cluster(format!("the scheduler is unavailable: {msg}"))
            }
            Code::OutOfRange => EmberError::Cluster(msg),
            // A connection that broke mid-call (the scheduler died).
            Code::Unknown if msg.contains("transport") || msg.contains("h2") => {
                EmberError::Cluster(format!("lost the connection to the scheduler: {msg}"))
            }
            _ => EmberError::Internal(format!("{:?}: {msg}", s.code())),
        }
    }
}

impl From<datafusion::error::DataFusionError> for EmberError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        // An error the cluster reported, carried through DataFusion's stream.
        let e = match e {
            D::External(inner) => match inner.downcast::<EmberError>() {
                Ok(ember) => return *ember,
                Err(inner) => D::External(inner),
            },
            other => other,
        };
        match e.find_root() {
            D::NotImplemented(m) => EmberError::NotSupported(m.clone()),
            D::Plan(_) | D::SchemaError(..) | D::SQL(..) => EmberError::Query(e.strip_backtrace()),
            _ => EmberError::Internal(e.strip_backtrace()),
        }
    }
}

impl From<arrow::error::ArrowError> for EmberError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EmberError::Internal(e.to_string())
    }
}
