//! `ember-executor`: runs Ember tasks for a scheduler. (A binary with
//! user-defined functions is built the same way: see
//! [`ember_executor::ExecutorBuilder`].)

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ember_executor::ExecutorBuilder::new().run_from_args().await
}
