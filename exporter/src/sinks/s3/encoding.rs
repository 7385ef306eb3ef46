//! The body of an S3 object: the batch as one OTLP request (protobuf as received, or
//! OTLP JSON) or as JSON Lines of flat spans, compressed. Also the matching content type, encoding and key extension.
//! Not the upload.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use spansink_config::{S3Compression, S3Encoding};

use crate::encoding::{JsonLinesEncoder, encode_request};
use crate::otlp::{Batch, WireError};

/// zstd level 3: zstd's own default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;

/// Why a batch could not be turned into an object body. Permanent: it fails the same way
/// every time.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Malformed(#[from] WireError),
    #[error("cannot encode spans as OTLP JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot compress the object: {0}")]
    Compress(#[from] std::io::Error),
}

/// How objects are written, from the config.
#[derive(Debug, Clone, Copy)]
pub struct ObjectFormat {
    pub encoding: S3Encoding,
    pub compression: S3Compression,
}

impl ObjectFormat {
    /// `.binpb`/`.json`/`.jsonl`, then `.gz`/`.zst` when compressed.
    pub fn extension(self) -> &'static str {
        match (self.encoding, self.compression) {
            (S3Encoding::OtlpProto, S3Compression::None) => ".binpb",
            (S3Encoding::OtlpProto, S3Compression::Gzip) => ".binpb.gz",
            (S3Encoding::OtlpProto, S3Compression::Zstd) => ".binpb.zst",
            (S3Encoding::OtlpJson, S3Compression::None) => ".json",
            (S3Encoding::OtlpJson, S3Compression::Gzip) => ".json.gz",
            (S3Encoding::OtlpJson, S3Compression::Zstd) => ".json.zst",
            (S3Encoding::Jsonl, S3Compression::None) => ".jsonl",
            (S3Encoding::Jsonl, S3Compression::Gzip) => ".jsonl.gz",
            (S3Encoding::Jsonl, S3Compression::Zstd) => ".jsonl.zst",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self.encoding {
            S3Encoding::OtlpProto => "application/x-protobuf",
            S3Encoding::OtlpJson => "application/json",
            S3Encoding::Jsonl => "application/x-ndjson",
        }
    }

    /// The `Content-Encoding` header, when compressed.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self.compression {
            S3Compression::None => None,
            S3Compression::Gzip => Some("gzip"),
            S3Compression::Zstd => Some("zstd"),
        }
    }

    /// The object body for `batch`. CPU-bound (run it off the async threads).
    pub fn encode(self, batch: &Batch) -> Result<Bytes, EncodeError> {
        let plain = match self.encoding {
            // The batch's parts concatenated are already one valid request: no decode.
            S3Encoding::OtlpProto => batch.encoded(),
            S3Encoding::OtlpJson => Bytes::from(serde_json::to_vec(&batch.decode()?)?),
            S3Encoding::Jsonl => {
                let mut lines = Vec::with_capacity(batch.encoded_len() * 2);
                encode_request(&mut JsonLinesEncoder::new(), &batch.decode()?, &mut lines);
                Bytes::from(lines)
            }
        };
        Ok(match self.compression {
            S3Compression::None => plain,
            S3Compression::Gzip => {
                let mut gz = GzEncoder::new(
                    Vec::with_capacity(plain.len() / 4),
                    flate2::Compression::default(),
                );
                gz.write_all(&plain)?;
                Bytes::from(gz.finish()?)
            }
            S3Compression::Zstd => Bytes::from(zstd::bulk::compress(&plain, ZSTD_LEVEL)?),
        })
    }
}
