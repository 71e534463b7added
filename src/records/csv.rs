//! CSV bodies: a header row naming the fields, then one record per row, read as they arrive.

use std::io::Read;

use super::batch::MAX_COLUMNS;
use super::builder::{BatchBuilder, CellRef, Role};
use super::error::{RecordError, check_count};

/// Reads a CSV body with a header row into `b`: numbers become numbers (and stay text for
/// echoed columns), `timestamp` stays text, empty cells are missing values, cells are trimmed.
pub fn read_csv<R: Read>(body: R, b: &mut BatchBuilder) -> Result<(), RecordError> {
    let (mut reader, headers) = csv_reader(body)?;
    let ts_col = headers.iter().position(|h| h == "timestamp");
    let roles = b.header_roles(&headers);
    let mut record = csv::StringRecord::new();
    while next_row(&mut reader, &mut record)? {
        check_count(b.len() + 1, b.max_records())?;
        b.start_record();
        for (j, text) in record.iter().enumerate() {
            let role = roles[j];
            if role == Role::Skip || (role == Role::Label && !b.reads_labels()) {
                continue;
            }
            b.field(role, cell(text, Some(j) == ts_col));
        }
        b.end_record();
    }
    Ok(())
}

/// Reads the next row into `record`; false at the end of the body.
pub(crate) fn next_row<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::StringRecord,
) -> Result<bool, RecordError> {
    reader.read_record(record).map_err(|e| csv_error(&e))
}

/// What one CSV cell holds: trimmed, empty is missing, a number unless it is the timestamp
/// column (which stays text), else text. A number keeps its text too, so an echoed column
/// shows `123` or `nan` as written.
pub(crate) fn cell(text: &str, is_timestamp: bool) -> CellRef<'_> {
    let text = text.trim();
    if text.is_empty() {
        CellRef::Missing
    } else if is_timestamp {
        CellRef::Text(text)
    } else if let Ok(v) = text.parse::<f64>() {
        CellRef::NumText(v, text)
    } else {
        CellRef::Text(text)
    }
}

/// A CSV reader over `body` (strict: every record as wide as the header), with its header row
/// read, trimmed and checked.
pub(crate) fn csv_reader<R: Read>(body: R) -> Result<(csv::Reader<R>, Vec<String>), RecordError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .buffer_capacity(1 << 16)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| csv_error(&e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect::<Vec<_>>();
    check_csv_headers(&headers)?;
    Ok((reader, headers))
}

/// A CSV header row names every column once, and not too many.
fn check_csv_headers(headers: &[String]) -> Result<(), RecordError> {
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(RecordError::malformed("the CSV body has no header row"));
    }
    let mut seen = std::collections::HashSet::new();
    for h in headers {
        if h.is_empty() {
            return Err(RecordError::malformed(
                "a CSV header is empty; every column needs a name",
            ));
        }
        if !seen.insert(h.as_str()) {
            return Err(RecordError::malformed(format!(
                "CSV header {h:?} appears twice"
            )));
        }
    }
    if headers.len() > MAX_COLUMNS {
        return Err(RecordError::malformed(format!(
            "more than {MAX_COLUMNS} CSV columns"
        )));
    }
    Ok(())
}

pub(crate) fn csv_error(e: &csv::Error) -> RecordError {
    let at = e
        .position()
        .map(|p| format!(" (line {})", p.line()))
        .unwrap_or_default();
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("a row has {len} fields but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "the CSV body is not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    RecordError::malformed(format!("CSV{at}: {what}"))
}
