//! Parquet on a real S3-compatible server (moto, started by these tests
//! from `scripts/s3-local.sh`'s venv): TPC-H from `s3://` tables on a cluster
//! of processes, writes published exactly once, and failures (missing
//! bucket, server down or hanging, corrupt object) that end in clear errors
//! with the cluster still serving.
//!
//! Without a server these tests print a loud SKIPPED line; with
//! `EMBER_REQUIRE_S3=1` (set by `.ci/run`) they fail instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ember::EmberContext;
use ember::datafusion::object_store::aws::AmazonS3Builder;
use ember::datafusion::object_store::path::Path as ObjectPath;
use ember::datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use futures::TryStreamExt;

use crate::cluster::{ProcessCluster, free_port};
use crate::common::{assert_same, oracle_rows, query_text, rows, tpch_dir};

/// A running S3-compatible server.
pub struct S3Server {
    pub endpoint: String,
}

fn required() -> bool {
    std::env::var_os("EMBER_REQUIRE_S3").is_some_and(|v| v != "0")
}

/// The server for this test run: the one the environment names
/// (`AWS_ENDPOINT_URL`), else a moto server started once for the whole
/// run and stopped when this process exits.
pub fn server() -> Option<&'static S3Server> {
    static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let started = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(endpoint) => Ok(S3Server { endpoint }),
            Err(_) => start_moto(),
        };
        match started {
            Ok(s) => Some(s),
            Err(e) if required() => panic!("no S3 server and EMBER_REQUIRE_S3 is set: {e}"),
            Err(e) => {
                eprintln!(
                    "\n*** SKIPPED: S3 tests need an S3-compatible server and none could be \
                     started ({e}). Install python3 with venv/pip, or set AWS_ENDPOINT_URL. ***\n"
                );
                None
            }
        }
    });
    server.as_ref()
}

