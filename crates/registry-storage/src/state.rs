//! Where stateless backends keep upload-session state between requests.
//!
//! The S3 backend keeps each session's multipart upload id, finished parts and tail in an
//! [`UploadStateStore`], so that any replica sharing the store (and the bucket) can continue
//! a session another replica started. [`MemoryUploadStateStore`] is the single-process
//! implementation; the metadata database provides the shared one.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::Result;

/// Opaque per-session state, shared by every replica that may serve the session.
#[async_trait]
pub trait UploadStateStore: Send + Sync + 'static {
    /// The state saved for a session, or `None` when there is none.
    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Replace a session's state (durable when it returns).
    async fn save(&self, id: &str, state: &[u8]) -> Result<()>;
    /// Forget a session's state; a no-op when there is none.
    async fn remove(&self, id: &str) -> Result<()>;
}

/// Upload state in process memory: one process only, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryUploadStateStore {
    states: parking_lot::Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryUploadStateStore {
    /// An empty store.
    pub fn new() -> MemoryUploadStateStore {
        MemoryUploadStateStore::default()
    }

    /// Number of sessions with saved state.
    pub fn len(&self) -> usize {
        self.states.lock().len()
    }

    /// Whether no session has saved state.
    pub fn is_empty(&self) -> bool {
        self.states.lock().is_empty()
    }
}

#[async_trait]
impl UploadStateStore for MemoryUploadStateStore {
    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.states.lock().get(id).cloned())
    }

    async fn save(&self, id: &str, state: &[u8]) -> Result<()> {
        self.states.lock().insert(id.to_string(), state.to_vec());
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.states.lock().remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_loads_and_removes() {
        let store = MemoryUploadStateStore::new();
        assert_eq!(store.load("a").await.unwrap(), None);
        store.save("a", b"one").await.unwrap();
        store.save("a", b"two").await.unwrap();
        assert_eq!(store.load("a").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(store.len(), 1);
        store.remove("a").await.unwrap();
        store.remove("a").await.unwrap();
        assert!(store.is_empty());
    }
}
