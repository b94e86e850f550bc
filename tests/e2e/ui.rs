//! The web UI in a real headless browser (Debian's `chromium`): after TPC-H
//! Q5 ran on two executor processes, the job list shows the job with a link
//! to it, and the job page draws every stage of the DAG with its rows. A
//! screenshot of the job page is saved as a test artifact
//! (`target/<profile>/artifacts/ui-job.png`).
//!
//! Without chromium the test prints a loud SKIPPED line; with
//! `EMBER_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs it) it fails.

use std::path::PathBuf;
use std::process::Command;

use crate::cluster::ProcessCluster;
use crate::common::{query_text, register_tpch};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EMBER_CHROMIUM") {
        return Some(p.into());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn headless(browser: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_ui_shows_a_job_and_its_stage_dag() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("EMBER_REQUIRE_BROWSER").is_none(),
            "EMBER_REQUIRE_BROWSER is set but no chromium was found"
        );
        eprintln!("\n*** SKIPPED: the web UI test needs chromium (apt-get install chromium) ***\n");
        return;
    };
    let cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let result = ctx.run_sql(&query_text(5)).await.unwrap();
    let rows = result.num_rows() as u64;
    let status = result.job.unwrap();
    let id = status.job_id.clone();
    let http = cluster.http_url();

    // The job list: the job, with the link a user follows.
    let list = headless(&browser, &["--dump-dom", &format!("{http}/ui/")]);
    assert!(
        list.contains(&format!("data-id=\"{id}\"")),
        "job not listed:\n{list}"
    );
    let link = format!("href=\"#/jobs/{id}\"");
    assert!(list.contains(&link), "no link to the job:\n{list}");

    // The job page: every stage drawn, each with rows.
    let page = format!("{http}/ui/#/jobs/{id}");
    let dom = headless(&browser, &["--dump-dom", &page]);
    let stages: Vec<u64> = dom
        .split("data-rows=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect();
    assert_eq!(stages.len(), status.stages.len(), "stages drawn:\n{dom}");
    assert!(
        stages.iter().all(|r| *r > 0),
        "a stage without rows: {stages:?}"
    );
    assert_eq!(*stages.last().unwrap(), rows);
    assert!(dom.contains("class=\"edge\""), "no shuffle edges:\n{dom}");

    // The executors page: both, each with a link to its own metrics.
    let executors = headless(&browser, &["--dump-dom", &format!("{http}/ui/#/executors")]);
    assert_eq!(
        executors
            .matches("<tr class=\"executor\" data-id=\"exec-")
            .count(),
        2,
        "{executors}"
    );
    assert_eq!(executors.matches("/metrics\">metrics</a></td>").count(), 2);

    let exe = std::env::current_exe().unwrap();
    let artifacts = exe.parent().unwrap().parent().unwrap().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("ui-job.png");
    headless(
        &browser,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
            &page,
        ],
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("screenshot of the job page: {}", shot.display());
}
