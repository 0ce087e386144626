//! The Pingora proxy: one `Gateway` whose `ProxyHttp` phases only orchestrate. Decisions live in
//! `auth`, `limits`, `throttle`, `client_ip` and `routes`; this module turns them into responses
//! and headers.

pub mod headers;
pub mod routes;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::backend_auth;
use crate::checks::{self, CheckOutcome};
use crate::client_ip;
use crate::clock::unix_ms;
use crate::config::RuntimeConfig;
use crate::errors::{error_body, Refusal};
use crate::keys::{InlineStr, KeyRecord};
use crate::limits::LimitState;
use crate::state::GatewayState;
use crate::upstream;
pub use routes::RouteClass;

/// Per-request state. It holds the one config snapshot every phase of the request uses.
pub struct RequestCtx {
    started: Instant,
    config: Arc<RuntimeConfig>,
    /// Empty until `request_filter` sets it.
    request_id: HeaderValue,
    route: RouteClass,
    client_ip: IpAddr,
    /// `client_ip` as text, formatted once for the forwarded headers, the proof and the log.
    client_ip_text: HeaderValue,
    /// `https` when the client's connection is TLS, else `http`.
    scheme: &'static str,
    key: Option<Arc<KeyRecord>>,
    /// The 12-character prefix of presented credentials that matched no key.
    presented_prefix: Option<InlineStr>,
    limits: Option<LimitState>,
    refusal: Option<Refusal>,
    admitted: Option<checks::Admitted>,
    upstream_started: Option<Instant>,
    /// Indexes of the backends this request was sent to, in order; the last one is current.
    tried: Vec<usize>,
}

impl RequestCtx {
    fn request_id(&self) -> &str {
        // Built from a checked client value or a ULID: always visible ASCII.
        self.request_id.to_str().unwrap_or("-")
    }

    fn client_ip_text(&self) -> &str {
        self.client_ip_text.to_str().unwrap_or("-")
    }
}

pub struct Gateway {
    state: Arc<GatewayState>,
}

impl Gateway {
    pub fn new(state: Arc<GatewayState>) -> Gateway {
        Gateway { state }
    }

    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Runs the SPEC §4 checks for a `/v1` request. `Ok(())` means forward it.
    async fn check_v1(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), (Refusal, Option<u64>)> {
        let headers = &session.req_header().headers;
        let outcome = checks::check_v1(
            &self.state,
            &ctx.config,
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            headers.get(headers::API_SECRET).map(|v| v.as_bytes()),
            ctx.client_ip,
            unix_ms(),
        )
        .await;
        match outcome {
            CheckOutcome::Admitted {
                key,
                limits,
                admitted,
            } => {
                ctx.key = Some(key);
                ctx.limits = Some(limits);
                ctx.admitted = Some(admitted);
                Ok(())
            }
            CheckOutcome::KeyRefused {
                key,
                refusal,
                retry_after_secs,
                limits,
            } => {
                ctx.key = Some(key);
                ctx.limits = limits;
                Err((refusal, retry_after_secs))
            }
            CheckOutcome::Refused {
                refusal,
                retry_after_secs,
                presented_prefix,
            } => {
                ctx.presented_prefix = presented_prefix;
                Err((refusal, retry_after_secs))
            }
        }
    }

    /// Writes a JSON response (a refusal, or the health answer) and ends the request.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        body: Vec<u8>,
        retry_after: Option<u64>,
    ) -> Result<()> {
        let mut header = ResponseHeader::build(status, Some(8))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        header.insert_header(headers::REQUEST_ID, ctx.request_id.clone())?;
        if let Some(hsts) = hsts(session, &ctx.config) {
            header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
        }
        if let (RouteClass::V1, Some(limits)) = (ctx.route, &ctx.limits) {
            headers::insert_limit_headers(&mut header, limits)?;
        }
        if status == 429 || status == 503 {
            header.insert_header(
                http::header::RETRY_AFTER,
                retry_after.unwrap_or(1).max(1).to_string(),
            )?;
        }
        // The request body was not read; reusing the connection would misparse it.
        let unread_body = !session.as_downstream_mut().is_body_empty();
        if unread_body {
            session.set_keepalive(None);
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        // The unread body is drained in `logging`, after the answer is on its way.
        Ok(())
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
        retry_after: Option<u64>,
    ) -> Result<bool> {
        ctx.refusal = Some(refusal);
        let body = error_body(refusal, ctx.request_id());
        self.respond(session, ctx, refusal.status(), body, retry_after)
            .await?;
        Ok(true)
    }
}

