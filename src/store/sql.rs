//! The statements the SQLite and PostgreSQL backends both run, written once where the dialects
//! agree, with SQLite's numbered placeholders (`?1`); [`postgres`] gives PostgreSQL's (`$1`).

/// An alert's row: `id, created_at_ns, severity, status, model_version, body`.
pub(super) const INSERT_ALERT: &str =
    "INSERT INTO alerts (id, created_at_ns, severity, status, model_version, body, detector)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A pending delivery of alert `?1` to sink `?2`, due at once (`?3`: the alert's creation).
pub(super) const INSERT_DELIVERY: &str =
    "INSERT INTO webhook_outbox (alert_id, sink, state, next_attempt_at_ms, updated_at_ms)
     VALUES (?1, ?2, 'pending', ?3, ?3)";

/// Fails the delivery of alert `?3` to sink `?4` for good at `?2`, because of `?1`.
pub(super) const FAIL_DELIVERY: &str =
    "UPDATE webhook_outbox SET state = 'failed', last_error = ?1, updated_at_ms = ?2
     WHERE alert_id = ?3 AND sink = ?4";

/// When the earliest pending delivery to sink `?1` falls due.
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_attempt_at_ms) FROM webhook_outbox
     WHERE sink = ?1 AND state = 'pending'";

/// Records a finished attempt (the columns of an `AttemptRow`, then `updated_at_ms`, alert id
/// and sink); only a pending row changes.
pub(super) const RECORD_ATTEMPT: &str = "UPDATE webhook_outbox
     SET state = ?1, attempts = attempts + 1, next_attempt_at_ms = ?2, last_error = ?3,
         last_status = ?4, delivered_at_ms = ?5, updated_at_ms = ?6
     WHERE alert_id = ?7 AND sink = ?8 AND state = 'pending'";

/// Every delivery of alert `?1`, in the column order of `outbox::DeliveryRow`.
pub(super) const DELIVERIES: &str =
    "SELECT sink, state, attempts, last_error, last_status, next_attempt_at_ms, delivered_at_ms
     FROM webhook_outbox WHERE alert_id = ?1 ORDER BY sink";

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
            postgres(INSERT_DELIVERY),
            "INSERT INTO webhook_outbox (alert_id, sink, state, next_attempt_at_ms, updated_at_ms)
     VALUES ($1, $2, 'pending', $3, $3)"
        );
        for sql in [
            INSERT_ALERT,
            FAIL_DELIVERY,
            NEXT_DUE,
            RECORD_ATTEMPT,
            DELIVERIES,
            DEPTH,
        ] {
            let pg = postgres(sql);
            assert!(!pg.contains('?'), "{pg}");
            assert_eq!(pg.matches('$').count(), sql.matches('?').count());
        }
    }
}