fn start_moto() -> Result<S3Server, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/s3-local.sh");
    let venv = std::env::var("S3_VENV").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/s3-local-venv")
    });
    let install = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && s3_install", script.display()))
        .env("S3_VENV", &venv)
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !install.status.success() {
        return Err(format!(
            "installing moto failed: {}",
            String::from_utf8_lossy(&install.stderr)
        ));
    }
    let port = free_port();
    // The server dies with this test process: a watcher kills it once the
    // parent pid is gone.
    let me = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{venv}/bin/moto_server' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {me} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; kill $m"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting moto: {e}"))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&endpoint, "GET", "/moto-api/").is_err() {
        if Instant::now() > deadline {
            return Err("moto did not answer within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(S3Server { endpoint })
}

/// A bare HTTP/1.1 request (moto accepts unsigned ones); returns the status.
fn http(endpoint: &str, method: &str, path: &str) -> Result<u16, String> {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .map_err(|e| format!("bad status: {e}"))
}

impl S3Server {
    /// Creates a fresh bucket for one test (unique to this run: a server
    /// named by the environment may outlive it).
    pub fn bucket(&self, name: &str) -> String {
        let name = format!("{name}-{}", std::process::id());
        let status = http(&self.endpoint, "PUT", &format!("/{name}")).expect("create bucket");
        assert!(status < 300, "create bucket {name}: HTTP {status}");
        name
    }

    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .expect("S3 client"),
        )
    }

    /// Copies a local directory tree under `prefix` in `bucket`.
    pub async fn upload(&self, bucket: &str, local: &Path, prefix: &str) {
        let store = self.store(bucket);
        let mut stack = vec![local.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(local).unwrap().display().to_string();
                let bytes = std::fs::read(&path).unwrap();
                store
                    .put(
                        &ObjectPath::from(format!("{prefix}/{rel}")),
                        PutPayload::from(bytes),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store(bucket)
            .list(Some(&ObjectPath::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// `SET` statements pointing a session at this server.
    pub async fn configure(&self, ctx: &EmberContext, secret: &str) {
        for (k, v) in [
            ("endpoint", self.endpoint.as_str()),
            ("region", "us-east-1"),
            ("access_key_id", "test"),
            ("secret_access_key", secret),
            ("allow_http", "true"),
        ] {
            ctx.run_sql(&format!("SET ember.s3.{k} = '{v}'"))
                .await
                .unwrap();
        }
    }
}

async fn register_s3_tpch(ctx: &EmberContext, bucket: &str) {
    for t in ember::tpch::TABLES {
        ctx.run_sql(&format!(
            "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION 's3://{bucket}/tpch/{t}/'"
        ))
        .await
        .unwrap_or_else(|e| panic!("register s3 table {t}: {e}"));
    }
}

/// TPC-H from `s3://` tables on two executor processes equals the answers
/// over local files; the data goes from the store to the executors only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_queries_over_s3_tables_equal_the_local_answers() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("tpch-read");
    s3.upload(&bucket, tpch_dir(), "tpch").await;
    let cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    s3.configure(&ctx, "test").await;
    register_s3_tpch(&ctx, &bucket).await;
    for q in [1, 3, 5, 9, 18] {
        let sql = query_text(q);
        let got = ctx
            .run_sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("q{q} over s3: {e}"));
        assert_same(
            &format!("q{q} over s3"),
            rows(&got.batches),
            oracle_rows(&sql).await,
            true,
        );
    }
}

/// COPY and `write_parquet` to `s3://` run on the executors and publish
/// exactly the accepted attempts' objects; no staging object is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_to_s3_round_trip() {
    use ember::prelude::*;
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("writes");
    s3.upload(&bucket, &tpch_dir().join("orders"), "tpch/orders")
        .await;
    let cluster = ProcessCluster::start(2, "fail@task-end:stage=0:times=1", &[]);
    let ctx = cluster.session(2).await;
    s3.configure(&ctx, "test").await;
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION 's3://{bucket}/tpch/orders/'"
    ))
    .await
    .unwrap();
    let sql = "SELECT o_orderkey, o_custkey, o_totalprice FROM orders WHERE o_totalprice > 100000";
    let expected = oracle_rows(sql).await;
    // The first write task fails once after writing its objects: retried.
    let n = ctx
        .run_sql(&format!(
            "COPY ({sql}) TO 's3://{bucket}/out/copy/' STORED AS PARQUET"
        ))
        .await
        .unwrap();
    assert_eq!(rows(&n.batches), vec![vec![expected.len().to_string()]]);
    let keys = s3.keys(&bucket, "out/copy").await;
    assert!(keys.len() > 1, "written in parallel: {keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains(".ember-staging")),
        "staging left behind: {keys:?}"
    );
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE copied STORED AS PARQUET LOCATION 's3://{bucket}/out/copy/'"
    ))
    .await
    .unwrap();
    let back = ctx.run_sql("SELECT * FROM copied").await.unwrap();
    assert_same("COPY to s3", rows(&back.batches), expected.clone(), false);

    let df_out = format!("s3://{bucket}/out/df/");
    ctx.sql(sql)
        .await
        .unwrap()
        .write_parquet(&df_out, DataFrameWriteOptions::new(), None)
        .await
        .unwrap();
    let back = ctx
        .read_parquet(&df_out, ParquetReadOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_same("write_parquet to s3", rows(&back), expected, false);
}

