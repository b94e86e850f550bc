//! `ember-scheduler`: the Ember cluster's scheduler. (A binary with
//! user-defined functions is built the same way: see
//! [`ember_scheduler::SchedulerBuilder`].)

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ember_scheduler::SchedulerBuilder::new()
        .run_from_args()
        .await
}
