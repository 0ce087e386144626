//! The metrics listener (`metrics_listen`): `/metrics` in Prometheus text format and `/healthz`.
//! It runs as its own Pingora service so scraping never competes with the public listener.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::clock::unix_ms;
use crate::state::GatewayState;

pub struct MetricsApp {
    state: Arc<GatewayState>,
}

impl MetricsApp {
    pub fn new(state: Arc<GatewayState>) -> MetricsApp {
        MetricsApp { state }
    }
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => response(
                200,
                prometheus::TEXT_FORMAT,
                self.state.metrics.render(&self.state.keys, unix_ms()),
            ),
            "/healthz" => response(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            _ => response(
                404,
                "application/json",
                br#"{"error":{"type":"invalid_request_error","code":"not_found","message":"Only /metrics and /healthz are served here.","request_id":""}}"#.to_vec(),
            ),
        }
    }
}
