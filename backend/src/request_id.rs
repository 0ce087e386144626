//! Every response carries `X-Request-Id`: the caller's (the gateway's) when it is sane, else a
//! new one. The id is also kept in a task-local so error bodies can name it without threading it
//! through every handler.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};

tokio::task_local! {
    static CURRENT: String;
}

pub struct RequestId;

impl RequestId {
    /// The id of the request being handled, or `""` outside of one.
    pub fn current() -> String {
        CURRENT.try_with(Clone::clone).unwrap_or_default()
    }

    /// 1–64 characters of `[A-Za-z0-9._:-]`; anything else is replaced, never echoed.
    pub fn is_sane(value: &str) -> bool {
        (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }

    pub fn generate() -> String {
        format!("req_{}", ulid::Ulid::new().to_string().to_ascii_lowercase())
    }
}

pub async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| RequestId::is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(RequestId::generate);
    let header = HeaderValue::from_str(&id).expect("sane request ids are valid header values");
    let mut response = CURRENT.scope(id, next.run(request)).await;
    response.headers_mut().insert("x-request-id", header);
    response
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn sanity() {
        assert!(RequestId::is_sane("abc-123_x.y:z"));
        assert!(!RequestId::is_sane(""));
        assert!(!RequestId::is_sane("a b"));
        assert!(!RequestId::is_sane(&"x".repeat(65)));
        assert!(RequestId::is_sane(&RequestId::generate()));
    }
}
