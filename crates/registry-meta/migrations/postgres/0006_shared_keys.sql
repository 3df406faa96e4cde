-- The PostgreSQL twin of migrations/sqlite/0006_shared_keys.sql.

-- Public halves of the token service's signing keys, one per replica that generated or
-- was given a key: a token signed by any replica verifies on every other (by its `kid`).
CREATE TABLE token_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Fingerprints of symmetric keys (never the keys): `external.secretkey` must be the same
-- on every replica, or one could not open what another sealed.
CREATE TABLE key_fingerprints (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
