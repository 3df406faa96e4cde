//! Where a blob store keeps upload-session state between requests: in the metadata
//! database, next to the session's row.

use std::sync::Arc;

use registry_meta::MetaStore;
use registry_storage::{MemoryUploadStateStore, UploadStateStore};

/// The S3 backend's upload-session state, kept in the metadata database (the `uploads`
/// row's `state` column), so that any replica can continue any upload. Single-request
/// uploads (monolithic pushes, replication, pull-through caching) have no session row and
/// end in the request that started them: their state stays in this process.
pub struct MetaUploadState {
    meta: Arc<dyn MetaStore>,
    single_request: MemoryUploadStateStore,
}

impl MetaUploadState {
    /// State kept in `meta`.
    pub fn new(meta: Arc<dyn MetaStore>) -> MetaUploadState {
        MetaUploadState {
            meta,
            single_request: MemoryUploadStateStore::new(),
        }
    }
}

fn state_err(e: registry_meta::MetaError) -> registry_storage::StorageError {
    registry_storage::StorageError::Io(std::io::Error::other(e))
}

#[async_trait::async_trait]
impl UploadStateStore for MetaUploadState {
    async fn load(&self, id: &str) -> registry_storage::Result<Option<Vec<u8>>> {
        match self.meta.upload_state(id).await.map_err(state_err)? {
            Some(state) => Ok(Some(state)),
            None => self.single_request.load(id).await,
        }
    }

    async fn save(&self, id: &str, state: &[u8]) -> registry_storage::Result<()> {
        match self.meta.set_upload_state(id, state).await {
            Ok(()) => Ok(()),
            Err(registry_meta::MetaError::UnknownUpload(_)) => {
                self.single_request.save(id, state).await
            }
            Err(e) => Err(state_err(e)),
        }
    }

    async fn remove(&self, id: &str) -> registry_storage::Result<()> {
        // A session row's state goes with the row, which the API deletes when the session
        // ends.
        self.single_request.remove(id).await
    }
}
