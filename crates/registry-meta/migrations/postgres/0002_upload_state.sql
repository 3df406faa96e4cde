-- Opaque per-session state of a blob store's upload (e.g. S3 multipart parts), so that any
-- replica can continue the session. NULL until the blob store first records some.
ALTER TABLE uploads ADD COLUMN state BYTEA;
