-- netsentinel schema for PostgreSQL, version 5: incidents and deliveries per event.
-- Existing alerts have no entity: batch alerts, as they were; existing outbox rows are each
-- alert's opening (event 0). Nothing is deleted.

-- An incident's entity, when it resolves if nothing else arrives, and when it was resolved
-- (the status column keeps open/acknowledged; a resolved incident has resolved_at_ns set).
ALTER TABLE alerts ADD COLUMN entity TEXT COLLATE "C";
ALTER TABLE alerts ADD COLUMN resolve_at_ns BIGINT;
ALTER TABLE alerts ADD COLUMN resolved_at_ns BIGINT;
-- At most one unresolved incident per (detector, entity), whichever replica raised it.
CREATE UNIQUE INDEX alerts_open_incident ON alerts (detector, entity)
    WHERE entity IS NOT NULL AND resolved_at_ns IS NULL;
CREATE INDEX alerts_by_entity ON alerts (entity, created_at_ns DESC, id DESC)
    WHERE entity IS NOT NULL;
CREATE INDEX alerts_resolve_due ON alerts (resolve_at_ns)
    WHERE resolved_at_ns IS NULL AND resolve_at_ns IS NOT NULL;

-- Deliveries keyed by (alert, sink, event number), with the event, the alert as the event left
-- it (null: read the alert's row), and how many times the row was claimed.
ALTER TABLE webhook_outbox ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_outbox ADD COLUMN event TEXT NOT NULL DEFAULT 'opened';
ALTER TABLE webhook_outbox ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_outbox ADD COLUMN body TEXT;
ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_pkey;
ALTER TABLE webhook_outbox ADD PRIMARY KEY (alert_id, sink, seq);
