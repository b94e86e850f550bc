//! The executor's error type.

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("invalid executor configuration: {0}")]
    Config(String),
    #[error("cannot reach the scheduler at {url}: {message}")]
    SchedulerUnreachable { url: String, message: String },
    #[error("the scheduler refused registration: {0}")]
    RegistrationRefused(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;
