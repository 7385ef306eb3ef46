//! The gRPC receiver's HTTP/2 connections: each served on its own task, sent GOAWAY once
//! it is older than its maximum age and closed if it is still open after the grace, and
//! all of them sent GOAWAY and waited for at shutdown. Not the gRPC call handling
//! (`grpc`).
//!
//! Why not tonic's server: as of tonic 0.14.9, with a grace set it sends no GOAWAY at the
//! age and cuts the connection at age + grace, requests in flight included (the receiver
//! test saw one connection for 3.5 s at an age of 0.8 s); without a grace nothing bounds
//! how long a connection told to go away stays. Clients that reconnect at a GOAWAY are
//! how the load of long-lived gRPC connections spreads over new replicas, so the age must
//! cost no request and leave no connection behind.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rand::Rng as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::{Service, http};

use super::tls::{Connection, TlsListener};

/// What the connections serve: the receiver's `TraceService`, with the bounds hyper needs,
/// named once.
pub(super) trait ExportService:
    Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ExportService for S where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// How long a connection may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnectionAge {
    /// GOAWAY after this long, give or take 10% so connections opened together (after a
    /// rollout) do not all reconnect at once, as gRPC servers do. `None`: never.
    pub max_age: Option<Duration>,
    /// How long requests in flight at the GOAWAY may still take.
    pub grace: Duration,
}

/// Accepts connections on `listener` and serves `service` on each until `shutdown`
/// completes; then stops accepting, sends every connection GOAWAY and returns once the
/// requests in flight are answered.
pub(super) async fn serve<S>(
    mut listener: TlsListener,
    service: S,
    age: ConnectionAge,
    shutdown: impl Future<Output = ()>,
) where
    S: ExportService,
{
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (connection, _) = listener.accept() => {
                connections.spawn(serve_connection(connection, service.clone(), age, stop.clone()));
            }
        }
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
}

async fn serve_connection<S>(
    connection: Connection,
    service: S,
    age: ConnectionAge,
    stop: CancellationToken,
) where
    S: ExportService,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let served =
        builder.serve_connection(TokioIo::new(connection), TowerToHyperService::new(service));
    tokio::pin!(served);
    let aged = async {
        match age.max_age {
            Some(max_age) => tokio::time::sleep(jittered(max_age)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(aged);
    let mut going_away = false;
    let mut close_at: Option<Instant> = None;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "gRPC connection ended with an error");
                }
                return;
            }
            () = &mut aged, if !going_away => {
                served.as_mut().graceful_shutdown();
                going_away = true;
                close_at = Some(Instant::now() + age.grace);
            }
            () = stop.cancelled(), if !going_away => {
                // Shutdown: in-flight requests are answered however long they take (the
                // process's drain bounds that).
                served.as_mut().graceful_shutdown();
                going_away = true;
            }
            () = sleep_until(close_at), if close_at.is_some() => {
                tracing::debug!("gRPC connection still open after its grace; closed");
                return;
            }
        }
    }
}

fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    tokio::time::sleep_until(at.unwrap_or_else(Instant::now))
}

/// `age` give or take up to 10%.
fn jittered(age: Duration) -> Duration {
    age.mul_f64(rand::rng().random_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_vary_by_at_most_a_tenth() {
        let age = Duration::from_secs(300);
        let ages: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        assert!(
            ages.iter()
                .all(|a| *a >= age.mul_f64(0.9) && *a <= age.mul_f64(1.1))
        );
        assert!(ages.iter().any(|a| *a != ages[0]), "jittered at all");
    }
}
