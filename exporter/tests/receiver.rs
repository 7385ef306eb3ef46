//! The OTLP receivers over real loopback sockets, driven by a tonic client and an HTTP
//! client: what the chain receives, what clients are answered, limits and shutdown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use spansink_exporter::chain::{Admission, Admit, Refusal};
use spansink_exporter::otlp::codec::ClientCodec;
use spansink_exporter::otlp::{TraceData, fixtures, span_count};
use spansink_exporter::receiver::{
    ReceiverAccess, ReceiverError, ReceiverLimits, serve_grpc, serve_http,
};
use spansink_exporter::telemetry::Metrics;
use spansink_exporter::telemetry::metrics::{Protocol, ProtocolLabels, RefusedLabels};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;

// --- a global allocator that remembers the peak, to show a gzip bomb is never inflated ---

struct PeakTrackingAllocator;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = ALLOCATED.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for PeakTrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: PeakTrackingAllocator = PeakTrackingAllocator;

// --- a chain stand-in that records what it was given and answers as told ---------------

#[derive(Clone)]
enum Answer {
    Take,
    Partial(usize, &'static str),
    Refuse(Refusal),
}

struct RecordingAdmit {
    received: Mutex<Vec<TraceData>>,
    answer: Mutex<Answer>,
    /// When set, each admit waits for a permit (to hold a request in flight).
    gate: Option<Semaphore>,
    entered: Semaphore,
}

impl RecordingAdmit {
    fn new(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            received: Mutex::new(vec![]),
            answer: Mutex::new(answer),
            gate: None,
            entered: Semaphore::new(0),
        })
    }

    fn gated() -> Arc<Self> {
        Arc::new(Self {
            gate: Some(Semaphore::new(0)),
            ..Arc::into_inner(Self::new(Answer::Take)).unwrap()
        })
    }

    fn received(&self) -> Vec<TraceData> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait]
impl Admit for RecordingAdmit {
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal> {
        self.entered.add_permits(1);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let answer = self.answer.lock().unwrap().clone();
        match answer {
            Answer::Take => {
                self.received.lock().unwrap().push(data);
                Ok(Admission::default())
            }
            Answer::Partial(rejected_spans, message) => {
                self.received.lock().unwrap().push(data);
                Ok(Admission {
                    rejected_spans,
                    message: Some(message.into()),
                })
            }
            Answer::Refuse(refusal) => Err(refusal),
        }
    }
}

// --- both receivers on loopback --------------------------------------------------------

struct Receivers {
    grpc: SocketAddr,
    http: SocketAddr,
    admit: Arc<RecordingAdmit>,
    metrics: Metrics,
    stop: CancellationToken,
    grpc_task: JoinHandle<Result<(), ReceiverError>>,
    http_task: JoinHandle<Result<(), ReceiverError>>,
}

async fn start(admit: Arc<RecordingAdmit>, limits: ReceiverLimits) -> Receivers {
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, http) = (
        grpc_listener.local_addr().unwrap(),
        http_listener.local_addr().unwrap(),
    );
    let metrics = Metrics::for_tests();
    let stop = CancellationToken::new();
    let grpc_task = tokio::spawn(serve_grpc(
        grpc_listener,
        admit.clone(),
        limits,
        ReceiverAccess::default(),
        metrics.clone(),
        stop.clone().cancelled_owned(),
    ));
    let http_task = tokio::spawn(serve_http(
        http_listener,
        admit.clone(),
        limits,
        ReceiverAccess::default(),
        metrics.clone(),
        stop.clone().cancelled_owned(),
    ));
    Receivers {
        grpc,
        http,
        admit,
        metrics,
        stop,
        grpc_task,
        http_task,
    }
}

async fn start_default(answer: Answer) -> Receivers {
    start(RecordingAdmit::new(answer), ReceiverLimits::default()).await
}

impl Receivers {
    async fn grpc_client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn http_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    fn requests(&self, protocol: Protocol, reason: &'static str) -> u64 {
        self.metrics
            .receiver_requests
            .get_or_create(&RefusedLabels { protocol, reason })
            .get()
    }

    fn refused_spans(&self, protocol: Protocol, reason: &'static str) -> u64 {
        self.metrics
            .receiver_refused_spans
            .get_or_create(&RefusedLabels { protocol, reason })
            .get()
    }

