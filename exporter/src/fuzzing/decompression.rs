//! Target `decompression`: the receivers' decompression limits.
//!
//! Input: byte 0's high bit says whether the rest is gzip-compressed first (so that valid
//! streams, not only garbage, are decompressed), bytes 1-2 the limit; the rest is the body.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::receiver::{Rejection, gunzip};

/// Far above any limit the target picks: what a decoder without a limit would produce.
const REFERENCE_CAP: u64 = 1 << 20;

/// The limited decoder agrees with an unlimited one: the same bytes when they fit the
/// limit, `InflatesTooLarge` exactly when they do not, and never more than the limit held.
pub fn decompression(data: &[u8]) {
    let [mode, high, low, body @ ..] = data else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([*high, *low]));
    let compress_first = mode & 0x80 != 0;
    let body = if compress_first {
        gzip(body)
    } else {
        body.to_vec()
    };
    let reference = reference_gunzip(&body);
    match (gunzip(&body, limit), reference) {
        (Ok(plain), Ok(expected)) => {
            assert!(
                plain.len() <= limit,
                "{} bytes returned over a {limit}-byte limit",
                plain.len()
            );
            assert!(
                plain[..] == expected[..],
                "the limited decoder returned other bytes"
            );
            if compress_first {
                assert!(plain[..] == data[3..], "a round trip changed the body");
            }
        }
        (Ok(plain), Err(e)) => panic!(
            "accepted {} bytes that an unlimited decoder refuses: {e}",
            plain.len()
        ),
        (Err(Rejection::InflatesTooLarge { .. }), Ok(expected)) => assert!(
            expected.len() > limit,
            "refused as too large, but it inflates to {} of {limit} bytes",
            expected.len()
        ),
        (Err(Rejection::InflatesTooLarge { .. } | Rejection::Corrupt(_)), Err(_)) => {}
        (Err(Rejection::Corrupt(e)), Ok(expected)) => panic!(
            "refused as corrupt ({e}), but it inflates to {} bytes",
            expected.len()
        ),
        (Err(other), _) => panic!("unexpected refusal: {other}"),
    }
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(plain);
    encoder.finish().unwrap_or_default()
}

fn reference_gunzip(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut plain = Vec::new();
    MultiGzDecoder::new(compressed)
        .take(REFERENCE_CAP)
        .read_to_end(&mut plain)?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::decompression;
    use crate::fuzzing::mutate::for_each_mutation;

    #[test]
    fn mutated_bodies_keep_the_invariants() {
        for_each_mutation("decompression", 3_000, 0x9a1b, decompression);
    }
}
