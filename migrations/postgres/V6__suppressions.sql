-- netsentinel schema for PostgreSQL, version 5: suppression rules. Nothing existing changes.

-- A rule's JSON as the service wrote it, with its times as columns: the scoring path reads the
-- rules in force (never expiring, or expiring later) in one indexed statement.
CREATE TABLE suppressions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    body          TEXT NOT NULL
);
CREATE INDEX suppressions_by_expiry ON suppressions (expires_at_ms);
