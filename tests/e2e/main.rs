//! Ember's end-to-end tests: one test binary (DataFusion links once), one
//! module per concern. Clusters are real: an embedded cluster talks gRPC and
//! Flight over loopback exactly like separate processes, and `processes`
//! spawns the real `ember-scheduler` / `ember-executor` binaries.

mod bad_input;
mod cluster;
mod common;
mod dataframe;
mod differential;
mod observe;
mod processes;
mod recovery;
mod s3;
mod shell;
mod shuffle;
mod streaming;
mod tpch;
mod udfs;
mod ui;
mod writes;
