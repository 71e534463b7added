-- netsentinel schema for PostgreSQL, version 1: alerts, the webhook outbox and model versions.
-- Applied by refinery at start under an advisory lock; never edit a released step, add V2__...

-- Ids and sink names compare byte-wise ("C"), as in SQLite, so list order and cursors agree
-- between the backends whatever the database's default collation.
CREATE TABLE alerts (
    id            TEXT COLLATE "C" PRIMARY KEY,
    created_at_ns BIGINT NOT NULL,
    severity      SMALLINT NOT NULL CHECK (severity BETWEEN 0 AND 100),
    status        TEXT NOT NULL CHECK (status IN ('open', 'acknowledged')),
    model_version BIGINT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX alerts_by_created ON alerts (created_at_ns DESC, id DESC);
CREATE INDEX alerts_by_status ON alerts (status, created_at_ns DESC, id DESC);
CREATE INDEX alerts_by_severity ON alerts (severity, created_at_ns DESC, id DESC);

CREATE TABLE webhook_outbox (
    alert_id           TEXT COLLATE "C" NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    sink               TEXT COLLATE "C" NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error         TEXT,
    last_status        INTEGER,
    delivered_at_ms    BIGINT,
    updated_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (alert_id, sink)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (sink, next_attempt_at_ms)
    WHERE state = 'pending';

-- Version numbers come from a sequence: two replicas fitting at once never get the same one,
-- and a number is never reused (nextval is not rolled back).
CREATE SEQUENCE model_version_seq AS BIGINT MINVALUE 1 START 1;
CREATE TABLE models (
    version  BIGINT PRIMARY KEY CHECK (version > 0),
    bytes    BYTEA NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set aside because it did not decode; kept for inspection, never listed or loaded.
    corrupt  BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE model_active (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    version   BIGINT NOT NULL REFERENCES models (version)
);
