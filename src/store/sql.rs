//! The statements the SQLite and PostgreSQL backends both run, written once where the dialects
//! agree, with SQLite's numbered placeholders (`?1`); [`postgres`] gives PostgreSQL's (`$1`).

/// An alert's row: `id, created_at_ns, severity, status, model_version, body, detector`.
pub(super) const INSERT_ALERT: &str =
    "INSERT INTO alerts (id, created_at_ns, severity, status, model_version, body, detector)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// An incident's row: [`INSERT_ALERT`]'s columns, then `entity` and `resolve_at_ns`.
pub(super) const INSERT_INCIDENT: &str = "INSERT INTO alerts
     (id, created_at_ns, severity, status, model_version, body, detector, entity, resolve_at_ns)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// An alert's new state: `severity, status, body, resolve_at_ns, resolved_at_ns`, then its id.
pub(super) const UPDATE_ALERT: &str = "UPDATE alerts
     SET severity = ?1, status = ?2, body = ?3, resolve_at_ns = ?4, resolved_at_ns = ?5
     WHERE id = ?6";

/// The body of alert `?1`.
pub(super) const ALERT_BODY: &str = "SELECT body FROM alerts WHERE id = ?1";

/// Alert `?3`'s `status` column `?1` and body `?2`.
pub(super) const SET_STATUS_BODY: &str = "UPDATE alerts SET status = ?1, body = ?2 WHERE id = ?3";

/// The unresolved incident of detector `?1` and entity `?2`.
pub(super) const OPEN_INCIDENT: &str = "SELECT id, body FROM alerts
     WHERE detector = ?1 AND entity = ?2 AND resolved_at_ns IS NULL";

/// The unresolved incidents of detector `?1` and entity `?2` (each: any when null), in a fixed
/// order (replicas locking several take them in the same order).
pub(super) const UNRESOLVED_INCIDENTS: &str = "SELECT id, body FROM alerts
     WHERE entity IS NOT NULL AND resolved_at_ns IS NULL
       AND (CAST(?1 AS TEXT) IS NULL OR detector = ?1)
       AND (CAST(?2 AS TEXT) IS NULL OR entity = ?2)
     ORDER BY detector, entity";

/// Incidents due to resolve at `?1` (nanoseconds), at most `?2`, the earliest first.
pub(super) const QUIET_INCIDENTS: &str = "SELECT id, body, resolve_at_ns FROM alerts
     WHERE resolved_at_ns IS NULL AND resolve_at_ns IS NOT NULL AND resolve_at_ns <= ?1
     ORDER BY resolve_at_ns LIMIT ?2";

/// The next event number of alert `?1`'s deliveries.
pub(super) const NEXT_SEQ: &str =
    "SELECT COALESCE(MAX(seq) + 1, 0) FROM webhook_outbox WHERE alert_id = ?1";

/// A pending delivery of event `?4` (number `?3`) of alert `?1` to sink `?2`, due at once
/// (`?5`), carrying the alert as `?6` (null: the alert's row as it is when sent).
pub(super) const INSERT_DELIVERY: &str = "INSERT INTO webhook_outbox
     (alert_id, sink, seq, event, state, next_attempt_at_ms, updated_at_ms, body)
     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6)";

/// Fails delivery `?5` of alert `?3` to sink `?4` for good at `?2`, because of `?1`.
pub(super) const FAIL_DELIVERY: &str =
    "UPDATE webhook_outbox SET state = 'failed', last_error = ?1, updated_at_ms = ?2
     WHERE alert_id = ?3 AND sink = ?4 AND seq = ?5";

/// When the earliest pending delivery to sink `?1` falls due.
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_attempt_at_ms) FROM webhook_outbox
     WHERE sink = ?1 AND state = 'pending'";

/// Records a finished attempt (the columns of an `AttemptRow`, then `updated_at_ms`, alert id,
/// sink, event number and the claim it was made under); only a pending row still held by that
/// claim changes.
pub(super) const RECORD_ATTEMPT: &str = "UPDATE webhook_outbox
     SET state = ?1, attempts = attempts + 1, next_attempt_at_ms = ?2, last_error = ?3,
         last_status = ?4, delivered_at_ms = ?5, updated_at_ms = ?6
     WHERE alert_id = ?7 AND sink = ?8 AND seq = ?9 AND state = 'pending' AND claims = ?10";

/// Counts an attempt whose claim had been taken over (its lease ran out and the row was
/// claimed again, or it was delivered meanwhile): a delivery it made is recorded as an attempt
/// (`?1` the time, then alert id, sink, event number), and a delivery it made when the row was
/// still pending marks it delivered (`?5`: 1 when it was delivered, with its status `?6`).
pub(super) const RECORD_LATE_ATTEMPT: &str = "UPDATE webhook_outbox
     SET attempts = attempts + 1, updated_at_ms = ?1,
         state = CASE WHEN ?5 = 1 AND state = 'pending' THEN 'delivered' ELSE state END,
         delivered_at_ms = CASE WHEN ?5 = 1 AND state = 'pending' THEN ?1 ELSE delivered_at_ms END,
         last_status = CASE WHEN ?5 = 1 AND state = 'pending' THEN ?6 ELSE last_status END,
         last_error = CASE WHEN ?5 = 1 AND state = 'pending' THEN NULL ELSE last_error END
     WHERE alert_id = ?2 AND sink = ?3 AND seq = ?4";

