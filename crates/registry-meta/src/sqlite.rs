//! The embedded SQLite metadata store (WAL mode, one writer at a time).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::Result;

/// SQLite-backed [`MetaStore`](crate::MetaStore); its operations are in [`crate::sql`].
pub struct SqliteMeta {
    pub(crate) pool: SqlitePool,
    /// SQLite allows one writer; queueing here avoids busy errors under concurrent pushes.
    pub(crate) write_lock: Option<tokio::sync::Mutex<()>>,
}

impl SqliteMeta {
    /// Open a database by URL (`sqlite:PATH`) and apply migrations.
    pub async fn connect(url: &str) -> Result<SqliteMeta> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteMeta {
            pool,
            write_lock: Some(tokio::sync::Mutex::new(())),
        })
    }

    /// Open the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteMeta> {
        SqliteMeta::connect(&format!("sqlite://{}", path.display())).await
    }
}

/// A list of digests (or kinds) bound as one JSON array (`json_each($n)`).
pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}
