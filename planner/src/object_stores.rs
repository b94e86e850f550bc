//! Object stores for `s3://` URLs, for the scheduler's sessions and the
//! executors' tasks alike.
//!
//! A store is built from the session's `ember.s3.*` settings over the
//! environment's `AWS_*` variables (what `AmazonS3Builder::from_env` reads),
//! and cached per (bucket, settings) for the life of the process: tasks of
//! the same job, and jobs of the same session, share one client and its
//! connection pool. Settings travel to executors with every job, so
//! executors need no configuration of their own (their environment still
//! supplies defaults).
//!
//! Every store has bounded timeouts and retries: a server that is down or
//! hangs gives an error naming the URL, never a hang.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use datafusion::object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use parking_lot::{Mutex, RwLock};
use url::Url;

use crate::config::{EmberOptions, S3Settings};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RETRIES: usize = 3;

/// The S3 clients of this process, per (bucket, settings).
#[derive(Debug, Default)]
pub struct StoreCache {
    stores: Mutex<HashMap<(String, S3Settings), Arc<dyn ObjectStore>>>,
}

impl StoreCache {
    /// The process-wide cache.
    pub fn global() -> Arc<Self> {
        static CACHE: OnceLock<Arc<StoreCache>> = OnceLock::new();
        Arc::clone(CACHE.get_or_init(Default::default))
    }

    /// The client for `bucket` under `settings`, built on first use.
    pub fn s3(&self, bucket: &str, settings: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
        let key = (bucket.to_string(), settings.clone());
        if let Some(store) = self.stores.lock().get(&key) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(build_s3(bucket, settings)?);
        Ok(Arc::clone(self.stores.lock().entry(key).or_insert(store)))
    }

    /// Clients built so far (for tests).
    pub fn len(&self) -> usize {
        self.stores.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn build_s3(bucket: &str, s: &S3Settings) -> Result<datafusion::object_store::aws::AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // Path-style requests unless asked otherwise: what S3-compatible
    // servers (MinIO, Ceph, ...) expect.
    if std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
        b = b.with_virtual_hosted_style_request(false);
    }
    if let Some(v) = &s.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &s.region {
        b = b.with_region(v);
    }
    if let Some(v) = &s.access_key_id {
        b = b.with_access_key_id(v.expose());
    }
    if let Some(v) = &s.secret_access_key {
        b = b.with_secret_access_key(v.expose());
    }
    if let Some(v) = &s.session_token {
        b = b.with_token(v.expose());
    }
    if let Some(v) = s.allow_http {
        b = b.with_allow_http(v);
    }
    if let Some(v) = s.virtual_hosted_style {
        b = b.with_virtual_hosted_style_request(v);
    }
    // Timeouts are set as configuration keys: replacing the client options
    // would drop what the environment set there (AWS_ALLOW_HTTP, ...).
    let request_timeout = s
        .request_timeout_secs
        .map_or(REQUEST_TIMEOUT, Duration::from_secs);
    let connect_timeout = s
        .connect_timeout_secs
        .map_or(CONNECT_TIMEOUT, Duration::from_secs);
    let client = |key| AmazonS3ConfigKey::Client(key);
    b = b
        .with_config(
            client(ClientConfigKey::Timeout),
            format!("{}s", request_timeout.as_secs()),
        )
        .with_config(
            client(ClientConfigKey::ConnectTimeout),
            format!("{}s", connect_timeout.as_secs()),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: s.max_retries.unwrap_or(MAX_RETRIES),
            retry_timeout: request_timeout * 2,
        });
    b.build().map_err(|e| {
        DataFusionError::Configuration(format!("cannot set up S3 bucket {bucket}: {e}"))
    })
}

/// An `ObjectStoreRegistry` that knows `s3://` URLs under the current S3
/// settings (stores registered explicitly win).
#[derive(Debug)]
pub struct EmberStores {
    settings: RwLock<S3Config>,
    cache: Arc<StoreCache>,
    registered: DefaultObjectStoreRegistry,
}

