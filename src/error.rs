//! The client library's error type.

use tonic::{Code, Status};

/// Everything that can go wrong, by what the caller can do about it.
///
/// ```no_run
/// # async fn demo(ctx: &ember::EmberContext) {
/// match ctx.run_sql("SELECT * FROM no_such_table").await {
///     Ok(result) => println!("{}", result.num_rows()),
///     Err(ember::Error::Query(message)) => eprintln!("fix the query: {message}"),
///     Err(ember::Error::NotSupported(message)) => eprintln!("not in Ember yet: {message}"),
///     Err(ember::Error::JobFailed(message)) => eprintln!("it ran and failed: {message}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum EmberError {
    /// The scheduler could not be reached.
    #[error("cannot connect to the scheduler at {url}: {message}")]
    Connect {
        /// The scheduler URL tried.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The statement was refused (syntax, unknown table or column, ...).
    #[error("{0}")]
    Query(String),
    /// The statement is valid but Ember cannot run it.
    #[error("{0}")]
    NotSupported(String),
    /// The job ran and failed.
    #[error("query failed: {0}")]
    JobFailed(String),
    /// The job was cancelled.
    #[error("query cancelled")]
    Cancelled,
    /// Fetching the result from an executor failed.
    #[error("fetching results from executor {executor}: {message}")]
    Fetch {
        /// The executor holding the result.
        executor: String,
        /// Why the fetch failed.
        message: String,
    },
    /// The cluster refused (no executors, limits, ...).
    #[error("{0}")]
    Cluster(String),
    /// A local I/O failure (e.g. starting an embedded cluster).
    #[error("I/O error: {0}")]
    Io(String),
    /// A bug or an unexpected state; the message says where.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `Result` with [`EmberError`].
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
            Code::Internal => EmberError::Internal(
                msg.strip_prefix("internal error: ")
                    .unwrap_or(&msg)
                    .to_string(),
            ),
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
            D::NotImplemented(_) => EmberError::NotSupported(e.strip_backtrace()),
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
