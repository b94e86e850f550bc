//! Publishing a write job's files: the scheduler's half of the exactly-once
//! protocol described in `ember_planner::write`.
//!
//! Task attempts write under `<dir>/.ember-staging/<job>/p<partition>-a<attempt>/`.
//! When the job's last stage is done, [`Output::commit`] moves the files of
//! the one attempt the job accepted for each write partition into `<dir>`
//! (keeping hive-style `col=value/` sub-directories), and
//! [`Output::discard`] deletes the job's staging directory, whatever is left
//! in it (files of failed, retried, superseded or zombie attempts). A job
//! that fails or is cancelled is only discarded: nothing it wrote is ever
//! visible.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::object_store::path::Path;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use ember_planner::WriteTarget;
use ember_planner::write::attempt_url;
use futures::{StreamExt, TryStreamExt};

/// Where a write job's files go, and the store that holds them.
#[derive(Debug, Clone)]
pub struct Output {
    pub target: WriteTarget,
    pub store: Arc<dyn ObjectStore>,
}

/// What a commit published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub files: u64,
}

fn prefix_of(url: &str) -> Result<Path, String> {
    ListingTableUrl::parse(url)
        .map(|u| u.prefix().clone())
        .map_err(|e| format!("bad staging location {url}: {e}"))
}

impl Output {
    /// Moves the files of attempt `attempts[p]` of every write partition `p`
    /// into the destination.
    pub async fn commit(
        &self,
        job_id: &str,
        attempts: &BTreeMap<u32, u64>,
    ) -> Result<Committed, String> {
        let mut published = vec![];
        let result = self.publish(job_id, attempts, &mut published).await;
        if result.is_err() {
            // Take back what was already published: a failed job shows
            // nothing (best effort; a store that fails here may fail again).
            for path in published {
                if let Err(e) = self.store.delete(&path).await {
                    tracing::warn!(job = job_id, file = %path, error = %e, "could not take back a published file");
                }
            }
        }
        result
    }

    async fn publish(
        &self,
        job_id: &str,
        attempts: &BTreeMap<u32, u64>,
        published: &mut Vec<Path>,
    ) -> Result<Committed, String> {
        let dest = self.target.destination.prefix();
        let mut committed = Committed::default();
        for (&partition, &attempt) in attempts {
            let url = attempt_url(
                &self.target.staging_root,
                job_id,
                partition as usize,
                attempt,
            );
            let staged = prefix_of(&url)?;
            let files: Vec<_> = self
                .store
                .list(Some(&staged))
                .try_collect()
                .await
                .map_err(|e| format!("listing the files written by partition {partition}: {e}"))?;
            for file in files {
                let to = if self.target.single_file {
                    dest.clone()
                } else {
                    let Some(relative) = file.location.prefix_match(&staged) else {
                        continue;
                    };
                    relative.fold(dest.clone(), |path, part| path.join(part))
                };
                self.store
                    .rename(&file.location, &to)
                    .await
                    .map_err(|e| format!("publishing {} as {to}: {e}", file.location))?;
                published.push(to);
                committed.files += 1;
            }
        }
        Ok(committed)
    }

    /// Deletes the job's staging directory (best effort: failures are
    /// logged, the files stay hidden from readers).
    pub async fn discard(&self, job_id: &str) {
        let url = self.target.job_staging_url(job_id);
        if let Err(e) = self.delete_all(&url).await {
            tracing::warn!(job = job_id, staging = url, error = %e, "could not delete staged files");
        }
    }

    async fn delete_all(&self, url: &str) -> Result<(), String> {
        let prefix = prefix_of(url)?;
        if self.target.destination.scheme() == "file" {
            // Local directories outlive their files in object_store; remove
            // the tree (with any half-written temporary file) and the staging
            // root if no other job uses it.
            let dir = std::path::PathBuf::from(format!("/{prefix}"));
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
            if let Some(root) = dir.parent() {
                let _ = tokio::fs::remove_dir(root).await;
            }
            return Ok(());
        }
        let files = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        self.store
            .delete_stream(files)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::object_store::memory::InMemory;
    use datafusion::object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    async fn put(store: &InMemory, path: &str) {
        store
            .put(&Path::from(path), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    async fn paths(store: &InMemory) -> Vec<String> {
        let mut all: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        all.sort();
        all
    }

    #[tokio::test]
    async fn commit_publishes_only_accepted_attempts_and_discard_clears_staging() {
        let store = Arc::new(InMemory::new());
        let staging = "out/.ember-staging/j";
        put(&store, "out/old.parquet").await;
        put(&store, &format!("{staging}/p0-a1/x_0.parquet")).await;
        put(&store, &format!("{staging}/p0-a3/k=1/y_0.parquet")).await; // retry
        put(&store, &format!("{staging}/p1-a2/z_0.parquet")).await;
        let output = Output {
            target: WriteTarget {
                stage: 0,
                destination: ListingTableUrl::parse("memory:///out/").unwrap(),
                single_file: false,
                staging_root: "memory:///out/.ember-staging/".into(),
            },
            store: Arc::clone(&store) as Arc<dyn ObjectStore>,
        };
        let committed = output
            .commit("j", &BTreeMap::from([(0, 3), (1, 2)]))
            .await
            .unwrap();
        assert_eq!(committed.files, 2);
        output.discard("j").await;
        assert_eq!(
            paths(&store).await,
            ["out/k=1/y_0.parquet", "out/old.parquet", "out/z_0.parquet"]
        );
    }
}
