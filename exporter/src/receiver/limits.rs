//! Size limits on request bodies as they arrive: never read more than the wire limit. Not
//! the decompressed limit (`compression`), what the limits are (`ReceiverLimits`, from
//! config) nor how refusals are answered (`answer`).

use axum::body::HttpBody;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, LengthLimitError, Limited, StreamBody};

use super::answer::Rejection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a whole HTTP body, refusing it as soon as more than `limit` bytes arrived.
pub(super) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Rejection>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Rejection::TooLarge { limit }),
        Err(e) => Err(Rejection::Malformed(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Wraps a gRPC request body so that it carries one message of at most `limit` bytes (as
/// sent, compressed or not). It fails as soon as the 5-byte message header declares more,
/// before the message is read, or when more bytes arrive than such a message has; then
/// `on_too_large` runs and tonic answers with the error's status (RESOURCE_EXHAUSTED).
pub(super) fn limit_grpc_body<B>(
    body: B,
    limit: usize,
    on_too_large: impl Fn() + Send + 'static,
) -> impl HttpBody<Data = Bytes, Error = BoxError> + Send + 'static
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut guard = GrpcMessageGuard::new(limit);
    StreamBody::new(BodyStream::new(body).map(move |frame| {
        let frame = frame.map_err(Into::into)?;
        if let Some(data) = frame.data_ref()
            && !guard.admits(data)
        {
            on_too_large();
            let status = Rejection::TooLarge { limit }.grpc_status();
            return Err(Box::new(status) as BoxError);
        }
        Ok(frame)
    }))
}

/// Follows the bytes of a gRPC request body: one message is a 5-byte header (compressed
/// flag, big-endian length) and the message.
struct GrpcMessageGuard {
    limit: usize,
    seen: usize,
    header: [u8; GRPC_HEADER_LEN],
}

const GRPC_HEADER_LEN: usize = 5;

impl GrpcMessageGuard {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: 0,
            header: [0; GRPC_HEADER_LEN],
        }
    }

    /// Takes the next chunk; false once the body is known to exceed the limit.
    fn admits(&mut self, chunk: &[u8]) -> bool {
        let before = self.seen;
        self.seen = self.seen.saturating_add(chunk.len());
        if before < GRPC_HEADER_LEN {
            let n = (GRPC_HEADER_LEN - before).min(chunk.len());
            self.header[before..before + n].copy_from_slice(&chunk[..n]);
            if self.seen >= GRPC_HEADER_LEN {
                let [_, a, b, c, d] = self.header;
                let declared = u32::from_be_bytes([a, b, c, d]) as usize;
                if declared > self.limit {
                    return false;
                }
            }
        }
        self.seen <= self.limit.saturating_add(GRPC_HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_guard_refuses_on_the_declared_length_before_reading_the_message() {
        let mut guard = GrpcMessageGuard::new(100);
        assert!(guard.admits(&[0, 0, 0]));
        assert!(!guard.admits(&[0, 101]));

        let mut guard = GrpcMessageGuard::new(100);
        assert!(guard.admits(&[0, 0, 0, 0, 100]));
        assert!(guard.admits(&[7; 100]));
        assert!(
            !guard.admits(&[7]),
            "more bytes than one message of the limit"
        );
    }

    #[tokio::test]
    async fn read_body_refuses_more_than_the_limit() {
        let body = http_body_util::Full::new(Bytes::from(vec![1; 11]));
        assert_eq!(
            read_body(body, 10).await,
            Err(Rejection::TooLarge { limit: 10 })
        );
        let body = http_body_util::Full::new(Bytes::from(vec![1; 10]));
        assert_eq!(read_body(body, 10).await.unwrap().len(), 10);
    }
}
