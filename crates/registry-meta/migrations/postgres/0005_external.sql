-- The PostgreSQL twin of migrations/sqlite/0005_external.sql.

-- External registries (replication targets and sources, pull-through upstreams).
-- `secret` holds nonce || AES-256-GCM ciphertext; the plain secret is never stored.
CREATE TABLE external_registries (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    auth_kind TEXT NOT NULL,
    username TEXT,
    secret BYTEA,
    insecure BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Replication rules managed through the API; `body` is the rule as JSON.
CREATE TABLE replication_rules (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- When a pull-through cache last checked a tag against its upstream.
CREATE TABLE proxy_tags (
    repository TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (repository, tag)
);
