-- netsentinel schema for PostgreSQL, version 7: a window's `seq` joins its key. Records ingest
-- (a detector with source.format "records") stores each record as its own closed window, and an
-- entity may send several records in one second. Existing rows (Zeek windows) keep seq 0.
ALTER TABLE windows ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE windows DROP CONSTRAINT windows_pkey;
ALTER TABLE windows ADD PRIMARY KEY (detector, start_s, entity, seq);
