//! The outbox: the durable queue of webhook deliveries, split by job.
//!
//! - `fan_out`: events → one delivery per subscribed endpoint, exactly once; pruning;
//! - `lease`: claimable endpoints, probes, claims under a lease, giving back;
//! - `record`: attempts, delivery states, endpoint health;
//! - `manual`: test events and manual retries;
//! - `delivery_log`: the read model of the console's delivery log.

mod delivery_log;
mod fan_out;
mod lease;
mod manual;
mod record;

pub use delivery_log::*;
pub use fan_out::{prune_history, run_fan_out, FanOut};
pub use lease::*;
pub use manual::*;
pub use record::*;

use crate::clock::rfc3339;

/// Rows per multi-row INSERT: far below SQLite's and PostgreSQL's bind-parameter limits.
const INSERT_CHUNK: usize = 400;
/// Snippet of the response body kept per attempt.
pub const RESPONSE_SNIPPET: usize = 1024;

/// A claimed delivery with everything needed to send it. Its `Debug` leaves the keys out.
#[derive(Clone)]
pub struct Job {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts before this one.
    pub attempt_count: i64,
    pub url: String,
    pub keys: Vec<Vec<u8>>,
    pub body: bytes::Bytes,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("attempt_count", &self.attempt_count)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The SPEC §8 body. `data` is stored as JSON text by `events::emit` and goes in verbatim.
pub fn event_body(
    id: &str,
    event_type: &str,
    created_at: i64,
    account_id: &str,
    data: &str,
) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    format!(
        r#"{{"id":{},"type":{},"created_at":{},"account_id":{},"data":{}}}"#,
        s(id),
        s(event_type),
        s(&rfc3339(created_at)),
        s(account_id),
        if data.trim().is_empty() { "null" } else { data }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_embeds_the_event_data_verbatim() {
        let body = event_body(
            "evt_1",
            "message.read",
            0,
            "acc_1",
            r#"{"message_id":"msg_1"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "message.read");
        assert_eq!(v["created_at"], rfc3339(0));
        assert_eq!(v["account_id"], "acc_1");
        assert_eq!(v["data"]["message_id"], "msg_1");
    }
}
