-- The PostgreSQL twin of migrations/sqlite/0003_gc.sql. Garbage collection: the lookups its
-- conditional deletes make, indexed.
-- (The `created_at` of repository_blobs and manifests is refreshed whenever a client asserts
-- the link or manifest again: link_blob, touch_blob, put_manifest. GC's grace counts from it.)

-- "Does any manifest of this repository still reference this digest?"
CREATE INDEX manifest_references_by_child ON manifest_references(repo_id, child);
-- "Does any repository still link this blob?"
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);
-- "Is this digest a manifest in any repository?" (its content must stay)
CREATE INDEX manifests_by_digest ON manifests(digest);
-- "Is this manifest tagged?": tags_by_digest, already created by 0001_initial.sql here.