/// Lingering close: read and discard what the client is still sending before the connection
/// closes. Closing a socket with unread data makes the kernel send a reset, and a client still
/// writing its body (a bulk send refused with 429, an oversized one with 413) then gets a broken
/// pipe instead of the answer written to it. Bounded, as nginx bounds its own: bodies announced
/// larger than `LINGER_MAX_BYTES` are not waited for, and no drain lasts beyond `LINGER_TIME`.
async fn linger(session: &mut Session) {
    const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;
    const LINGER_TIME: Duration = Duration::from_secs(5);
    if declared_body_len(session).is_some_and(|n| n > LINGER_MAX_BYTES) {
        return;
    }
    let _ = tokio::time::timeout(
        LINGER_TIME,
        session.as_downstream_mut().drain_request_body(),
    )
    .await;
}

/// `Strict-Transport-Security` for a response on a TLS connection (never on plain HTTP, where
/// the header means nothing and RFC 6797 says not to send it).
fn hsts<'c>(session: &Session, config: &'c RuntimeConfig) -> Option<&'c str> {
    let over_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    if !over_tls {
        return None;
    }
    config.tls.as_ref()?.hsts.as_deref()
}

/// The request's `Content-Length`, when it has a valid one.
fn declared_body_len(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            config: self.state.config.load_full(),
            request_id: HeaderValue::from_static(""),
            route: RouteClass::Unknown,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            client_ip_text: HeaderValue::from_static(""),
            scheme: "http",
            key: None,
            presented_prefix: None,
            limits: None,
            refusal: None,
            admitted: None,
            upstream_started: None,
            tried: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = headers::request_id(req.headers.get(headers::REQUEST_ID));
        ctx.route = routes::classify(req.uri.path());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            ctx.scheme = "https";
        }
        ctx.client_ip = client_ip::resolve(
            peer,
            // Passed lazily: only read when the peer is a trusted proxy.
            req.headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
            &ctx.config.trusted_proxies,
        );
        ctx.client_ip_text = headers::client_ip(ctx.client_ip);

        // Before any check: an oversized request is refused whoever sends it, and a refused
        // request is never counted against a key's limits.
        let forwarded = !matches!(
            ctx.route,
            RouteClass::Healthz | RouteClass::Internal | RouteClass::Unknown
        );
        if forwarded && declared_body_len(session).is_some_and(|n| n > ctx.config.max_body_bytes) {
            return self
                .refuse(session, ctx, Refusal::PayloadTooLarge, None)
                .await;
        }

        match ctx.route {
            RouteClass::Healthz => {
                self.respond(session, ctx, 200, br#"{"status":"ok"}"#.to_vec(), None)
                    .await?;
                Ok(true)
            }
            RouteClass::Internal | RouteClass::Unknown => {
                self.refuse(session, ctx, Refusal::NotFound, None).await
            }
            RouteClass::OpenApi
            | RouteClass::Admin
            | RouteClass::Console
            | RouteClass::ChannelWebhook => Ok(false),
            RouteClass::V1 => match self.check_v1(session, ctx).await {
                Ok(()) => Ok(false),
                Err((refusal, retry_after)) => {
                    self.refuse(session, ctx, refusal, retry_after).await
                }
            },
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstreams = &self.state.upstreams;
        // After every backend was tried, one more attempt is allowed: Pingora retries a request
        // whose pooled connection turned out stale, and with one backend that is the same one.
        let backend = upstreams.pick(&ctx.tried).or_else(|| {
            (ctx.tried.len() <= upstreams.len())
                .then(|| upstreams.pick(&[]))
                .flatten()
        });
        let Some(backend) = backend else {
            // Every backend was tried: the client gets 502 backend_unavailable.
            return Err(Error::create(
                ErrorType::ConnectNoRoute,
                ErrorSource::Upstream,
                Some("every backend was tried".into()),
                None,
            ));
        };
        ctx.tried.push(backend.index);
        upstreams.record_attempt(backend.index);
        let mut peer = upstream::peer_for(backend);
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.total_connection_timeout = Some(Duration::from_secs(3));
        // Generous enough for a 10,000-recipient bulk request; a hung backend still frees the
        // connection eventually and the client gets a 502 rather than waiting forever.
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.write_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// Nothing reached this backend: the request goes to another one, if any is left.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(&index) = ctx.tried.last() {
            self.state.upstreams.record_error(index);
        }
        e.set_retry(ctx.tried.len() < self.state.upstreams.len());
        e
    }

    /// The connection broke after it was established. A retry (on another backend when one is
    /// left) is safe only if the backend cannot have acted on the request twice: the method is
    /// idempotent or the client sent an `Idempotency-Key` (the backend answers a repeat with the
    /// first answer), the whole body is still buffered, and no answer went to the client yet.
    /// Otherwise Pingora's own rule stays: a stale pooled connection of an idempotent request.
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let backend = ctx.tried.last().copied();
        let mut e = e.more_context(format!("backend {}", backend.map_or(-1, |b| b as i64)));
        if let Some(index) = backend {
            self.state.upstreams.record_error(index);
        }
        let req = session.req_header();
        let repeatable = req.method.is_idempotent() || req.headers.contains_key("idempotency-key");
        let safe = repeatable
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if !safe {
            e.set_retry(false);
        } else if ctx.tried.len() < self.state.upstreams.len() {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Headers of our namespace the client sent are dropped; collected only when present.
        if upstream
            .headers
            .keys()
            .any(|n| n.as_str().starts_with(headers::INTERNAL_PREFIX))
        {
            let internal: Vec<http::HeaderName> = upstream
                .headers
                .keys()
                .filter(|n| n.as_str().starts_with(headers::INTERNAL_PREFIX))
                .cloned()
                .collect();
            for name in internal {
                upstream.remove_header(&name);
            }
        }
        upstream.remove_header(&http::header::AUTHORIZATION);
        upstream.remove_header(headers::API_SECRET);
        // The backend's per-IP decisions use the proven client IP; forwarding headers the client
        // wrote are replaced so that nothing behind the gateway can mistake them for ours.
        upstream.remove_header(headers::FORWARDED);
        let (key_id, account_id) = match (&ctx.route, &ctx.key) {
            (RouteClass::V1, Some(key)) => (&*key.id, &*key.account_id),
            _ => ("", ""),
        };
        // Every forwarded request carries a proof, with or without a key: the backend trusts
        // `x-wiz-client-ip` (console login throttle, per-IP decisions) only when it verifies.
        let proof = ctx.config.proof_key.prove(&backend_auth::ProofInput {
            unix_secs: unix_ms() / 1000,
            scheme: ctx.scheme,
            method: upstream.method.as_str(),
            path_and_query: upstream.uri.path_and_query().map_or("/", |p| p.as_str()),
            client_ip: ctx.client_ip_text(),
            key_id,
            account_id,
            request_id: ctx.request_id(),
        });
        upstream.insert_header(headers::FORWARDED_FOR, ctx.client_ip_text.clone())?;
        upstream.insert_header(headers::REAL_IP, ctx.client_ip_text.clone())?;
        upstream.insert_header(headers::REQUEST_ID, ctx.request_id.clone())?;
        upstream.insert_header(headers::CLIENT_IP, ctx.client_ip_text.clone())?;
        upstream.insert_header(headers::SCHEME, ctx.scheme)?;
        if let (RouteClass::V1, Some(key)) = (&ctx.route, &ctx.key) {
            upstream.insert_header(headers::KEY_ID, &*key.id)?;
            upstream.insert_header(headers::ACCOUNT_ID, &*key.account_id)?;
            upstream.insert_header(headers::KEY_PREFIX, &*key.prefix)?;
        }
        upstream.insert_header(headers::GATEWAY_PROOF, proof)?;
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started.take() {
            self.state
                .metrics
                .upstream_duration
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header(headers::REQUEST_ID, ctx.request_id.clone())?;
        if let Some(hsts) = hsts(session, &ctx.config) {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
        }
        if let (RouteClass::V1, Some(limits)) = (ctx.route, &ctx.limits) {
            headers::insert_limit_headers(response, limits)?;
        }
        if response.status.as_u16() == 429
            && response.headers.get(http::header::RETRY_AFTER).is_none()
        {
            response.insert_header(http::header::RETRY_AFTER, "1")?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let refusal = match e.etype() {
            ErrorType::HTTPStatus(code) if *code >= 500 => Some(Refusal::Internal),
            ErrorType::HTTPStatus(_) => Some(Refusal::BadRequest),
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    if matches!(
                        e.etype(),
                        ErrorType::TLSHandshakeFailure
                            | ErrorType::InvalidCert
                            | ErrorType::HandshakeError
                            | ErrorType::TLSHandshakeTimedout
                    ) {
                        // Not a routine outage: a wrong CA, an expired or misnamed backend
                        // certificate. Said once per request, with the TLS error.
                        let backend = ctx
                            .tried
                            .last()
                            .and_then(|&i| ctx.config.backends.iter().find(|b| b.index == i));
                        tracing::error!(
                            backend = backend.map_or("-", |b| b.base_url.as_str()),
                            error = %e,
                            "backend TLS handshake refused: its certificate does not verify \
                             against backend_ca (or the system roots) for this host"
                        );
                    }
                    Some(Refusal::BackendUnavailable)
                }
                ErrorSource::Downstream => match e.etype() {
                    // A body paused longer than clients.body_timeout.
                    ErrorType::ReadTimedout => {
                        self.state
                            .metrics
                            .client_limit_hits
                            .with_label_values(&["body_timeout"])
                            .inc();
                        Some(Refusal::RequestTimeout)
                    }
                    // The client is gone; nobody to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => Some(Refusal::BadRequest),
                },
                ErrorSource::Internal | ErrorSource::Unset => Some(Refusal::Internal),
            },
        };
        let Some(refusal) = refusal else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if ctx.request_id.is_empty() {
            ctx.request_id = headers::request_id(None);
        }
        ctx.refusal = Some(refusal);
        // Once the backend's response header went out there is no way to send another status.
        if session.response_written().is_none() {
            session.set_keepalive(None);
            let body = error_body(refusal, ctx.request_id());
            if let Err(write_err) = self
                .respond(session, ctx, refusal.status(), body, None)
                .await
            {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A request the gateway answered itself with a 5xx (no backend reachable, or the
        // connection broke before an answer) is a refusal: it counts against no limit.
        if let (Some(admitted), Some(key), Some(refusal)) = (ctx.admitted, &ctx.key, ctx.refusal) {
            if refusal.status() >= 500 {
                self.state
                    .limits
                    .refund(&key.id, admitted.at_ms, admitted.local)
                    .await;
                self.state.usage.unrecord_accepted(&key.id, admitted.at_ms);
            }
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.refusal.map(Refusal::status))
            .unwrap_or(0);
        let latency = ctx.started.elapsed();
        let m = &self.state.metrics;
        m.count_request(ctx.route.label(), status);
        m.request_duration.observe(latency.as_secs_f64());
        if let Some(r) = ctx.refusal {
            m.refusals.with_label_values(&[r.code()]).inc();
        }
        let key_prefix = ctx
            .key
            .as_ref()
            .map(|k| &*k.prefix)
            .or(ctx.presented_prefix.as_deref())
            .unwrap_or("-");
        tracing::info!(
            target: "wiz_gateway::access",
            request_id = %ctx.request_id(),
            method = %session.req_header().method,
            route_class = ctx.route.label(),
            key_prefix,
            client_ip = %ctx.client_ip_text(),
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            code = ctx.refusal.map(Refusal::code).unwrap_or("-"),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            "request"
        );
        // Answered before the whole body was read (the gateway's own refusals, or the backend's
        // early answers such as a 413 for a login body over its limit): the client may still be
        // writing, so the connection closes with a lingering close.
        if !session.as_downstream_mut().is_body_done() {
            session.set_keepalive(None);
            linger(session).await;
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // A down backend is already reported once per request by the access line and the
        // refusal metric; Pingora's own error line would duplicate it.
        ctx.refusal == Some(Refusal::BackendUnavailable)
    }
}