/// A session's S3 settings: its own, and per-bucket overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub session: S3Settings,
    pub buckets: BTreeMap<String, S3Settings>,
}

impl S3Config {
    /// The `ember.s3.*` settings of `options`.
    pub fn of(options: &EmberOptions) -> Self {
        Self {
            session: options.s3.clone(),
            buckets: options.s3_buckets.clone(),
        }
    }

    fn for_bucket(&self, bucket: &str) -> S3Settings {
        match self.buckets.get(bucket) {
            Some(over) => self.session.overlaid(over),
            None => self.session.clone(),
        }
    }
}

impl EmberStores {
    pub fn new(settings: S3Config, cache: Arc<StoreCache>) -> Self {
        Self {
            settings: RwLock::new(settings),
            cache,
            registered: DefaultObjectStoreRegistry::new(),
        }
    }

    /// The session's settings changed (e.g. `SET ember.s3.region = ...`).
    pub fn set_settings(&self, settings: S3Config) {
        if *self.settings.read() != settings {
            *self.settings.write() = settings;
        }
    }
}

impl ObjectStoreRegistry for EmberStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.registered.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let registered = self.registered.get_store(url);
        if registered.is_ok() || !matches!(url.scheme(), "s3" | "s3a") {
            return registered;
        }
        let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
            DataFusionError::Configuration(format!("no bucket in the S3 URL {url}"))
        })?;
        let settings = self.settings.read().for_bucket(bucket);
        self.cache.s3(bucket, &settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn stores_are_cached_per_bucket_and_settings_and_never_show_secrets() {
        let cache = Arc::new(StoreCache::default());
        let mut settings = S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some(Secret("AKIDEXAMPLE".into())),
            secret_access_key: Some(Secret("very-secret-value".into())),
            ..Default::default()
        };
        let config = |session: &S3Settings| S3Config {
            session: session.clone(),
            buckets: BTreeMap::new(),
        };
        let stores = EmberStores::new(config(&settings), Arc::clone(&cache));
        let a = stores.get_store(&Url::parse("s3://a/x").unwrap()).unwrap();
        let again = stores.get_store(&Url::parse("s3://a/y").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        stores.get_store(&Url::parse("s3://b/").unwrap()).unwrap();
        settings.region = Some("eu-west-1".into());
        stores.set_settings(config(&settings));
        stores.get_store(&Url::parse("s3://a/").unwrap()).unwrap();
        assert_eq!(cache.len(), 3);
        let shown = format!("{settings:?} {a:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(stores.get_store(&Url::parse("gs://a/").unwrap()).is_err());
    }

    /// moto accepts any signature, so signing is checked here: a server
    /// that records the request and refuses it as bad credentials would.
    #[tokio::test]
    async fn requests_are_signed_and_refused_credentials_are_a_clear_error() {
        use datafusion::object_store::ObjectStoreExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = socket.read(&mut buf).await.unwrap();
            let body = "<Error><Code>InvalidAccessKeyId</Code></Error>";
            let reply = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let settings = S3Settings {
            endpoint: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(Secret("AKIDSIGNED".into())),
            secret_access_key: Some(Secret("not-shown-anywhere".into())),
            allow_http: Some(true),
            max_retries: Some(0),
            ..Default::default()
        };
        let store = StoreCache::default().s3("bucket", &settings).unwrap();
        let e = store
            .head(&datafusion::object_store::path::Path::from("t/x.parquet"))
            .await
            .unwrap_err()
            .to_string();
        let request = server.await.unwrap();
        assert!(
            request.contains("authorization: aws4-hmac-sha256 credential=akidsigned/"),
            "{request}"
        );
        assert!(request.contains("x-amz-date:"), "{request}");
        assert!(
            !request.contains("not-shown-anywhere"),
            "the secret never travels"
        );
        assert!(
            e.contains("403") || e.to_lowercase().contains("forbidden"),
            "{e}"
        );
        assert!(e.contains("t/x.parquet"), "{e}");
        assert!(!e.contains("not-shown-anywhere"), "{e}");
    }
}
