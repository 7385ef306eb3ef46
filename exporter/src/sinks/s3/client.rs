//! The S3 calls of the sink: one PutObject, or a multipart upload for large bodies, and
//! which S3 answers are worth a retry. Not the key or the body (see `object_key`, `encoding`).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::sinks::SinkError;

/// Parts uploaded at once in a multipart upload.
const PARTS_IN_FLIGHT: usize = 4;
/// Tries of a single part before the whole upload fails: a part is cheap to repeat, the
/// whole object is not.
const PART_ATTEMPTS: u32 = 3;

/// Where and how an object is written.
pub struct Upload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub body: Bytes,
    pub content_type: &'a str,
    pub content_encoding: Option<&'a str>,
    pub storage_class: Option<&'a str>,
    pub multipart_threshold: usize,
    pub part_size: usize,
}

/// Writes one object, in one request or in parts.
pub async fn upload(client: &Client, u: Upload<'_>) -> Result<(), SinkError> {
    if u.body.len() > u.multipart_threshold {
        return upload_multipart(client, u).await;
    }
    client
        .put_object()
        .bucket(u.bucket)
        .key(u.key)
        .content_type(u.content_type)
        .set_content_encoding(u.content_encoding.map(String::from))
        .set_storage_class(u.storage_class.map(StorageClass::from))
        .content_length(i64::try_from(u.body.len()).unwrap_or(i64::MAX))
        .body(ByteStream::from(u.body))
        .send()
        .await
        .map_err(|e| classify("PutObject", &e))?;
    Ok(())
}

async fn upload_multipart(client: &Client, u: Upload<'_>) -> Result<(), SinkError> {
    let created = client
        .create_multipart_upload()
        .bucket(u.bucket)
        .key(u.key)
        .content_type(u.content_type)
        .set_content_encoding(u.content_encoding.map(String::from))
        .set_storage_class(u.storage_class.map(StorageClass::from))
        .send()
        .await
        .map_err(|e| classify("CreateMultipartUpload", &e))?;
    let Some(upload_id) = created.upload_id() else {
        return Err(SinkError::transient(
            "response",
            "S3 CreateMultipartUpload answered without an upload id",
        ));
    };
    match upload_parts(client, &u, upload_id).await {
        Ok(parts) => {
            let completed = client
                .complete_multipart_upload()
                .bucket(u.bucket)
                .key(u.key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| classify("CompleteMultipartUpload", &e));
            if completed.is_err() {
                abort(client, &u, upload_id).await;
            }
            completed.map(|_| ())
        }
        Err(e) => {
            abort(client, &u, upload_id).await;
            Err(e)
        }
    }
}

async fn upload_parts(
    client: &Client,
    u: &Upload<'_>,
    upload_id: &str,
) -> Result<Vec<CompletedPart>, SinkError> {
    let part_size = u.part_size.max(1);
    let count = u.body.len().div_ceil(part_size);
    futures::stream::iter(0..count)
        .map(|i| {
            let start = i * part_size;
            let chunk = u.body.slice(start..(start + part_size).min(u.body.len()));
            // Part numbers start at 1; there are at most 10,000 of them.
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            async move {
                let answer = client
                    .upload_part()
                    .bucket(u.bucket)
                    .key(u.key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(i64::try_from(chunk.len()).unwrap_or(i64::MAX))
                    .body(ByteStream::from(chunk))
                    .customize()
                    .config_override(
                        aws_sdk_s3::Config::builder()
                            .retry_config(RetryConfig::standard().with_max_attempts(PART_ATTEMPTS)),
                    )
                    .send()
                    .await
                    .map_err(|e| classify("UploadPart", &e))?;
                Ok::<_, SinkError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(answer.e_tag().map(String::from))
                        .build(),
                )
            }
        })
        .buffered(PARTS_IN_FLIGHT)
        .try_collect()
        .await
}

/// Best effort: an unfinished upload costs storage until the bucket's lifecycle rule
/// removes it, so try to remove it now.
async fn abort(client: &Client, u: &Upload<'_>, upload_id: &str) {
    if let Err(e) = client
        .abort_multipart_upload()
        .bucket(u.bucket)
        .key(u.key)
        .upload_id(upload_id)
        .send()
        .await
    {
        tracing::warn!(bucket = %u.bucket, key = %u.key, error = %classify("AbortMultipartUpload", &e), "could not abort the multipart upload");
    }
}

/// Transient or permanent, from the S3 answer: throttling, 5xx, timeouts and connection
/// failures are worth a retry; a missing bucket, refused credentials or signature, or
/// another 4xx are not.
pub fn classify<E>(operation: &str, error: &SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code().unwrap_or("");
            let detail = err.message().unwrap_or("");
            let message = format!("S3 {operation} failed: HTTP {status} {code} {detail}")
                .trim_end()
                .to_string();
            match code {
                "NoSuchBucket" => SinkError::permanent(
                    "no_such_bucket",
                    format!("{message}; create the bucket or fix s3.bucket"),
                ),
                "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => SinkError::permanent(
                    "unauthorized",
                    format!("{message}; grant s3:PutObject on the bucket to these credentials"),
                ),
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AuthorizationHeaderMalformed"
                | "InvalidToken" => SinkError::permanent(
                    "authentication",
                    format!("{message}; check the AWS credentials and s3.region"),
                ),
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequests" => SinkError::transient("throttled", message),
                "RequestTimeout" | "ExpiredToken" | "InternalError" | "ServiceUnavailable" => {
                    SinkError::transient("unavailable", message)
                }
                _ if status >= 500 || status == 429 || status == 408 => {
                    SinkError::transient("unavailable", message)
                }
                _ if status == 403 => SinkError::permanent("unauthorized", message),
                _ if status == 404 => SinkError::permanent("no_such_bucket", message),
                _ => SinkError::permanent("rejected", message),
            }
        }
        SdkError::TimeoutError(_) => {
            SinkError::transient("timeout", format!("S3 {operation} timed out"))
        }
        SdkError::DispatchFailure(failure) => SinkError::transient(
            "connect",
            format!(
                "S3 {operation} could not be sent: {}",
                error_chain(
                    failure
                        .as_connector_error()
                        .map(|e| e as &(dyn std::error::Error + 'static))
                )
            ),
        ),
        SdkError::ResponseError(_) => SinkError::transient(
            "response",
            format!(
                "S3 {operation}: unreadable response: {}",
                error_chain(Some(error))
            ),
        ),
        SdkError::ConstructionFailure(_) => SinkError::permanent(
            "request",
            format!(
                "S3 {operation}: cannot build the request: {}",
                error_chain(Some(error))
            ),
        ),
        _ => SinkError::transient(
            "s3",
            format!("S3 {operation} failed: {}", error_chain(Some(error))),
        ),
    }
}

/// An error and its sources in one line (the SDK's top-level messages say little).
fn error_chain(error: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts = Vec::new();
    let mut current = error;
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}
