//! S3 sink tests against a real S3-compatible server: moto, started per test on a free
//! loopback port from the virtualenv named by `SPANSINK_VENV`, stopped by PID.

use std::collections::BTreeSet;
use std::io::Read;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use spansink_config::TimeTemplate;
use spansink_config::{ByteSize, S3Compression, S3Encoding, S3SinkConfig, S3StorageClass};
use spansink_exporter::encoding::read_request;
use spansink_exporter::otlp::fixtures::{self, batch_of, flatten, interleaved_traces, rich_span};
use spansink_exporter::otlp::span_count;
use spansink_exporter::sinks::Sink;
use spansink_exporter::sinks::s3::S3Sink;
use spansink_exporter::telemetry::metrics::Metrics;

mod pipeline;
mod servers;
mod transform_rules;
use pipeline::FallbackPipeline;
use servers::free_port;
use servers::moto::Moto;

const BUCKET: &str = "spans";

/// Static test credentials: moto accepts any, and nothing here may consult the real AWS
/// chain (its last resort is the instance metadata address, off this machine).
fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        )))
        .build()
}

fn sink_config(endpoint: &str) -> S3SinkConfig {
    let mut config = S3SinkConfig::new(BUCKET);
    config.endpoint = Some(endpoint.to_string());
    config.force_path_style = true;
    config.prefix = "prod/".into();
    config
}

fn s3_sink(config: &S3SinkConfig) -> S3Sink {
    S3Sink::from_sdk_config("archive", config, &sdk_config()).unwrap()
}

/// A plain client to look at the bucket the way a user would.
fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn create_bucket(client: &aws_sdk_s3::Client) {
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
}

async fn list_keys(client: &aws_sdk_s3::Client) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(BUCKET)
        .max_keys(7) // several pages even for a few objects
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        keys.extend(
            page.unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
    }
    keys
}

struct Downloaded {
    body: Vec<u8>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    e_tag: Option<String>,
    storage_class: Option<String>,
}

async fn download(client: &aws_sdk_s3::Client, key: &str) -> Downloaded {
    let object = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    Downloaded {
        content_type: object.content_type().map(String::from),
        content_encoding: object.content_encoding().map(String::from),
        e_tag: object.e_tag().map(String::from),
        storage_class: object.storage_class().map(|c| c.as_str().to_string()),
        body: object.body.collect().await.unwrap().into_bytes().to_vec(),
    }
}

fn decompress(compression: S3Compression, body: &[u8]) -> Vec<u8> {
    match compression {
        S3Compression::None => body.to_vec(),
        S3Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        S3Compression::Zstd => zstd::decode_all(body).unwrap(),
    }
}

fn decode(encoding: S3Encoding, plain: &[u8]) -> ExportTraceServiceRequest {
    match encoding {
        S3Encoding::OtlpProto => ExportTraceServiceRequest::decode(plain).unwrap(),
        S3Encoding::OtlpJson => serde_json::from_slice(plain).unwrap(),
        S3Encoding::Jsonl => read_request(std::str::from_utf8(plain).unwrap().lines()).unwrap(),
    }
}

/// A chain builds the sink from YAML, so credentials come from the standard AWS chain:
/// the environment.
fn standard_chain_credentials() {
    // SAFETY: every test of this binary that reads these variables wants exactly these
    // values, and nothing else reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
}

