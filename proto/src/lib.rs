//! Ember's wire protocol: the prost messages and tonic services generated from
//! `proto/ember.proto`.
//!
//! This crate is the only thing the scheduler and the executor share: neither
//! imports the other, they meet here. It holds no logic beyond small
//! conveniences on the generated types and the transport (TCP_NODELAY on
//! accepted sockets, counting calls answered with an error).

#![allow(clippy::all, missing_docs)]

/// Generated code of package `ember.v1`.
pub mod v1 {
    tonic::include_proto!("ember.v1");
}

pub use v1::*;

mod grpc_errors;
pub use grpc_errors::{CountErrors, CountErrorsLayer, OnGrpcError};

/// Default cap on one gRPC message, both directions (64 MiB). Plans, inline
/// results and task updates larger than this are refused with a clear error.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Cap on the Arrow IPC size of an in-memory table a client registers
/// (`EmberContext::register_batch`, 16 MiB): such data travels inside every
/// stage plan that reads it. Larger data belongs in files.
pub const MAX_REGISTERED_TABLE_BYTES: usize = 16 * 1024 * 1024;

impl TaskId {
    /// A short human-readable form, `job/stage.stage_attempt/partition#attempt`.
    pub fn display(&self) -> String {
        format!(
            "{}/{}.{}/{}#{}",
            self.job_id, self.stage_id, self.stage_attempt, self.partition, self.attempt
        )
    }
}

/// Accepted connections of `listener` with `TCP_NODELAY` set, for
/// `Server::serve_with_incoming*`. (tonic applies its own nodelay setting
/// only to listeners it binds itself; without this, small RPCs and Flight
/// messages wait on delayed ACKs, tens of milliseconds each.)
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
