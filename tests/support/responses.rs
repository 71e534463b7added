//! Assertions on the service's answers: the status with a JSON body, the Content-Type, and the
//! RFC 9457 problem every error must be.

use reqwest::{Response, StatusCode, header};
use serde_json::Value;

/// Asserts a 200 with a JSON body and returns the body.
pub async fn json_ok(response: Response) -> Value {
    json_with_status(response, StatusCode::OK).await
}

/// Asserts `status` with a JSON body and returns the body (the body is in the failure message).
pub async fn json_with_status(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let url = response.url().clone();
    let text = response.text().await.expect("a body");
    assert_eq!(got, status, "{url}: unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

/// The response's `Content-Type`, or "" when it has none.
pub fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Asserts an RFC 9457 problem with `status` and `code`; returns the problem body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let content_type = content_type(&response);
    let body = json_with_status(response, status).await;
    assert_eq!(
        content_type, "application/problem+json",
        "a problem is served as application/problem+json: {body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("/problems/{code}"), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "a problem tells the user what went wrong: {body}"
    );
    body
}

/// `text` without the value of each `"closed_at"` (the instant a window closed, which differs
/// between two runs that store the same windows).
pub fn without_closed_at(text: &str) -> String {
    const KEY: &str = "\"closed_at\":\"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        out.push_str(&rest[..at + KEY.len()]);
        let value = &rest[at + KEY.len()..];
        rest = &value[value.find('"').expect("a closed string")..];
    }
    out.push_str(rest);
    out
}
