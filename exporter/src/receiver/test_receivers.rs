//! Both receivers on loopback ports with a chain stand-in that takes every request, for
//! the tests of what the receivers check on headers (auth, CORS). Tests only; the full
//! receiver behaviour is tested over sockets in `exporter/tests/receiver.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{ReceiverAccess, ReceiverLimits, serve_grpc, serve_http};
use crate::chain::{Admission, Admit, Refusal};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{Protocol, RefusedLabels};

/// Takes every request and counts them.
#[derive(Default)]
struct CountingAdmit(AtomicUsize);

#[async_trait]
impl Admit for CountingAdmit {
    async fn admit(&self, _: TraceData) -> Result<Admission, Refusal> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Admission::default())
    }
}

/// Running receivers; stopped when dropped.
pub(super) struct TestReceivers {
    pub(super) grpc: SocketAddr,
    pub(super) http: SocketAddr,
    pub(super) metrics: Metrics,
    admit: Arc<CountingAdmit>,
    stop: CancellationToken,
}

impl TestReceivers {
    pub(super) async fn start(access: ReceiverAccess) -> Self {
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc, http) = (
            grpc_listener.local_addr().unwrap(),
            http_listener.local_addr().unwrap(),
        );
        let metrics = Metrics::for_tests();
        let admit = Arc::new(CountingAdmit::default());
        let stop = CancellationToken::new();
        let limits = ReceiverLimits::default();
        tokio::spawn(serve_grpc(
            grpc_listener,
            admit.clone(),
            limits,
            access.clone(),
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ));
        tokio::spawn(serve_http(
            http_listener,
            admit.clone(),
            limits,
            access,
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ));
        Self {
            grpc,
            http,
            metrics,
            admit,
            stop,
        }
    }

    pub(super) fn http_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    pub(super) async fn grpc_client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    pub(super) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Requests the chain took.
    pub(super) fn taken(&self) -> usize {
        self.admit.0.load(Ordering::Relaxed)
    }

    pub(super) fn requests(&self, protocol: Protocol, reason: &'static str) -> u64 {
        self.metrics
            .receiver_requests
            .get_or_create(&RefusedLabels { protocol, reason })
            .get()
    }
}

impl Drop for TestReceivers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
