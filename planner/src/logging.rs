//! Logging for Ember's processes: `RUST_LOG` as usual, except that nothing
//! may log SQL text. Statements carry secrets (`SET ember.s3.secret_access_key
//! = '...'`), and sqlparser logs every token at debug level, so its target
//! is capped at `info` whatever `RUST_LOG` says.

use tracing_subscriber::EnvFilter;

/// Targets that log statement text, and the most they may log.
const REDACTED_TARGETS: &[&str] = &["sqlparser=info"];

/// `RUST_LOG` (or `default` when unset) with the redacted targets capped.
pub fn filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    for directive in REDACTED_TARGETS {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the process's log subscriber (stderr); a second call is a no-op.
pub fn init(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .try_init();
}
