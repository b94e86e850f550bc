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

/// HTTP/2 frame size and flow-control windows for connections that carry
/// Arrow Flight data (shuffle buckets between executors, results to
/// clients). With h2's defaults (16 KiB frames, a 2 MiB stream window) a
/// 2 MiB IPC message crosses as 128 frames, each its own write and read
/// system call; larger frames and windows let it cross in a few.
pub const DATA_MAX_FRAME_BYTES: u32 = 1 << 20;
/// See [`DATA_MAX_FRAME_BYTES`].
pub const DATA_STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// See [`DATA_MAX_FRAME_BYTES`].
pub const DATA_CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// An endpoint for fetching Arrow Flight data from `http://{address}`:
/// TCP_NODELAY, a 5 s connect timeout, and the frame size and windows above.
pub fn data_endpoint(address: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .max_frame_size(DATA_MAX_FRAME_BYTES)
            .initial_stream_window_size(DATA_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(DATA_CONNECTION_WINDOW_BYTES),
    )
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
