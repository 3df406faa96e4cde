//! Progress reporting, decoupled from how it is shown (bars, plain lines, nothing).

use std::sync::Arc;

/// Receives the progress of one transfer (a layer, a config, a manifest).
pub trait Task: Send + Sync {
    /// `n` more bytes moved.
    fn advance(&self, n: u64);
    /// Start over from `pos` bytes (after a retry that could not resume).
    fn reset(&self, pos: u64);
    /// Finished, with a short note (`pushed`, `exists`, `mounted`, `done`).
    fn done(&self, note: &str);
    /// Failed for good.
    fn fail(&self, message: &str);
}

/// Creates [`Task`]s.
pub trait Progress: Send + Sync {
    /// A new task named `label` (usually a short digest) of `total` bytes.
    fn begin(&self, label: &str, total: u64) -> Arc<dyn Task>;
    /// A one-line message outside any task.
    fn message(&self, line: &str);
}

/// Reports nothing.
pub struct Silent;

struct SilentTask;

impl Task for SilentTask {
    fn advance(&self, _: u64) {}
    fn reset(&self, _: u64) {}
    fn done(&self, _: &str) {}
    fn fail(&self, _: &str) {}
}

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) -> Arc<dyn Task> {
        Arc::new(SilentTask)
    }
    fn message(&self, _: &str) {}
}
