//! The PostgreSQL metadata store, for several registry replicas sharing one database.
//!
//! Semantics are those of [`crate::sqlite::SqliteMeta`]. Where SQLite serializes writers with
//! one process-local mutex, this store relies on the database: every multi-statement write
//! is one transaction (READ COMMITTED), inserts use `ON CONFLICT`, and rows a write depends
//! on are locked (`FOR KEY SHARE` on the blobs and child manifests a manifest references,
//! `FOR UPDATE` on a manifest being deleted, an upsert on the manifest being stored).
//! Transactions that PostgreSQL aborts as deadlocked or unserializable are retried.
//!
//! Garbage collection's conditional deletes ("delete this row if nothing references it")
//! cannot be one `DELETE ... WHERE NOT EXISTS` here: under READ COMMITTED that statement's
//! subqueries see the snapshot taken when it started, even after waiting for a row lock, so a
//! reference committed meanwhile would go unseen. Each one therefore first locks its row
//! `FOR UPDATE` and then deletes in a second statement, whose fresh snapshot sees every
//! reference committed before the lock was granted; writers that add references hold
//! `FOR KEY SHARE` on the referenced row until they commit, so none can slip in after.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::{MetaError, Result};

/// Connections per process; replicas multiply this, so keep it modest.
const MAX_CONNECTIONS: u32 = 16;

/// PostgreSQL-backed [`MetaStore`](crate::MetaStore); its operations are in [`crate::sql`].
pub struct PgMeta {
    pub(crate) pool: PgPool,
    /// Always `None`: PostgreSQL orders writers itself.
    pub(crate) write_lock: Option<tokio::sync::Mutex<()>>,
}

/// Whether PostgreSQL aborted the transaction for a deadlock (40P01) or a serialization
/// failure (40001): trying again is the prescribed answer.
pub(crate) fn retryable(e: &MetaError) -> bool {
    match e {
        MetaError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
        }
        _ => false,
    }
}

/// A list of digests (or kinds) bound as one array (`= ANY($n)`, `UNNEST`).
pub(crate) fn array_list(items: &[String]) -> Vec<String> {
    items.to_vec()
}

impl PgMeta {
    /// Connect by URL (`postgres://user:password@host:port/db`) and apply migrations
    /// (several replicas starting at once are serialized by sqlx's advisory lock).
    pub async fn connect(url: &str) -> Result<PgMeta> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgMeta {
            pool,
            write_lock: None,
        })
    }
}
