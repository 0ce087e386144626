//! TLS on both sides of the gateway.
//!
//! Downstream: the HTTPS listener's certificate and key are loaded and checked, then served by a
//! rustls certificate resolver whose pair is swapped atomically: a handshake takes whichever pair
//! is current, and connections already open keep the one they negotiated. `CertReloader` re-reads
//! the files when they change (certbot and cert-manager replace them by rename or symlink swap);
//! a pair that fails the checks is refused, logged and counted, and the running one stays.
//!
//! Upstream: `read_ca_file` checks `backend_ca`, the PEM bundle `https://` backends are verified
//! against (by Pingora's connector for proxied requests, by reqwest for key sync and usage).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::ALPN;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::RuntimeConfig;
use crate::state::GatewayState;

/// Renewals write the two files one after the other; wait for the burst to settle.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Changes that inotify cannot see (network file systems, a watch that failed) are still picked
/// up by comparing the files' contents this often.
const POLL: Duration = Duration::from_secs(5);

/// A certificate chain and key that passed the checks, with a digest of the bytes they came
/// from (to tell a real change from a touch).
pub struct LoadedPair {
    pub key: Arc<CertifiedKey>,
    digest: [u8; 32],
    /// Subject and expiry of the leaf, for logs.
    pub summary: String,
}

/// Reads and checks a PEM chain + key: at least one certificate, a private key rustls can sign
/// with, the key matching the leaf certificate, and the leaf valid now.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedPair, String> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let key_pem =
        std::fs::read(key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let digest = pair_digest(&cert_pem, &key_pem);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", key_path.display()))?;

    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        format!(
            "{}: the first certificate does not parse: {e}",
            cert_path.display()
        )
    })?;
    let validity = leaf.validity();
    if !validity.is_valid() {
        return Err(format!(
            "{}: the certificate is not valid now (valid from {} to {})",
            cert_path.display(),
            validity.not_before,
            validity.not_after
        ));
    }
    let summary = format!("{} (expires {})", leaf.subject(), validity.not_after);

    let certified = CertifiedKey::from_der(chain, key, provider().as_ref()).map_err(|e| {
        format!(
            "{} and {} are not a usable pair: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(LoadedPair {
        key: Arc::new(certified),
        digest,
        summary,
    })
}

fn pair_digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert_pem.len() as u64).to_be_bytes());
    h.update(cert_pem);
    h.update(key_pem);
    h.finalize().into()
}

/// The process's rustls crypto provider (Pingora installs `ring` as the default).
fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .expect("a default rustls crypto provider was just installed")
}

/// Checks that `path` is a readable PEM bundle with at least one CA certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The HTTP client for the gateway's own calls to the backend (key sync, usage reports): with
/// `backend_ca` set, that CA is the only one trusted, as for proxied requests.
pub fn backend_client(config: &RuntimeConfig) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    let Some(path) = &config.backend_ca else {
        return builder;
    };
    // `validate` has read this file already; a CA that vanished since is reported by the
    // calls failing verification.
    let certs = read_ca_file(path).unwrap_or_default();
    certs.into_iter().fold(
        builder.tls_built_in_root_certs(false),
        |builder, der| match reqwest::Certificate::from_der(&der) {
            Ok(cert) => builder.add_root_certificate(cert),
            Err(e) => {
                tracing::warn!(error = %e, "backend_ca: skipping a certificate reqwest cannot use");
                builder
            }
        },
    )
}

/// Serves the current pair to every handshake; `install` swaps it without touching open
/// connections.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: ArcSwap::new(initial),
        })
    }

    pub fn install(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Pingora's rustls acceptor for the HTTPS listener: TLS 1.2 and 1.3 only (Pingora's rustls
/// backend offers nothing older), rustls' default suites (AEAD only: AES-GCM and
/// ChaCha20-Poly1305, ECDHE key exchange), ALPN `h2` then `http/1.1`.
pub fn acceptor(resolver: Arc<CertResolver>) -> Acceptor {
    let mut settings =
        TlsSettings::intermediate("", "").expect("TLS settings without files cannot fail");
    settings.set_cert_resolver(resolver);
    settings.set_alpn(ALPN::H2H1);
    settings.build()
}

/// Watches the certificate and key files and installs a changed pair once it passes the checks.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    state: Arc<GatewayState>,
    /// Digest of the files last looked at, good or bad: a bad pair is reported once, not on
    /// every poll.
    last_seen: std::sync::Mutex<[u8; 32]>,
}

impl CertReloader {
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        initial: &LoadedPair,
        resolver: Arc<CertResolver>,
        state: Arc<GatewayState>,
    ) -> CertReloader {
        CertReloader {
            cert,
            key,
            resolver,
            state,
            last_seen: std::sync::Mutex::new(initial.digest),
        }
    }

    /// Re-reads the files; installs them if they changed and pass the checks.
    pub fn check(&self) {
        // Cheap pre-check: only a content change is worth a reload (and a log line).
        let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&self.cert), std::fs::read(&self.key))
        else {
            // Mid-rename or removed: the error is reported once the files settle (or stay gone).
            return self.attempt(None);
        };
        self.attempt(Some(pair_digest(&cert_pem, &key_pem)));
    }

    fn attempt(&self, digest: Option<[u8; 32]>) {
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if digest == Some(*last) {
            return;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *last = pair.digest;
                self.resolver.install(pair.key);
                self.state.metrics.tls_cert_reloads.inc();
                tracing::info!(certificate = %pair.summary, "TLS certificate reloaded");
            }
            Err(reason) => {
                let Some(digest) = digest else {
                    // Unreadable files: say so once per distinct state.
                    if *last != [0; 32] {
                        *last = [0; 32];
                        self.state.metrics.tls_cert_reload_errors.inc();
                        tracing::error!(error = %reason, "TLS certificate reload refused; keeping the running certificate");
                    }
                    return;
                };
                *last = digest;
                self.state.metrics.tls_cert_reload_errors.inc();
                tracing::error!(error = %reason, "TLS certificate reload refused; keeping the running certificate");
            }
        }
    }

    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if !event.kind.is_access() {
                        let _ = tx.send(());
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot watch the TLS files; polling them"))
            .ok()?;
        // The directories, not the files: a rename or symlink swap replaces the watched inode.
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key]
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch a TLS directory; polling it");
            }
        }
        Some(watcher)
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = self.watch(tx);
        let mut poll = tokio::time::interval(POLL);
        poll.tick().await;
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    self.check();
                }
                _ = poll.tick() => self.check(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
