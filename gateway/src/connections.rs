//! The public listeners' connections, from accept to Pingora's proxy: the connection cap, the
//! TLS handshake, and the HTTP/1 request-header phase, each bounded so that slow or greedy
//! clients cannot starve the others.
//!
//! Pingora times out each read of a request header (60 s) but not the header as a whole, and
//! caps it at 1 MiB: a slowloris trickling one byte per minute holds its connection forever.
//! So this app reads each HTTP/1 request head itself, with a deadline for the whole head and a
//! size cap, and hands the bytes to Pingora as the session's already-received prefix (the hook
//! Pingora uses for pipelined requests); the proxy then parses and serves it as usual. The TLS
//! handshake runs here, not in Pingora's listener, for the same reason: a client that connects
//! and never says hello counts against the cap and is dropped after `handshake_timeout`.
//! HTTP/2 (negotiated by ALPN) goes straight to Pingora's h2 server, which bounds idle
//! connections with `h2_idle_timeout`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::errors::{error_body, Refusal};
use crate::proxy::{headers, Gateway};
use crate::state::GatewayState;

/// While the process drains (graceful shutdown or upgrade), an idle keep-alive connection still
/// gets this long to send its next request, which is answered with `Connection: close`. Closing
/// it at once would race against a request already on the wire.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// The connections of both public listeners (plain and TLS) together.
pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
}

impl ConnectionBudget {
    pub fn new(max_connections: usize) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            slots: Arc::new(Semaphore::new(max_connections)),
        })
    }
}

/// One public listener's app: plain HTTP when `tls` is `None`.
pub struct PublicListener {
    proxy: Arc<HttpProxy<Gateway>>,
    tls: Option<Acceptor>,
    budget: Arc<ConnectionBudget>,
    state: Arc<GatewayState>,
}

impl PublicListener {
    pub fn new(
        proxy: Arc<HttpProxy<Gateway>>,
        tls: Option<Acceptor>,
        budget: Arc<ConnectionBudget>,
        state: Arc<GatewayState>,
    ) -> PublicListener {
        PublicListener {
            proxy,
            tls,
            budget,
            state,
        }
    }

    fn hit(&self, limit: &str) {
        self.state
            .metrics
            .client_limit_hits
            .with_label_values(&[limit])
            .inc();
    }

    /// Counts the connection while it lives.
    fn admit(&self) -> Option<OpenConnection> {
        match self.budget.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.state.metrics.client_connections.inc();
                Some(OpenConnection {
                    _permit: permit,
                    state: self.state.clone(),
                })
            }
            Err(_) => {
                self.hit("max_connections");
                None
            }
        }
    }

    async fn handshake(&self, acceptor: &Acceptor, stream: Stream) -> Option<Stream> {
        // Listeners hand over plain TCP streams; the handshake needs the concrete type.
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::error!("TLS listener received a non-TCP stream");
                return None;
            }
        };
        let limit = self.state.config.load().clients.handshake_timeout;
        match tokio::time::timeout(limit, acceptor.tls_handshake(l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                self.state.metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.hit("handshake_timeout");
                None
            }
        }
    }

    /// The HTTP/1 keep-alive loop: read a request head (bounded), let the proxy serve it, repeat.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let config = self.state.config.load_full();
            let limits = &config.clients;
            let now = Instant::now();
            let bounds = if first {
                // A new connection gets one header timeout for everything up to the end of its
                // first head, as nginx's client_header_timeout.
                HeadBounds {
                    first_byte_by: now + limits.header_timeout,
                    head_within: None,
                    max_header_bytes: limits.max_header_bytes,
                }
            } else {
                HeadBounds {
                    first_byte_by: now + limits.keepalive_timeout,
                    head_within: Some(limits.header_timeout),
                    max_header_bytes: limits.max_header_bytes,
                }
            };
            let head = read_head(&mut stream, bounds, shutdown.clone()).await;
            let head = match head {
                Head::Complete(buf) => buf,
                Head::Closed => return,
                Head::TimedOut => {
                    self.hit("header_timeout");
                    return refuse(stream, Refusal::RequestTimeout).await;
                }
                Head::TooLarge => {
                    self.hit("max_header_bytes");
                    return refuse(stream, Refusal::HeadersTooLarge).await;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => session.set_keepalive(Some(limits.keepalive_timeout.as_secs())),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            // Pingora times out each read of the body separately (as nginx's
            // client_body_timeout does); the proxy counts it when it bites.
            session.set_read_timeout(Some(limits.body_timeout));
            session.set_pipelined_prefix(head);
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
            first = false;
        }
    }
}

struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    state: Arc<GatewayState>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.metrics.client_connections.dec();
    }
}

#[async_trait]
impl ServerApp for PublicListener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.admit()?;
        let stream = match &self.tls {
            Some(acceptor) => self.handshake(acceptor, stream).await?,
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Pingora's h2 server: one task per stream, the connection closed after
            // `h2_idle_timeout` without streams.
            return self.proxy.process_new(stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

struct HeadBounds {
    /// Until when to wait for the first byte (silently closing after).
    first_byte_by: Instant,
    /// From the first byte to the end of the head; `None`: by `first_byte_by` too.
    head_within: Option<Duration>,
    max_header_bytes: usize,
}

enum Head {
    /// The head and whatever followed it in the same reads.
    Complete(BytesMut),
    /// The client closed, or never started a request within the idle time.
    Closed,
    TimedOut,
    TooLarge,
}

/// Reads until the blank line that ends an HTTP/1 request head.
async fn read_head(stream: &mut Stream, bounds: HeadBounds, mut shutdown: ShutdownWatch) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    // Waiting for the first byte.
    let mut idle_until = bounds.first_byte_by;
    let mut draining = *shutdown.borrow();
    if draining {
        idle_until = idle_until.min(Instant::now() + DRAIN_IDLE);
    }
    loop {
        tokio::select! {
            biased;
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(_) => break,
            },
            _ = tokio::time::sleep_until(idle_until) => {
                return match bounds.head_within {
                    // A new connection that never sent a request.
                    None if !draining => Head::TimedOut,
                    // A keep-alive connection that stayed idle, or the drain window closing:
                    // closed without a word.
                    _ => Head::Closed,
                };
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    idle_until = idle_until.min(Instant::now() + DRAIN_IDLE);
                }
            }
        }
    }
    // The head, against one deadline however it is trickled.
    let deadline = match bounds.head_within {
        Some(limit) => Instant::now() + limit,
        None => bounds.first_byte_by,
    };
    let mut scanned = 0;
    loop {
        if let Some(end) = head_end(&buf, scanned) {
            return if end > bounds.max_header_bytes {
                Head::TooLarge
            } else {
                Head::Complete(buf)
            };
        }
        if buf.len() > bounds.max_header_bytes {
            return Head::TooLarge;
        }
        scanned = buf.len().saturating_sub(3);
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Head::TimedOut,
        }
    }
}

/// The offset just past the blank line ending the head (CRLF CRLF, or bare LF LF as httparse
/// also accepts), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Answers a request the proxy never saw and closes the connection.
async fn refuse(mut stream: Stream, refusal: Refusal) {
    let request_id = headers::request_id(None);
    let request_id = request_id.to_str().unwrap_or("-");
    let body = error_body(refusal, request_id);
    let reason = match refusal.status() {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        refusal.status(),
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    // A client that stopped reading does not get to hold the connection either.
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        // Resuming a scan three bytes back still sees a terminator split across reads.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(buf, buf.len() - 4), Some(buf.len()));
    }
}