    fn accepted_spans(&self, protocol: Protocol) -> u64 {
        self.metrics
            .receiver_accepted_spans
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// The single request the chain received, decoded.
    fn only_received(&self) -> ExportTraceServiceRequest {
        let received = self.admit.received();
        assert_eq!(received.len(), 1);
        received[0].decode().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// 1 GiB of zeros, gzip-compressed to about 1 MiB (built once, streamed, never whole).
fn gzip_bomb() -> &'static Bytes {
    static BOMB: OnceLock<Bytes> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        let chunk = vec![0; 1 << 20];
        for _ in 0..1024 {
            encoder.write_all(&chunk).unwrap();
        }
        Bytes::from(encoder.finish().unwrap())
    })
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// 1 GiB of zeros as zstd (about 40 KiB) and as zlib (about 1 MiB), built once, streamed.
fn zstd_and_deflate_bombs() -> &'static (Bytes, Bytes) {
    static BOMBS: OnceLock<(Bytes, Bytes)> = OnceLock::new();
    BOMBS.get_or_init(|| {
        let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        let chunk = vec![0; 1 << 20];
        for _ in 0..1024 {
            zstd.write_all(&chunk).unwrap();
            zlib.write_all(&chunk).unwrap();
        }
        (
            Bytes::from(zstd.finish().unwrap()),
            Bytes::from(zlib.finish().unwrap()),
        )
    })
}

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo`, `Duration`: declared
/// independently of the receiver's own, to check what goes on the wire.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The retry delay a gRPC status carries in its `RetryInfo` detail, if any.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    let details = RpcStatus::decode(status.details()).ok()?;
    let any = details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.RetryInfo")?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(Duration::new(delay.seconds as u64, delay.nanos as u32))
}

/// Sends one hand-made gRPC frame (`compressed` flag as given) to `path` and returns the
/// status the server answered with.
async fn raw_grpc_call(
    channel: &mut Channel,
    path: &str,
    encoding: Option<&str>,
    message: &[u8],
) -> tonic::Status {
    let mut frame = vec![u8::from(encoding.is_some())];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://spansink{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(frame),
        )))
        .unwrap();
    futures::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = channel.call(request).await.unwrap();
    tonic::Status::from_header_map(response.headers()).expect("a trailers-only error answer")
}

// --- gRPC ------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_request_reaches_the_chain_byte_for_byte() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::rich_request();
    let response = receivers
        .grpc_client()
        .await
        .export(sent.clone())
        .await
        .unwrap();
    assert_eq!(response.into_inner().partial_success, None);

    let received = receivers.admit.received();
    assert_eq!(
        received[0].bytes().as_ref(),
        sent.encode_to_vec().as_slice()
    );
    assert_eq!(received[0].span_count(), span_count(&sent));
    assert_eq!(receivers.only_received(), sent);
    assert_eq!(
        receivers.accepted_spans(Protocol::grpc),
        span_count(&sent) as u64
    );
    assert_eq!(receivers.requests(Protocol::grpc, "ok"), 1);
}

/// A TCP relay to `target` that counts the connections made through it: what a client
/// behind a Service would open, one per (re)connect.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, connections)
}

/// A channel to `target` through a [`counting_relay`], and the relay's count.
async fn relayed_channel(target: SocketAddr) -> (Channel, Arc<AtomicUsize>) {
    let (relay, connections) = counting_relay(target).await;
    let channel = Channel::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, connections)
}

/// A client connected longer than `grpc_max_connection_age` is sent GOAWAY; its
/// requests, those in flight when the age passes included, succeed, the later ones on a
/// new connection, and every one reaches the chain once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_past_their_age_are_sent_away_and_the_client_reconnects_losing_nothing() {
    let limits = ReceiverLimits {
        grpc_max_connection_age: Some(Duration::from_millis(800)),
        grpc_max_connection_age_grace: Duration::from_secs(5),
        ..ReceiverLimits::default()
    };
    let receivers = start(RecordingAdmit::new(Answer::Take), limits).await;
    let (channel, connections) = relayed_channel(receivers.grpc).await;
    // Four exporters on the one connection, so requests are in flight when the age
    // passes.
    let mut tasks = Vec::new();
    for task in 0..4 {
        let mut client = TraceServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut retried) = (0, 0);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
            while tokio::time::Instant::now() < deadline {
                // As the exporter's own OTLP sink does: a status from a transport
                // failure, CANCELLED and UNAVAILABLE are retried. tonic's client (unlike
                // grpc-go's and grpc-java's transparent retry) fails a request it queued
                // on a connection that got GOAWAY before sending it, or sent after the
                // GOAWAY's last stream: the server never took those, so a retry is no
                // duplicate, which the count below checks.
                let mut attempts = 0;
                loop {
                    match client.export(fixtures::request(50, 4)).await {
                        Ok(_) => break,
                        Err(status)
                            if (std::error::Error::source(&status).is_some()
                                || matches!(
                                    status.code(),
                                    Code::Cancelled | Code::Unavailable
                                ))
                                && attempts < 3 =>
                        {
                            attempts += 1;
                            retried += 1;
                        }
                        Err(status) => panic!("export {sent} of task {task} failed: {status}"),
                    }
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, retried)
        }));
    }
    let (mut sent, mut retried) = (0, 0);
    for task in tasks {
        let (s, r) = task.await.unwrap();
        sent += s;
        retried += r;
    }
    assert!(sent >= 20, "{sent}");
    assert!(retried <= sent / 4, "{retried} retries for {sent} exports");
    assert_eq!(
        receivers.admit.received().len(),
        sent,
        "nothing lost, nothing twice"
    );
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        (3..=8).contains(&opened),
        "3.5 s at an age of 0.8 s takes 3-5 connections, got {opened}"
    );

    // With no limit, the one connection stays.
    let receivers = start(
        RecordingAdmit::new(Answer::Take),
        ReceiverLimits {
            grpc_max_connection_age: None,
            ..ReceiverLimits::default()
        },
    )
    .await;
    let (channel, connections) = relayed_channel(receivers.grpc).await;
    let mut client = TraceServiceClient::new(channel);
    for _ in 0..10 {
        client.export(fixtures::request(1, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn grpc_gzip_request_is_inflated() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::request(200, 10);
    receivers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(sent.clone())
        .await
        .unwrap();
    assert_eq!(receivers.only_received(), sent);
    assert_eq!(receivers.accepted_spans(Protocol::grpc), 200);
}

#[tokio::test]
async fn grpc_zstd_request_is_inflated_and_corrupt_zstd_is_invalid_argument() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::request(200, 10);
    receivers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Zstd)
        .export(sent.clone())
        .await
        .unwrap();
    assert_eq!(receivers.only_received(), sent);
    assert_eq!(receivers.accepted_spans(Protocol::grpc), 200);

    let mut channel = receivers.channel().await;
    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    for encoding in ["zstd", "gzip"] {
        let status = raw_grpc_call(&mut channel, export, Some(encoding), b"not compressed").await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{encoding}: {status:?}"
        );
        assert!(
            status.message().contains("could not be decompressed"),
            "{status:?}"
        );
    }
    assert_eq!(receivers.requests(Protocol::grpc, "decompression"), 2);
}

#[tokio::test]
async fn grpc_malformed_request_is_invalid_argument_naming_the_problem() {
    let receivers = start_default(Answer::Take).await;
    let mut bad = fixtures::request(3, 1);
    bad.resource_spans[0].scope_spans[0].spans[2].trace_id = vec![1; 5];
    let status = receivers.grpc_client().await.export(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "malformed OTLP trace request: resource_spans[0].scope_spans[0].spans[2].trace_id: \
         must be 16 bytes (or empty), got 5"
    );

    let mut client = tonic::client::Grpc::new(receivers.channel().await);
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let garbage = Bytes::from_static(b"\x0a\xff\xff\xff\x0fgarbage");
    let status = client
        .unary(tonic::Request::new(garbage), path, ClientCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::grpc, "malformed"), 2);
}

#[tokio::test]
async fn grpc_oversize_request_is_resource_exhausted_without_retry_info() {
    // request(1000, 10) is ~400 KB (~36 KB gzip); request(3000, 10) ~1.2 MB (~110 KB gzip).
    let limits = ReceiverLimits {
        max_request_size: 256 << 10,
        max_decompressed_size: 1 << 20,
        ..ReceiverLimits::default()
    };
    let receivers = start(RecordingAdmit::new(Answer::Take), limits).await;
    let status = receivers
        .grpc_client()
        .await
        .export(fixtures::request(1000, 10))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_request_size"), "{status:?}");
    assert_eq!(
        retry_delay(&status),
        None,
        "oversize must not invite a retry"
    );
    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::grpc, "too_large"), 1);

    // Compressed below the wire limit but inflating beyond the decompressed limit.
    let status = receivers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(fixtures::request(3000, 10))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(retry_delay(&status), None);
    assert_eq!(receivers.requests(Protocol::grpc, "decompression"), 1);
}

#[tokio::test]
async fn grpc_unsupported_encoding_and_unknown_method_are_unimplemented() {
    let receivers = start_default(Answer::Take).await;
    let mut channel = receivers.channel().await;
    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let status = raw_grpc_call(&mut channel, export, Some("snappy"), b"x").await;
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("snappy"), "{status:?}");
    assert_eq!(
        receivers.requests(Protocol::grpc, "unsupported_media_type"),
        1
    );

    let other = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    let status = raw_grpc_call(&mut channel, other, None, b"").await;
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn grpc_refusals_are_retryable_with_retry_info() {
    let cases = [
        (
            Refusal::QueueFull {
                sink: "main".into(),
                retry_after: Duration::from_millis(2500),
            },
            Code::ResourceExhausted,
            "queue_full",
        ),
        (
            Refusal::Backpressure {
                sink: "main".into(),
                retry_after: Duration::from_secs(1),
            },
            Code::Unavailable,
            "backpressure",
        ),
        (
            Refusal::ShuttingDown {
                retry_after: Duration::from_secs(5),
            },
            Code::Unavailable,
            "shutting_down",
        ),
    ];
    for (refusal, code, reason) in cases {
        let receivers = start_default(Answer::Refuse(refusal.clone())).await;
        let status = receivers
            .grpc_client()
            .await
            .export(fixtures::request(7, 1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(retry_delay(&status), refusal.retry_after());
        assert_eq!(receivers.requests(Protocol::grpc, reason), 1);
        assert_eq!(receivers.refused_spans(Protocol::grpc, reason), 7);
        assert_eq!(receivers.accepted_spans(Protocol::grpc), 0);
    }
}

#[tokio::test]
async fn grpc_partial_success_is_reported() {
    let receivers = start_default(Answer::Partial(2, "2 spans filtered by name")).await;
    let response = receivers
        .grpc_client()
        .await
        .export(fixtures::request(5, 1))
        .await
        .unwrap();
    assert_eq!(
        response.into_inner().partial_success,
        Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 spans filtered by name".into(),
        })
    );
    assert_eq!(receivers.requests(Protocol::grpc, "partial"), 1);
    assert_eq!(receivers.accepted_spans(Protocol::grpc), 3);
    assert_eq!(receivers.refused_spans(Protocol::grpc, "filtered"), 2);
}

// --- HTTP ------------------------------------------------------------------------------

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn post(
    receivers: &Receivers,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(receivers.http_url())
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn http_protobuf_request_reaches_the_chain_byte_for_byte() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::rich_request();
    let response = post(&receivers, PROTOBUF, None, sent.encode_to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), PROTOBUF);
    let body = response.bytes().await.unwrap();
    assert_eq!(
        ExportTraceServiceResponse::decode(body).unwrap(),
        ExportTraceServiceResponse::default()
    );
    let received = receivers.admit.received();
    assert_eq!(
        received[0].bytes().as_ref(),
        sent.encode_to_vec().as_slice()
    );
    assert_eq!(receivers.only_received(), sent);
    assert_eq!(
        receivers.accepted_spans(Protocol::http),
        span_count(&sent) as u64
    );
}

#[tokio::test]
async fn http_json_request_is_read_with_the_otlp_json_mapping() {
    let receivers = start_default(Answer::Take).await;
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
        "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
    let response = post(&receivers, JSON, None, json.as_bytes().to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), JSON);
    assert_eq!(response.text().await.unwrap(), "{}");

    let received = receivers.only_received();
    let span = &received.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        span.trace_id,
        const_hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(span.kind, 2);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(
        span.attributes[0].value.as_ref().unwrap().value,
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(200))
    );
}

#[tokio::test]
async fn http_gzip_bodies_are_inflated_for_both_formats() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::request(50, 10);
    let response = post(
        &receivers,
        PROTOBUF,
        Some("gzip"),
        gzip(&sent.encode_to_vec()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let json = serde_json::to_vec(&sent).unwrap();
    let response = post(&receivers, JSON, Some("gzip"), gzip(&json)).await;
    assert_eq!(response.status(), 200);
    let received = receivers.admit.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].decode().unwrap(), sent);
    assert_eq!(received[1].decode().unwrap(), sent);
}

#[tokio::test]
async fn http_zstd_and_deflate_bodies_are_inflated_and_corrupt_ones_get_400() {
    let receivers = start_default(Answer::Take).await;
    let sent = fixtures::request(50, 10);
    let wire = sent.encode_to_vec();
    let bodies = [
        ("zstd", zstd(&wire)),
        ("deflate", zlib(&wire)),
        ("deflate", raw_deflate(&wire)),
    ];
    for (encoding, body) in bodies {
        let response = post(&receivers, PROTOBUF, Some(encoding), body).await;
        assert_eq!(response.status(), 200, "{encoding}");
    }
    let response = post(
        &receivers,
        JSON,
        Some("zstd"),
        zstd(&serde_json::to_vec(&sent).unwrap()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let received = receivers.admit.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|r| r.decode().unwrap() == sent));

    for encoding in ["zstd", "deflate"] {
        let response = post(
            &receivers,
            PROTOBUF,
            Some(encoding),
            b"\xff\xfegarbage".to_vec(),
        )
        .await;
        assert_eq!(response.status(), 400, "{encoding}");
        let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(status.code, Code::InvalidArgument as i32);
        assert!(
            status.message.contains("could not be decompressed"),
            "{status:?}"
        );
    }
    assert_eq!(receivers.requests(Protocol::http, "decompression"), 2);

    let response = post(&receivers, PROTOBUF, Some("br"), wire).await;
    assert_eq!(response.status(), 415);
    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("\"br\""), "{status:?}");
}

#[tokio::test]
async fn http_malformed_bodies_get_400_with_a_status_naming_the_problem() {
    let receivers = start_default(Answer::Take).await;

    let response = post(&receivers, PROTOBUF, None, b"\x0a\xff\xffgarbage".to_vec()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "content-type"), PROTOBUF);
    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(
        status.message.starts_with("malformed OTLP trace request: "),
        "{status:?}"
    );

    let response = post(&receivers, JSON, None, b"{\"resourceSpans\": [".to_vec()).await;
    assert_eq!(response.status(), 400);
    let status: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(status["code"], 3);
    assert!(
        status["message"].as_str().unwrap().contains("OTLP/JSON"),
        "{status}"
    );

    let bad_id = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}"#;
    let response = post(&receivers, JSON, None, bad_id.as_bytes().to_vec()).await;
    assert_eq!(response.status(), 400);

    let response = post(&receivers, PROTOBUF, Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(response.status(), 400);

    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::http, "malformed"), 3);
    assert_eq!(receivers.requests(Protocol::http, "decompression"), 1);
}

#[tokio::test]
async fn http_oversize_body_gets_413() {
    // request(1000, 10) is ~400 KB (~36 KB gzip); request(3000, 10) ~1.2 MB (~110 KB gzip).
    let limits = ReceiverLimits {
        max_request_size: 256 << 10,
        max_decompressed_size: 1 << 20,
        ..ReceiverLimits::default()
    };
    let receivers = start(RecordingAdmit::new(Answer::Take), limits).await;
    let big = fixtures::request(1000, 10).encode_to_vec();
    let response = post(&receivers, PROTOBUF, None, big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(header(&response, "retry-after"), "");
    let bigger = fixtures::request(3000, 10).encode_to_vec();
    let response = post(&receivers, PROTOBUF, Some("gzip"), gzip(&bigger)).await;
    assert_eq!(response.status(), 413);
    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::http, "too_large"), 1);
    assert_eq!(receivers.requests(Protocol::http, "decompression"), 1);
}

#[tokio::test]
async fn http_unsupported_media_and_methods_are_refused() {
    let receivers = start_default(Answer::Take).await;
    let body = fixtures::request(1, 1).encode_to_vec();
    let response = post(&receivers, "text/plain", None, body.clone()).await;
    assert_eq!(response.status(), 415);
    let response = post(&receivers, PROTOBUF, Some("br"), body).await;
    assert_eq!(response.status(), 415);
    assert_eq!(
        receivers.requests(Protocol::http, "unsupported_media_type"),
        2
    );

    let response = reqwest::Client::new()
        .get(receivers.http_url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(receivers.admit.received().is_empty());
}

#[tokio::test]
async fn http_refusals_get_429_or_503_with_retry_after() {
    let cases = [
        (
            Refusal::QueueFull {
                sink: "main".into(),
                retry_after: Duration::from_millis(2500),
            },
            429,
            "3",
        ),
        (
            Refusal::Backpressure {
                sink: "main".into(),
                retry_after: Duration::from_secs(1),
            },
            503,
            "1",
        ),
        (
            Refusal::ShuttingDown {
                retry_after: Duration::from_secs(5),
            },
            503,
            "5",
        ),
    ];
    for (refusal, code, retry_after) in cases {
        let receivers = start_default(Answer::Refuse(refusal.clone())).await;
        let body = fixtures::request(4, 1).encode_to_vec();
        let response = post(&receivers, PROTOBUF, None, body).await;
        assert_eq!(response.status(), code);
        assert_eq!(header(&response, "retry-after"), retry_after);
        assert_eq!(receivers.refused_spans(Protocol::http, refusal.reason()), 4);
    }
}

#[tokio::test]
async fn http_partial_success_is_reported_in_both_formats() {
    let receivers = start_default(Answer::Partial(1, "1 span filtered")).await;
    let sent = fixtures::request(3, 1);
    let response = post(&receivers, PROTOBUF, None, sent.encode_to_vec()).await;
    let body = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body.partial_success,
        Some(ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "1 span filtered".into(),
        })
    );
    let response = post(&receivers, JSON, None, serde_json::to_vec(&sent).unwrap()).await;
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"partialSuccess": {"rejectedSpans": "1", "errorMessage": "1 span filtered"}})
    );
    assert_eq!(receivers.requests(Protocol::http, "partial"), 2);
}

// --- both ------------------------------------------------------------------------------

#[tokio::test]
async fn gzip_bomb_is_refused_without_being_inflated() {
    let bomb = gzip_bomb();
    assert!(
        bomb.len() < 2 << 20,
        "the bomb fits the default 4 MiB wire limit"
    );
    let receivers = start_default(Answer::Take).await;
    let mut channel = receivers.channel().await;

    let baseline = ALLOCATED.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let status = raw_grpc_call(&mut channel, export, Some("gzip"), bomb).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let response = post(&receivers, PROTOBUF, Some("gzip"), bomb.to_vec()).await;
    assert_eq!(response.status(), 413);

    // 1 GiB inflated would show here; the 16 MiB limit, copies and other tests do not.
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(peak < 256 << 20, "peak allocation grew by {peak} bytes");
    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::grpc, "decompression"), 1);
    assert_eq!(receivers.requests(Protocol::http, "decompression"), 1);
}

#[tokio::test]
async fn zstd_and_deflate_bombs_are_refused_without_being_inflated() {
    let (zstd_bomb, deflate_bomb) = zstd_and_deflate_bombs();
    assert!(zstd_bomb.len() < 1 << 20 && deflate_bomb.len() < 2 << 20);
    let receivers = start_default(Answer::Take).await;
    let mut channel = receivers.channel().await;

    let baseline = ALLOCATED.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    let export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let status = raw_grpc_call(&mut channel, export, Some("zstd"), zstd_bomb).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_decompressed_size"),
        "{status:?}"
    );
    for (encoding, bomb) in [("zstd", zstd_bomb), ("deflate", deflate_bomb)] {
        let response = post(&receivers, PROTOBUF, Some(encoding), bomb.to_vec()).await;
        assert_eq!(response.status(), 413, "{encoding}");
    }

    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(peak < 256 << 20, "peak allocation grew by {peak} bytes");
    assert!(receivers.admit.received().is_empty());
    assert_eq!(receivers.requests(Protocol::grpc, "decompression"), 1);
    assert_eq!(receivers.requests(Protocol::http, "decompression"), 2);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_listening() {
    let receivers = start(RecordingAdmit::gated(), ReceiverLimits::default()).await;
    let mut client = receivers.grpc_client().await;
    let grpc_call = tokio::spawn(async move { client.export(fixtures::request(2, 1)).await });
    let http_call = tokio::spawn(post_owned(
        receivers.http_url(),
        fixtures::request(3, 1).encode_to_vec(),
    ));
    let admit = receivers.admit.clone();
    admit.entered.acquire_many(2).await.unwrap().forget();

    receivers.stop.cancel();
    // A chance for the servers to stop too early; slowness cannot fail the assertions.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !receivers.grpc_task.is_finished(),
        "gRPC waits for its request"
    );
    assert!(
        !receivers.http_task.is_finished(),
        "HTTP waits for its request"
    );

    admit.gate.as_ref().unwrap().add_permits(2);
    assert!(grpc_call.await.unwrap().is_ok());
    assert_eq!(http_call.await.unwrap(), 200);
    receivers.grpc_task.await.unwrap().unwrap();
    receivers.http_task.await.unwrap().unwrap();
    assert_eq!(admit.received().len(), 2);

    assert!(
        tokio::net::TcpStream::connect(receivers.grpc)
            .await
            .is_err()
    );
    assert!(
        tokio::net::TcpStream::connect(receivers.http)
            .await
            .is_err()
    );
}

async fn post_owned(url: String, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", PROTOBUF)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
