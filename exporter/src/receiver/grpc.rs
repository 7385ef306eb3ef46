//! OTLP/gRPC receiver: `TraceService/Export` served by tonic, the request kept as the bytes
//! it arrived in (`otlp::codec::ServerCodec`), checked by one scan and handed to the chain.
//! Not the answers (`answer`) nor the limit mechanics (`limits`).
//!
//! Limits: the message as sent is capped by [`limit_grpc_body`] before tonic buffers it;
//! gzip and zstd inflation is capped by tonic itself (`max_decoding_message_size` bounds
//! its decompression buffer, so a bomb stops at the limit; the tests check it).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, UnaryService};

use super::answer::{self, Rejection};
use super::auth::Authenticator;
use super::compression::ContentEncoding;
use super::grpc_connections::{self, ConnectionAge};
use super::limits::limit_grpc_body;
use super::tls::TlsListener;
use super::{Intake, ReceiverLimits};
use crate::otlp::TraceData;
use crate::otlp::codec::ServerCodec;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const ENCODING_HEADER: &str = "grpc-encoding";
const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn serve(
    listener: TlsListener,
    intake: Intake,
    limits: ReceiverLimits,
    auth: Option<Arc<Authenticator>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = TraceService {
        receiver: Arc::new(GrpcReceiver {
            intake,
            limits,
            auth,
        }),
    };
    // One service, so no router: `TraceService` answers other paths itself.
    let age = ConnectionAge {
        max_age: limits.grpc_max_connection_age,
        grace: limits.grpc_max_connection_age_grace,
    };
    grpc_connections::serve(listener, service, age, shutdown).await;
    Ok(())
}

/// The tower service tonic's server routes `TraceService` calls to (what tonic-build
/// would generate, but with [`ServerCodec`] so the request is never decoded into structs).
#[derive(Clone)]
struct TraceService {
    receiver: Arc<GrpcReceiver>,
}

impl<B> Service<http::Request<B>> for TraceService
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move { Ok(receiver.export(request).await) })
    }
}

struct GrpcReceiver {
    intake: Intake,
    limits: ReceiverLimits,
    auth: Option<Arc<Authenticator>>,
}

impl GrpcReceiver {
    async fn export<B>(
        self: Arc<Self>,
        request: http::Request<B>,
    ) -> http::Response<tonic::body::Body>
    where
        B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send + 'static,
    {
        if request.uri().path() != EXPORT_PATH {
            let message = format!(
                "{} is not implemented; this server only serves {EXPORT_PATH}",
                request.uri().path()
            );
            return tonic::Status::unimplemented(message).into_http();
        }
        // On the headers alone: an unauthenticated body is never read.
        if let Some(auth) = &self.auth
            && let Err(unauthenticated) = auth.check(request.headers())
        {
            let rejection = Rejection::Unauthenticated(unauthenticated);
            return self
                .intake
                .reject(rejection, None)
                .grpc_status()
                .into_http();
        }
        let encoding = request.headers().get(ENCODING_HEADER).map(|v| v.as_bytes());
        let compressed = match ContentEncoding::from_grpc(encoding) {
            Ok(encoding) => encoding.is_some(),
            Err(unsupported) => {
                let rejection = self.intake.reject(unsupported, None);
                let mut response = rejection.grpc_status().into_http();
                response.headers_mut().insert(
                    ACCEPT_ENCODING_HEADER,
                    http::HeaderValue::from_static(ContentEncoding::GRPC_NAMES),
                );
                return response;
            }
        };

        let progress = Arc::new(Progress::default());
        let on_too_large = {
            let progress = progress.clone();
            move || progress.set(Progress::TOO_LARGE)
        };
        let wire_limit = self.limits.wire_limit();
        let request = request.map(|body| limit_grpc_body(body, wire_limit, on_too_large));
        // Bounds the inflated message (tonic's only use of it here: the message as sent is
        // already capped by `limit_grpc_body`, at a size never above this one).
        let decoding_limit = match compressed {
            true => self.limits.max_decompressed_size,
            false => wire_limit,
        };
        let mut grpc = Grpc::new(ServerCodec)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(decoding_limit);
        let call = ExportCall {
            receiver: self.clone(),
            progress: progress.clone(),
        };
        let response = grpc.unary(call, request).await;

        if progress.get() == Progress::HANDLED {
            return response;
        }
        // Answered with our status rather than tonic's: tonic calls a corrupt compressed
        // message INTERNAL, where the client sent bad data (INVALID_ARGUMENT).
        self.refused_by_tonic(&progress, compressed, &response)
            .grpc_status()
            .into_http()
    }

    /// Counts and logs a request tonic refused before it reached [`ExportCall`]: too large
    /// on the wire, not inflatable within the limit, or not a valid gRPC message.
    fn refused_by_tonic(
        &self,
        progress: &Progress,
        compressed: bool,
        response: &http::Response<tonic::body::Body>,
    ) -> Rejection {
        let status = response.extensions().get::<tonic::Status>();
        let message = status.map(|s| s.message().to_string()).unwrap_or_default();
        let rejection = if progress.get() == Progress::TOO_LARGE {
            Rejection::TooLarge {
                limit: self.limits.wire_limit(),
            }
        } else if compressed {
            match status.map(tonic::Status::code) {
                Some(tonic::Code::ResourceExhausted) => Rejection::InflatesTooLarge {
                    limit: self.limits.max_decompressed_size,
                },
                _ => Rejection::Corrupt(message),
            }
        } else {
            Rejection::Malformed(message)
        };
        self.intake.reject(rejection, None)
    }

    async fn handle(&self, request: Bytes) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let data = TraceData::from_wire(request).map_err(|e| {
            self.intake
                .reject(Rejection::Malformed(e.to_string()), None)
                .grpc_status()
        })?;
        let admission = self.intake.take(data).await.map_err(|r| r.grpc_status())?;
        Ok(answer::export_response(&admission))
    }
}

/// How far one call got, to tell afterwards who answered it.
#[derive(Default)]
struct Progress(AtomicU8);

impl Progress {
    const HANDLED: u8 = 1;
    const TOO_LARGE: u8 = 2;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The unary handler tonic calls with the request message, already inflated and limited.
struct ExportCall {
    receiver: Arc<GrpcReceiver>,
    progress: Arc<Progress>,
}

impl UnaryService<Bytes> for ExportCall {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<ExportTraceServiceResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.progress.set(Progress::HANDLED);
        let receiver = self.receiver.clone();
        Box::pin(async move {
            let response = receiver.handle(request.into_inner()).await?;
            Ok(tonic::Response::new(response))
        })
    }
}
