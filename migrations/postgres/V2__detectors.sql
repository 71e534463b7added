-- netsentinel schema for PostgreSQL, version 2: named detectors.
-- Existing rows belong to the detector 'default' (what the v1 paths serve), so a database
-- written by an earlier build keeps working unchanged; nothing is deleted.

CREATE TABLE detectors (
    name          TEXT COLLATE "C" PRIMARY KEY,
    spec          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Model versions keep one number sequence for all detectors (never reused); each belongs to one.
ALTER TABLE models ADD COLUMN detector TEXT COLLATE "C" NOT NULL DEFAULT 'default';
CREATE INDEX models_by_detector ON models (detector, version);

-- The active pointer: one row per detector instead of one singleton row (dropping the
-- column drops its primary key and check with it).
ALTER TABLE model_active ADD COLUMN detector TEXT COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE model_active DROP COLUMN singleton;
ALTER TABLE model_active ADD PRIMARY KEY (detector);

ALTER TABLE alerts ADD COLUMN detector TEXT COLLATE "C" NOT NULL DEFAULT 'default';
CREATE INDEX alerts_by_detector ON alerts (detector, created_at_ns DESC, id DESC);
