-- netsentinel schema for PostgreSQL, version 8: windows a detector's ingest closed (or records
-- it accepted) while it had no active model, kept until its first model scores them. One row
-- per commit that left windows pending: `windows` counts them, `body` holds them (the service
-- layer's encoding).
CREATE TABLE pending_windows (
    detector TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    windows  BIGINT NOT NULL,
    body     BYTEA NOT NULL,
    PRIMARY KEY (detector, seq)
);
