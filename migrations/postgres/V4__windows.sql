-- netsentinel schema for PostgreSQL, version 4: continuous ingest.
-- (Version 3 is the idempotency keys of another branch.) Nothing existing changes.

-- Per detector, its stream: the window engine's snapshot of the open windows, and a version
-- every ingest or flush commit bumps (a replica commits only over the version it read).
CREATE TABLE streams (
    detector      TEXT COLLATE "C" PRIMARY KEY,
    version       BIGINT NOT NULL,
    book          BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Closed, scored windows; a window is closed once (the key refuses a second close).
CREATE TABLE windows (
    detector     TEXT COLLATE "C" NOT NULL,
    start_s      BIGINT NOT NULL,
    entity       TEXT COLLATE "C" NOT NULL,
    closed_at_ms BIGINT NOT NULL,
    is_anomaly   BOOLEAN NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (detector, start_s, entity)
);
CREATE INDEX windows_by_closed ON windows (closed_at_ms);
