//! The content encodings the receivers inflate (gzip, zstd, deflate) and one bounded
//! decoder per encoding: none writes more than the decompressed limit + 1 byte, whatever
//! the ratio. Not the wire limit nor how refusals are answered (`limits`, `answer`).
//!
//! OTLP/HTTP reads `Content-Encoding` itself and decodes with [`decompress`]; OTLP/gRPC
//! leaves `grpc-encoding` gzip and zstd to tonic, whose decoder writes into a buffer
//! limited by `max_decoding_message_size` (the tests check both).

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::answer::Rejection;

/// A compression a request body may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    /// RFC 1952; several members allowed.
    Gzip,
    /// RFC 8878 (zstd frames; several allowed).
    Zstd,
    /// HTTP's `deflate`: zlib framing (RFC 1950). Raw deflate (RFC 1951) without the zlib
    /// header is read too, as some clients send it under this name.
    Deflate,
}

impl ContentEncoding {
    /// What OTLP/HTTP accepts, for error messages.
    pub(crate) const HTTP_NAMES: &'static str = "gzip, zstd, deflate or identity";
    /// What OTLP/gRPC accepts (`grpc-accept-encoding`).
    pub(crate) const GRPC_NAMES: &'static str = "gzip,zstd";

    /// From an HTTP `Content-Encoding` value: `Ok(None)` for none or `identity`, an
    /// `Unsupported` rejection naming any other encoding (HTTP 415).
    pub(crate) fn from_http(value: Option<&[u8]>) -> Result<Option<Self>, Rejection> {
        let Some(value) = value else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Self::Gzip)),
            "zstd" => Ok(Some(Self::Zstd)),
            "deflate" => Ok(Some(Self::Deflate)),
            other => Err(Rejection::Unsupported(format!(
                "Content-Encoding {other:?} is not supported; use {}",
                Self::HTTP_NAMES
            ))),
        }
    }

    /// From a gRPC `grpc-encoding` value (exact names, as gRPC defines them): `Ok(None)`
    /// for none or `identity`; deflate is not offered over gRPC (OTLP clients send gzip).
    pub(crate) fn from_grpc(value: Option<&[u8]>) -> Result<Option<Self>, Rejection> {
        match value {
            None | Some(b"identity") => Ok(None),
            Some(b"gzip") => Ok(Some(Self::Gzip)),
            Some(b"zstd") => Ok(Some(Self::Zstd)),
            Some(other) => Err(Rejection::Unsupported(format!(
                "grpc-encoding {:?} is not supported; use gzip, zstd or none",
                String::from_utf8_lossy(other)
            ))),
        }
    }
}

/// Inflates `compressed` to at most `limit` bytes: `InflatesTooLarge` once the limit is
/// passed (inflation stops there), `Corrupt` for data that is not valid in `encoding`.
pub(crate) fn decompress(
    encoding: ContentEncoding,
    compressed: &[u8],
    limit: usize,
) -> Result<Bytes, Rejection> {
    match encoding {
        ContentEncoding::Gzip => gunzip(compressed, limit),
        ContentEncoding::Zstd => unzstd(compressed, limit),
        ContentEncoding::Deflate => inflate(compressed, limit),
    }
}

/// Inflates gzip (several members allowed, as HTTP permits) to at most `limit` bytes.
pub(crate) fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, Rejection> {
    read_bounded(
        MultiGzDecoder::new(compressed),
        compressed.len(),
        limit,
        "gzip",
    )
}

/// Inflates zstd frames (several allowed, as zstd's own tools write them) to at most
/// `limit` bytes.
pub(crate) fn unzstd(compressed: &[u8], limit: usize) -> Result<Bytes, Rejection> {
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|e| Rejection::Corrupt(format!("cannot start a zstd decoder: {e}")))?;
    read_bounded(decoder, compressed.len(), limit, "zstd")
}

/// Inflates HTTP `deflate` to at most `limit` bytes: zlib framing when the body starts
/// with a zlib header, raw deflate otherwise.
pub(crate) fn inflate(compressed: &[u8], limit: usize) -> Result<Bytes, Rejection> {
    match has_zlib_header(compressed) {
        true => read_bounded(
            ZlibDecoder::new(compressed),
            compressed.len(),
            limit,
            "zlib",
        ),
        false => read_bounded(
            DeflateDecoder::new(compressed),
            compressed.len(),
            limit,
            "deflate",
        ),
    }
}