/// Every way the store can fail ends in a clear error, bounded in time,
/// and the next query works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_failures_are_clear_bounded_and_leave_the_cluster_healthy() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("failures");
    s3.upload(&bucket, &tpch_dir().join("region"), "region")
        .await;
    s3.store(&bucket)
        .put(
            &ObjectPath::from("corrupt/part-0.parquet"),
            PutPayload::from_static(b"this is not a parquet file at all"),
        )
        .await
        .unwrap();
    let ctx = EmberContext::standalone(2).await.unwrap();
    s3.configure(&ctx, "test").await;
    ctx.run_sql("SET ember.s3.request_timeout_secs = 2")
        .await
        .unwrap();
    ctx.run_sql("SET ember.s3.max_retries = 1").await.unwrap();
    let healthy = async |ctx: &EmberContext| {
        let r = ctx
            .run_sql(&format!(
                "CREATE OR REPLACE EXTERNAL TABLE region STORED AS PARQUET \
                 LOCATION 's3://{bucket}/region/'"
            ))
            .await;
        r.expect("register region");
        let n = ctx.run_sql("SELECT count(*) FROM region").await.unwrap();
        assert_eq!(rows(&n.batches), vec![vec!["5"]]);
    };
    healthy(&ctx).await;

    let timed = async |sql: &str| {
        let started = Instant::now();
        let e = ctx.run_sql(sql).await.expect_err(sql).to_string();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{sql}: took {:?}",
            started.elapsed()
        );
        e
    };

    // A missing bucket.
    let e =
        timed("CREATE EXTERNAL TABLE nb STORED AS PARQUET LOCATION 's3://no-such-bucket-ember/t/'")
            .await;
    assert!(e.contains("no-such-bucket-ember"), "{e}");
    healthy(&ctx).await;

    // A corrupt object.
    let e = timed(&format!(
        "CREATE EXTERNAL TABLE bad STORED AS PARQUET LOCATION 's3://{bucket}/corrupt/'"
    ))
    .await;
    assert!(e.to_lowercase().contains("parquet"), "{e}");
    assert!(e.contains(&format!("s3://{bucket}/corrupt/")), "{e}");
    healthy(&ctx).await;

    // A server that is down: nothing listens on the port.
    let down = format!("http://127.0.0.1:{}", free_port());
    ctx.run_sql(&format!("SET ember.s3.endpoint = '{down}'"))
        .await
        .unwrap();
    let e = timed(&format!(
        "CREATE EXTERNAL TABLE down STORED AS PARQUET LOCATION 's3://{bucket}/region/'"
    ))
    .await;
    assert!(e.contains(&down) || e.contains(&bucket), "{e}");

    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang = format!("http://{}", listener.local_addr().unwrap());
    let _held = std::thread::spawn(move || {
        let mut open = vec![];
        for c in listener.incoming().flatten() {
            open.push(c);
        }
    });
    ctx.run_sql(&format!("SET ember.s3.endpoint = '{hang}'"))
        .await
        .unwrap();
    let e = timed(&format!(
        "CREATE EXTERNAL TABLE hang STORED AS PARQUET LOCATION 's3://{bucket}/region/'"
    ))
    .await;
    assert!(
        e.to_lowercase().contains("timed out") || e.contains(&hang),
        "{e}"
    );

    ctx.run_sql(&format!("SET ember.s3.endpoint = '{}'", s3.endpoint))
        .await
        .unwrap();
    healthy(&ctx).await;
}