/// Gives back claim `?5` of delivery `?4` of alert `?2` to sink `?3`: due at `?1` at the latest.
pub(super) const RELEASE: &str = "UPDATE webhook_outbox
     SET next_attempt_at_ms = CASE WHEN next_attempt_at_ms < ?1 THEN next_attempt_at_ms ELSE ?1 END
     WHERE alert_id = ?2 AND sink = ?3 AND seq = ?4 AND state = 'pending' AND claims = ?5";

/// Every delivery of alert `?1`, in the column order of `outbox::DeliveryRow`.
pub(super) const DELIVERIES: &str = "SELECT sink, state, attempts, last_error, last_status,
         next_attempt_at_ms, delivered_at_ms, seq, event
     FROM webhook_outbox WHERE alert_id = ?1 ORDER BY seq, sink";

/// The stored version of detector `?1`'s stream.
pub(super) const STREAM_VERSION: &str = "SELECT version FROM streams WHERE detector = ?1";

/// The stored snapshot of detector `?1`'s stream.
pub(super) const STREAM_BOOK: &str = "SELECT book FROM streams WHERE detector = ?1";

/// Detector `?1`'s stream as version `?2` with snapshot `?3`, at `?4`.
pub(super) const PUT_STREAM: &str =
    "INSERT INTO streams (detector, version, book, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (detector) DO UPDATE SET version = excluded.version, book = excluded.book,
       updated_at_ms = excluded.updated_at_ms";

/// A closed window of detector `?1`: start, entity key, seq, `closed_at_ms`, anomaly flag, body.
pub(super) const INSERT_WINDOW: &str =
    "INSERT INTO windows (detector, start_s, entity, seq, closed_at_ms, is_anomaly, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// [`INSERT_WINDOW`] on PostgreSQL for many windows of one detector (`$1`), their other
/// columns as arrays of one element per window.
pub(super) const INSERT_WINDOWS_PG: &str =
    "INSERT INTO windows (detector, start_s, entity, seq, closed_at_ms, is_anomaly, body)
     SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
                              $6::BOOLEAN[], $7::TEXT[])";

/// How many windows one [`insert_windows`] statement stores (SQLite: 1 + 6 × 64 = 385
/// parameters, under its oldest limit of 999).
pub(super) const WINDOWS_PER_INSERT: usize = 64;

/// [`INSERT_WINDOW`] for [`WINDOWS_PER_INSERT`] windows of one detector (`?1`), each row's
/// six other columns numbered on from `?2` (SQLite placeholders): one statement per 64 rows
/// instead of one per row.
pub(super) fn insert_windows() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let mut sql = String::from(
            "INSERT INTO windows (detector, start_s, entity, seq, closed_at_ms, is_anomaly, body) VALUES ",
        );
        for row in 0..WINDOWS_PER_INSERT {
            let p = 2 + 6 * row;
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(?1, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            ));
        }
        sql
    })
}

/// How many windows detector `?1` keeps pending (closed while it had no model).
pub(super) const PENDING_COUNT: &str =
    "SELECT COALESCE(SUM(windows), 0) FROM pending_windows WHERE detector = ?1";

/// Detector `?1`'s pending chunks, oldest first.
pub(super) const PENDING_CHUNKS: &str =
    "SELECT body FROM pending_windows WHERE detector = ?1 ORDER BY seq";

/// A chunk of `?3` pending windows of detector `?1`, `?4`, kept by the commit `?2`.
pub(super) const INSERT_PENDING: &str =
    "INSERT INTO pending_windows (detector, seq, windows, body) VALUES (?1, ?2, ?3, ?4)";

/// Every pending chunk of detector `?1` (scored).
pub(super) const DELETE_PENDING: &str = "DELETE FROM pending_windows WHERE detector = ?1";

/// Pending deliveries, all sinks together.
pub(super) const DEPTH: &str = "SELECT COUNT(*) FROM webhook_outbox WHERE state = 'pending'";

/// The statement with PostgreSQL's placeholders: `?N` becomes `$N` (none of these statements
/// holds a `?` otherwise).
pub(super) fn postgres(sql: &str) -> String {
    sql.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers_in_postgres() {
        assert_eq!(
            postgres(FAIL_DELIVERY),
            "UPDATE webhook_outbox SET state = 'failed', last_error = $1, updated_at_ms = $2
     WHERE alert_id = $3 AND sink = $4 AND seq = $5"
        );
        for sql in [
            INSERT_ALERT,
            INSERT_INCIDENT,
            UPDATE_ALERT,
            OPEN_INCIDENT,
            UNRESOLVED_INCIDENTS,
            QUIET_INCIDENTS,
            NEXT_SEQ,
            INSERT_DELIVERY,
            RECORD_LATE_ATTEMPT,
            RELEASE,
            FAIL_DELIVERY,
            NEXT_DUE,
            RECORD_ATTEMPT,
            DELIVERIES,
            DEPTH,
            ALERT_BODY,
            SET_STATUS_BODY,
            STREAM_VERSION,
            STREAM_BOOK,
            PUT_STREAM,
            INSERT_WINDOW,
        ] {
            let pg = postgres(sql);
            assert!(!pg.contains('?'), "{pg}");
            assert_eq!(pg.matches('$').count(), sql.matches('?').count());
        }
    }
}