/// The time partitions the default template can give for a write between `from` and `to`.
fn partitions(from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeSet<String> {
    let template = TimeTemplate::parse(S3SinkConfig::DEFAULT_KEY_TEMPLATE).unwrap();
    [from, to]
        .into_iter()
        .map(|t| format!("prod/{}", template.render(t)))
        .collect()
}

fn split_key<'a>(key: &'a str, allowed_partitions: &BTreeSet<String>, extension: &str) -> &'a str {
    let partition = allowed_partitions
        .iter()
        .find(|p| key.starts_with(p.as_str()))
        .unwrap_or_else(|| panic!("{key} is not under any of {allowed_partitions:?}"));
    let rest = &key[partition.len()..];
    let id = rest
        .strip_suffix(extension)
        .unwrap_or_else(|| panic!("{key} does not end with {extension}"));
    let uuid =
        uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{key}: {id} is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "{key}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_one_object_under_a_unique_time_partitioned_key() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    let sink = std::sync::Arc::new(s3_sink(&sink_config(&moto.endpoint)));

    let before = Utc::now();
    let mut batches = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        // Distinct spans per batch so each object can be matched to its batch.
        let mut request = interleaved_traces(2, 3);
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    span.name = format!("batch {i} {}", span.name);
                }
            }
        }
        let batch = batch_of(&[&request, &interleaved_traces(1, 1)]);
        batches.push(flatten(&batch.decode().unwrap()));
        let sink = sink.clone();
        // Concurrent exports, as with rate_limit.max_concurrent_exports > 1.
        tasks.push(tokio::spawn(async move { sink.export(&batch).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = Utc::now();

    let keys = list_keys(&s3).await;
    assert_eq!(keys.len(), 24, "{keys:?}");
    let allowed = partitions(before, after);
    let ids: BTreeSet<&str> = keys
        .iter()
        .map(|k| split_key(k, &allowed, ".binpb.gz"))
        .collect();
    assert_eq!(ids.len(), 24, "every key is unique");

    let mut found = Vec::new();
    for key in &keys {
        let object = download(&s3, key).await;
        assert_eq!(
            object.content_type.as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(object.content_encoding.as_deref(), Some("gzip"));
        let request = decode(
            S3Encoding::OtlpProto,
            &decompress(S3Compression::Gzip, &object.body),
        );
        found.push(flatten(&request));
    }
    found.sort();
    batches.sort();
    assert_eq!(
        found, batches,
        "every batch's spans, every field, in its own object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_zstd_and_storage_class_round_trip() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    let mut config = sink_config(&moto.endpoint);
    config.encoding = S3Encoding::OtlpJson;
    config.compression = S3Compression::Zstd;
    config.key_template = "otlp/%F/%H%M/".into();
    config.storage_class = Some(S3StorageClass::StandardIa);
    let request = interleaved_traces(3, 4);
    let before = Utc::now();
    s3_sink(&config)
        .export(&batch_of(&[&request]))
        .await
        .unwrap();
    let after = Utc::now();

    let keys = list_keys(&s3).await;
    assert_eq!(keys.len(), 1);
    let template = TimeTemplate::parse("otlp/%F/%H%M/").unwrap();
    let allowed: BTreeSet<String> = [before, after]
        .into_iter()
        .map(|t| format!("prod/{}", template.render(t)))
        .collect();
    split_key(&keys[0], &allowed, ".json.zst");
    let object = download(&s3, &keys[0]).await;
    assert_eq!(object.content_type.as_deref(), Some("application/json"));
    assert_eq!(object.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(object.storage_class.as_deref(), Some("STANDARD_IA"));
    let plain = decompress(S3Compression::Zstd, &object.body);
    let text = std::str::from_utf8(&plain).unwrap();
    let hex_trace = const_hex::encode(fixtures::trace_id(1));
    assert!(
        text.contains(&format!("\"traceId\":\"{hex_trace}\"")),
        "OTLP JSON uses hex ids"
    );
    assert_eq!(
        flatten(&decode(S3Encoding::OtlpJson, &plain)),
        flatten(&request)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_gzip_is_one_flat_span_per_line() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    let mut config = sink_config(&moto.endpoint);
    config.encoding = S3Encoding::Jsonl;
    config.compression = S3Compression::Gzip;
    let rich = fixtures::rich_request();
    let request = interleaved_traces(3, 4);
    let before = Utc::now();
    s3_sink(&config)
        .export(&batch_of(&[&rich, &request]))
        .await
        .unwrap();
    let after = Utc::now();

    let keys = list_keys(&s3).await;
    assert_eq!(keys.len(), 1);
    split_key(&keys[0], &partitions(before, after), ".jsonl.gz");
    let object = download(&s3, &keys[0]).await;
    assert_eq!(object.content_type.as_deref(), Some("application/x-ndjson"));
    assert_eq!(object.content_encoding.as_deref(), Some("gzip"));
    let plain = decompress(S3Compression::Gzip, &object.body);
    let text = std::str::from_utf8(&plain).unwrap();
    assert_eq!(
        text.lines().count(),
        span_count(&rich) + span_count(&request),
        "one line per span"
    );
    assert!(text.ends_with('\n'));
    let expected = ExportTraceServiceRequest {
        resource_spans: rich
            .resource_spans
            .iter()
            .chain(&request.resource_spans)
            .cloned()
            .collect(),
    };
    assert_eq!(
        flatten(&decode(S3Encoding::Jsonl, &plain)),
        flatten(&expected),
        "every field of every span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_use_multipart_upload() {
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    let mut config = sink_config(&moto.endpoint);
    config.compression = S3Compression::None;
    config.multipart_threshold = ByteSize::kib(64);
    config.multipart_part_size = ByteSize::mib(5);
    // ~11 MiB of spans: three parts (5 + 5 + the rest).
    let mut request = interleaved_traces(1, 1);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    for i in 0..1100u32 {
        let mut span = rich_span(7, (i % 250) as u8);
        span.span_id = i.to_be_bytes().repeat(2);
        span.name = format!("{i:06}{}", "n".repeat(10_000));
        spans.push(span);
    }
    let batch = batch_of(&[&request]);
    assert!(batch.encoded_len() > 10 * 1024 * 1024 && batch.encoded_len() < 15 * 1024 * 1024);
    s3_sink(&config).export(&batch).await.unwrap();

    let keys = list_keys(&s3).await;
    assert_eq!(keys.len(), 1);
    let object = download(&s3, &keys[0]).await;
    assert!(keys[0].ends_with(".binpb"), "{}", keys[0]);
    assert_eq!(object.content_encoding, None);
    // S3 (and moto) give multipart objects an ETag ending in -<number of parts>.
    let e_tag = object.e_tag.unwrap_or_default();
    assert!(e_tag.trim_matches('"').ends_with("-3"), "ETag {e_tag}");
    assert_eq!(object.body.len(), batch.encoded_len());
    assert_eq!(
        flatten(&decode(S3Encoding::OtlpProto, &object.body)),
        flatten(&request)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_permanent() {
    let moto = Moto::start();
    let sink = s3_sink(&sink_config(&moto.endpoint));
    let err = sink
        .export(&batch_of(&[&interleaved_traces(1, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "no_such_bucket", "{err}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");

    // The same for the multipart path.
    let mut config = sink_config(&moto.endpoint);
    config.multipart_threshold = ByteSize::kib(1);
    config.compression = S3Compression::None;
    let err = s3_sink(&config)
        .export(&batch_of(&[&interleaved_traces(4, 4)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_transient_and_delivery_follows_once_it_is_up() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let sink = s3_sink(&sink_config(&endpoint));
    let batch = batch_of(&[&interleaved_traces(2, 2)]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connect", "{err}");

    let moto = Moto::start_on(port);
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    // What the retry policy does: the same batch again.
    sink.export(&batch).await.unwrap();
    assert_eq!(list_keys(&s3).await.len(), 1);
}

#[tokio::test]
async fn the_standard_chain_builds_without_touching_the_network() {
    // Credentials are resolved at the first request, not here; the region comes from the
    // config, so the chain does not look for one either.
    let mut config = S3SinkConfig::new(BUCKET);
    config.region = Some("eu-west-1".into());
    config.endpoint = Some("http://127.0.0.1:9".into());
    assert!(
        S3Sink::new("archive", &config, &Metrics::for_tests())
            .await
            .is_ok()
    );
    config.key_template = "bad/%Q".into();
    let err = S3Sink::new("archive", &config, &Metrics::for_tests())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with("sinks.archive: key_template"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_mid_stream_hands_the_batch_to_the_fallback_and_loses_nothing() {
    standard_chain_credentials();
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    let pipeline = FallbackPipeline::start(&format!(
        "s3:\n  bucket: {BUCKET}\n  endpoint: {}\n  force_path_style: true\n  region: us-east-1\n",
        moto.endpoint
    ))
    .await;
    let before = interleaved_traces(3, 2);
    pipeline.admit(&before).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while list_keys(&s3).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "first batch never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    drop(moto);
    let after = interleaved_traces(4, 3);
    pipeline.admit(&after).await;
    let report = pipeline.drain().await;
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped_spans, 0);
    assert_eq!(
        flatten(&pipeline.dead_letter()),
        flatten(&after),
        "what S3 could not take is in the dead letter, every field"
    );
}

/// Every transform rule, read back from the bucket in each encoding: the objects' bodies
/// and keys, decoded field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_hold_only_transformed_spans_in_each_encoding() {
    standard_chain_credentials();
    let moto = Moto::start();
    let s3 = client(&moto.endpoint);
    create_bucket(&s3).await;
    for (encoding, prefix) in [
        (S3Encoding::OtlpProto, "proto/"),
        (S3Encoding::OtlpJson, "json/"),
        (S3Encoding::Jsonl, "jsonl/"),
    ] {
        let mut config = sink_config(&moto.endpoint);
        config.region = Some("us-east-1".into());
        config.encoding = encoding;
        config.compression = S3Compression::None;
        config.prefix = prefix.into();
        transform_rules::deliver("s3", &config).await;

        let keys: Vec<String> = list_keys(&s3)
            .await
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        assert_eq!(keys.len(), 1, "{encoding:?}: {keys:?}");
        assert_eq!(transform_rules::holds_secret(keys[0].as_bytes()), None);
        let object = download(&s3, &keys[0]).await;
        let plain = decompress(S3Compression::None, &object.body);
        assert_eq!(transform_rules::holds_secret(&plain), None, "{encoding:?}");
        transform_rules::assert_transformed(
            &decode(encoding, &plain),
            2,
            &format!("s3 {encoding:?}"),
        );
    }
}