/// A whole session with recognisable secrets, on processes logging at
/// debug: the secrets appear in no output, error, plan, status or log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_secrets_never_show_anywhere() {
    let Some(s3) = server() else { return };
    const SECRET: &str = "EMBERSECRETd41d8cd98f00b204";
    const TOKEN: &str = "EMBERTOKEN9e107d9d372bb6826bd";
    let bucket = s3.bucket("secrets");
    s3.upload(&bucket, &tpch_dir().join("nation"), "nation")
        .await;
    let cluster = ProcessCluster::start_logging(2, "debug");
    let ctx = cluster.session(2).await;
    s3.configure(&ctx, SECRET).await;
    ctx.run_sql(&format!("SET ember.s3.session_token = '{TOKEN}'"))
        .await
        .unwrap();

    let mut seen = String::new();
    let mut show = |what: &str, text: String| {
        seen.push_str(&format!("--- {what}\n{text}\n"));
    };
    for sql in [
        "SHOW ALL".to_string(),
        "SHOW ember.s3.secret_access_key".to_string(),
        "SELECT * FROM information_schema.df_settings WHERE name LIKE 'ember.%'".to_string(),
        format!("CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION 's3://{bucket}/nation/'"),
        "DESCRIBE nation".to_string(),
        "EXPLAIN SELECT n_regionkey, count(*) FROM nation GROUP BY 1".to_string(),
        "EXPLAIN ANALYZE SELECT n_regionkey, count(*) FROM nation GROUP BY 1".to_string(),
        "SELECT n_regionkey, count(*) FROM nation GROUP BY 1".to_string(),
        format!("COPY (SELECT * FROM nation) TO 's3://{bucket}/copy/' STORED AS PARQUET"),
        "SELECT * FROM s3_missing_table".to_string(),
        format!(
            "CREATE EXTERNAL TABLE n2 STORED AS PARQUET LOCATION 's3://{bucket}/nation/' \
             OPTIONS ('aws.secret_access_key' '{SECRET}', 'aws.session_token' '{TOKEN}')"
        ),
        "SHOW CREATE TABLE n2".to_string(),
        "SELECT count(*) FROM n2".to_string(),
        "SHOW ALL".to_string(),
        "CREATE EXTERNAL TABLE nb STORED AS PARQUET LOCATION 's3://no-such-bucket-x/t/'"
            .to_string(),
    ] {
        // The label is ours, not Ember's output: it must not count.
        let label = sql.replace(SECRET, "<secret>").replace(TOKEN, "<token>");
        match ctx.run_sql(&sql).await {
            Ok(r) => {
                show(&label, r.pretty().unwrap());
                show("status", format!("{:?}", r.job));
            }
            Err(e) => show(&label, format!("{e} / {e:?}")),
        }
    }
    // The shell, on the same cluster.
    let shell = std::process::Command::new(crate::common::binary("ember-sql"))
        .args(["--scheduler", &cluster.url])
        .args([
            "-c",
            &format!("SET ember.s3.secret_access_key = '{SECRET}'"),
        ])
        .args(["-c", "SHOW ALL"])
        .args(["-c", "SELECT count(*) FROM no_such_table"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    show(
        "ember-sql stdout",
        String::from_utf8_lossy(&shell.stdout).into(),
    );
    show(
        "ember-sql stderr",
        String::from_utf8_lossy(&shell.stderr).into(),
    );
    assert!(
        seen.contains(ember_planner::config::MASK),
        "SHOW ALL shows set secrets masked:\n{seen}"
    );
    drop(ctx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = cluster.all_logs();
    assert!(logs.len() > 1000, "debug logs were written");
    for (what, text) in [("outputs", &seen), ("logs", &logs)] {
        for secret in [SECRET, TOKEN] {
            assert!(
                !text.contains(secret),
                "a secret shows in the {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// A table's `OPTIONS ('aws.*' ...)` configure its bucket, for the
/// scheduler and for the executors that read it, with nothing set in the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_table_aws_options_configure_the_bucket() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("table-options");
    s3.upload(&bucket, &tpch_dir().join("nation"), "nation")
        .await;
    let cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION 's3://{bucket}/nation/' \
         OPTIONS ('aws.endpoint' '{}', 'aws.region' 'us-east-1', 'aws.access_key_id' 'test', \
         'aws.secret_access_key' 'test', 'aws.allow_http' 'true')",
        s3.endpoint
    ))
    .await
    .unwrap();
    let got = ctx
        .run_sql("SELECT n_regionkey, count(*) FROM nation GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(rows(&got.batches).len(), 5);
    let e = ctx
        .run_sql(
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp/' OPTIONS ('aws.region' 'x')",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("aws.* options apply to s3:// locations"), "{e}");
    let e = ctx
        .run_sql(&format!(
            "CREATE EXTERNAL TABLE y STORED AS PARQUET LOCATION 's3://{bucket}/nation/' \
             OPTIONS ('aws.regoin' 'x')"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown table option aws.regoin"), "{e}");
}

/// A hive-partitioned dataset on S3 is read with its partition column and
/// pruned (a filter on it plans only that partition's objects), and one
/// large object is split across tasks by byte ranges (row groups).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_datasets_are_pruned_and_large_objects_split() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("layout");
    s3.upload(&bucket, &tpch_dir().join("orders"), "orders")
        .await;
    let cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    s3.configure(&ctx, "test").await;
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION 's3://{bucket}/orders/'"
    ))
    .await
    .unwrap();
    ctx.run_sql(&format!(
        "COPY (SELECT o_orderkey, o_totalprice, CAST(date_part('year', o_orderdate) AS VARCHAR) \
         AS year FROM orders) TO 's3://{bucket}/by_year/' STORED AS PARQUET PARTITIONED BY (year)"
    ))
    .await
    .unwrap();
    let keys = s3.keys(&bucket, "by_year").await;
    assert!(keys.iter().any(|k| k.contains("year=1995/")), "{keys:?}");
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE by_year STORED AS PARQUET PARTITIONED BY (year) \
         LOCATION 's3://{bucket}/by_year/'"
    ))
    .await
    .unwrap();
    let q = "SELECT count(*), sum(o_totalprice) FROM by_year WHERE year = '1995'";
    let got = ctx.run_sql(q).await.unwrap();
    let want = oracle_rows(
        "SELECT count(*), sum(o_totalprice) FROM orders WHERE date_part('year', o_orderdate) = 1995",
    )
    .await;
    assert_same("pruned partition", rows(&got.batches), want, false);
    let plan = ctx
        .run_sql(&format!("EXPLAIN {q}"))
        .await
        .unwrap()
        .pretty()
        .unwrap();
    assert!(plan.contains("year=1995/"), "{plan}");
    for other in ["year=1992/", "year=1993/", "year=1998/"] {
        assert!(!plan.contains(other), "{other} not pruned:\n{plan}");
    }

    // One object with many row groups, split into byte ranges.
    ctx.run_sql(&format!(
        "COPY (SELECT * FROM orders ORDER BY o_orderkey) TO 's3://{bucket}/one/orders.parquet' \
         STORED AS PARQUET OPTIONS ('format.max_row_group_size' '1000')"
    ))
    .await
    .unwrap();
    ctx.run_sql("SET datafusion.optimizer.repartition_file_min_size = 1024")
        .await
        .unwrap();
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE one STORED AS PARQUET LOCATION 's3://{bucket}/one/orders.parquet'"
    ))
    .await
    .unwrap();
    let q = "SELECT count(*), sum(o_totalprice) FROM one";
    let plan = ctx
        .run_sql(&format!("EXPLAIN {q}"))
        .await
        .unwrap()
        .pretty()
        .unwrap();
    let ranges = plan.matches("orders.parquet:").count();
    assert!(ranges >= 2, "one object read by one task:\n{plan}");
    let got = ctx.run_sql(q).await.unwrap();
    let want = oracle_rows("SELECT count(*), sum(o_totalprice) FROM orders").await;
    assert_same("byte-range split", rows(&got.batches), want, false);
}

/// With nothing set in the session, the usual `AWS_*` environment
/// configures the store (here: the shell's embedded cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_aws_environment_configures_s3() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("from-env");
    s3.upload(&bucket, &tpch_dir().join("nation"), "nation")
        .await;
    let out = std::process::Command::new(crate::common::binary("ember-sql"))
        .args(["--format", "csv"])
        .args([
            "-c",
            &format!(
                "CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION 's3://{bucket}/nation/'"
            ),
        ])
        .args(["-c", "SELECT count(*) AS n FROM nation"])
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\n25"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
