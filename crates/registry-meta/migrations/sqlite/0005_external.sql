-- External registries (replication targets and sources, pull-through upstreams).
-- `secret` holds nonce || AES-256-GCM ciphertext; the plain secret is never stored.
CREATE TABLE external_registries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    auth_kind TEXT NOT NULL,
    username TEXT,
    secret BLOB,
    insecure INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Replication rules managed through the API; `body` is the rule as JSON.
CREATE TABLE replication_rules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- When a pull-through cache last checked a tag against its upstream.
CREATE TABLE proxy_tags (
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    checked_at INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