/// RFC 1950 §2.2: method 8 (deflate) with a window of at most 32 KiB, and the two header
/// bytes, read as a big-endian number, a multiple of 31. A raw deflate stream can start
/// like this by chance (about 1 in 250); it then fails as corrupt zlib, and the client
/// should send zlib framing as HTTP says.
fn has_zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads `decoder` to its end or to `limit + 1` bytes, whichever comes first.
fn read_bounded(
    decoder: impl Read,
    compressed_len: usize,
    limit: usize,
    format: &str,
) -> Result<Bytes, Rejection> {
    // Start from a plausible ratio; `read_to_end` grows it (at most ~2x limit transiently).
    let mut plain = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit + 1));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| Rejection::Corrupt(format!("invalid {format} data: {e}")))?;
    match plain.len() > limit {
        true => Err(Rejection::InflatesTooLarge { limit }),
        false => Ok(Bytes::from(plain)),
    }
}

/// Compresses `plain` the way a client would (fast levels), for the tests and the fuzz
/// targets' round trips.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn compress(encoding: ContentEncoding, plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let fast = flate2::Compression::fast();
    // Writing into a Vec cannot fail.
    match encoding {
        ContentEncoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), fast);
            let _ = encoder.write_all(plain);
            encoder.finish().unwrap_or_default()
        }
        ContentEncoding::Zstd => zstd::encode_all(plain, 1).unwrap_or_default(),
        ContentEncoding::Deflate => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), fast);
            let _ = encoder.write_all(plain);
            encoder.finish().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::DeflateEncoder;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        compress(ContentEncoding::Deflate, data)
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        compress(ContentEncoding::Zstd, data)
    }

    const ENCODINGS: [ContentEncoding; 3] = [
        ContentEncoding::Gzip,
        ContentEncoding::Zstd,
        ContentEncoding::Deflate,
    ];

    #[test]
    fn every_encoding_round_trips_and_stops_at_the_limit() {
        let zeros = vec![0; 1 << 20];
        for encoding in ENCODINGS {
            let compressed = compress(encoding, &zeros);
            assert_eq!(
                decompress(encoding, &compressed, 1 << 20).unwrap().len(),
                1 << 20,
                "{encoding:?}"
            );
            assert_eq!(
                decompress(encoding, &compressed, (1 << 20) - 1),
                Err(Rejection::InflatesTooLarge {
                    limit: (1 << 20) - 1
                }),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn every_encoding_refuses_garbage_as_corrupt() {
        for encoding in ENCODINGS {
            let result = decompress(encoding, b"\xff\xfenot compressed at all", 100);
            assert!(
                matches!(&result, Err(Rejection::Corrupt(m)) if m.contains("invalid")),
                "{encoding:?}: {result:?}"
            );
            // A valid start cut short is corrupt too, not a shorter body.
            let compressed = compress(encoding, &[7; 10_000]);
            let cut = &compressed[..compressed.len() / 2];
            assert!(
                matches!(
                    decompress(encoding, cut, 1 << 20),
                    Err(Rejection::Corrupt(_))
                ),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn deflate_reads_zlib_and_raw_deflate() {
        let text = b"hello deflate".repeat(10);
        assert_eq!(inflate(&zlib(&text), 1000).unwrap(), text);
        assert_eq!(inflate(&raw_deflate(&text), 1000).unwrap(), text);
        assert!(has_zlib_header(&zlib(b"")));
    }

    #[test]
    fn gzip_reads_every_member() {
        let mut two = compress(ContentEncoding::Gzip, b"hello ");
        two.extend(compress(ContentEncoding::Gzip, b"world"));
        assert_eq!(
            gunzip(&two, 100).unwrap(),
            Bytes::from_static(b"hello world")
        );
    }

    #[test]
    fn zstd_reads_every_frame() {
        let mut two = zstd(b"hello ");
        two.extend(zstd(b"world"));
        assert_eq!(
            unzstd(&two, 100).unwrap(),
            Bytes::from_static(b"hello world")
        );
    }

    #[test]
    fn encodings_are_parsed_from_their_headers() {
        assert_eq!(ContentEncoding::from_http(None), Ok(None));
        assert_eq!(ContentEncoding::from_http(Some(b" Identity ")), Ok(None));
        assert_eq!(
            ContentEncoding::from_http(Some(b"ZSTD")),
            Ok(Some(ContentEncoding::Zstd))
        );
        assert_eq!(
            ContentEncoding::from_http(Some(b"deflate")),
            Ok(Some(ContentEncoding::Deflate))
        );
        let Err(Rejection::Unsupported(message)) = ContentEncoding::from_http(Some(b"br")) else {
            panic!("br is not supported");
        };
        assert!(message.contains("\"br\""), "{message}");
        assert_eq!(
            ContentEncoding::from_grpc(Some(b"zstd")),
            Ok(Some(ContentEncoding::Zstd))
        );
        assert!(matches!(
            ContentEncoding::from_grpc(Some(b"deflate")),
            Err(Rejection::Unsupported(m)) if m.contains("\"deflate\"")
        ));
    }
}
