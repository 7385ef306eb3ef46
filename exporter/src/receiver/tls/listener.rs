//! Accepts a listener's TCP connections and, when TLS is served, completes each handshake
//! in its own task, within [`HANDSHAKE_TIMEOUT`], so a slow or failing client never
//! holds up the others. Yields ready connections to axum (as an `axum::serve::Listener`)
//! and to tonic (as an incoming stream). Not the TLS config itself (`rotation`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::ServerTls;

/// The longest a client may take to complete its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; further connections wait in the kernel's accept
/// backlog until one finishes (a flood of idle connections cannot take all memory).
const MAX_PENDING_HANDSHAKES: usize = 512;

/// Handshake failures worth a warning come in floods (a misconfigured fleet); one
/// warning per this interval, the rest at debug.
const FAILURE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A TCP listener that hands out connections ready for HTTP: plaintext, or with TLS
/// completed when its [`ServerTls`] serves a config at the moment they are accepted.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Option<Arc<ServerTls>>,
    handshakes: JoinSet<Option<(Connection, SocketAddr)>>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl From<TcpListener> for TlsListener {
    /// A plaintext listener.
    fn from(tcp: TcpListener) -> Self {
        Self::new(tcp, None)
    }
}

impl TlsListener {
    /// Accepts on `tcp`, with the TLS `tls` serves (if any) at each connection's accept.
    pub fn new(tcp: TcpListener, tls: Option<Arc<ServerTls>>) -> Self {
        Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
            last_warning: Arc::new(Mutex::new(None)),
        }
    }

    /// The next connection ready for HTTP. Cancel-safe: a connection accepted is either
    /// returned or already in its handshake task. Dropping the listener closes the socket
    /// and abandons the handshakes in progress.
    pub async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            tokio::select! {
                // Finished handshakes first: those clients have waited longest.
                biased;
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            accept_error(e).await;
                            continue;
                        }
                    };
                    // gRPC and OTLP/HTTP answers are small writes that must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let config = self.tls.as_ref().and_then(|tls| tls.serving());
                    match (config, &self.tls) {
                        (Some(config), Some(tls)) => {
                            let failures = Failures {
                                tls: tls.clone(),
                                last_warning: self.last_warning.clone(),
                            };
                            self.handshakes.spawn(handshake(stream, peer, config, failures));
                        }
                        _ => return (Connection::Plain(stream), peer),
                    }
                }
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        TlsListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// As axum's listener does: a failed accept that concerns one connection is skipped; any
/// other (e.g. out of file descriptors) is logged and retried after a pause.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where a failed handshake is counted and logged.
struct Failures {
    tls: Arc<ServerTls>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl Failures {
    fn record(&self, peer: SocketAddr, reason: &'static str, error: &str) {
        self.tls.count_handshake_failure(reason);
        let protocol = self.tls.protocol();
        // Clients that connect and close (probes, scanners) are routine; a client
        // refused for its certificate or TLS version points at a misconfiguration.
        let notable = matches!(reason, "client_certificate" | "incompatible");
        if notable && self.warning_due() {
            tracing::warn!(
                protocol = %protocol, peer = %peer, reason = %reason, error = %error,
                "TLS handshake refused (further refusals are logged at debug for {}s)",
                FAILURE_WARNING_INTERVAL.as_secs()
            );
        } else {
            tracing::debug!(protocol = %protocol, peer = %peer, reason = %reason, error = %error, "TLS handshake failed");
        }
    }

    fn warning_due(&self) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < FAILURE_WARNING_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    failures: Failures,
) -> Option<(Connection, SocketAddr)> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => Some((Connection::Tls(Box::new(stream)), peer)),
        Ok(Err(e)) => {
            failures.record(peer, failure_reason(&e), &e.to_string());
            None
        }
        Err(_) => {
            let message = format!("not completed within {}s", HANDSHAKE_TIMEOUT.as_secs());
            failures.record(peer, "timeout", &message);
            None
        }
    }
}

/// The `reason` label of a failed handshake.
fn failure_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return "connection";
    };
    match tls {
        rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_) => {
            "client_certificate"
        }
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => "malformed",
        _ => "connection",
    }
}

/// An accepted connection: plaintext or with its TLS handshake done.
pub enum Connection {
    Plain(TcpStream),
    // Boxed: the TLS state is ~1 KB, the plain variant a file descriptor.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
