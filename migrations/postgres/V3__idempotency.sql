-- netsentinel schema for PostgreSQL, version 3: idempotency keys.
-- The first answer to a request sent with an Idempotency-Key, per (client, detector,
-- operation, key); written in the same transaction as the request's effect (the alert and its
-- outbox rows for a score). A new table: existing rows are untouched.

CREATE TABLE idempotency_keys (
    client        TEXT COLLATE "C" NOT NULL,
    detector      TEXT COLLATE "C" NOT NULL,
    operation     TEXT COLLATE "C" NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    request_hash  TEXT NOT NULL,
    created_at_ns BIGINT NOT NULL,
    status        INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    headers       TEXT NOT NULL,
    body          BYTEA,
    body_len      BIGINT NOT NULL,
    body_sha256   TEXT NOT NULL,
    PRIMARY KEY (client, detector, operation, key)
);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at_ns);
