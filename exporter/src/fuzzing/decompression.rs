//! Target `decompression`: the receivers' decompression limits, for every encoding they
//! read (gzip, zstd, deflate).
//!
//! Input: byte 0 picks the encoding (low two bits) and, with its high bit, whether the
//! rest is compressed first (so that valid streams, not only garbage, are decompressed);
//! bytes 1-2 are the limit; the rest is the body.

use crate::receiver::Rejection;
use crate::receiver::compression::{ContentEncoding, compress, decompress};

/// Far above any limit the target picks (at most 64 KiB): what the same decoder returns
/// when the limit does not matter.
const REFERENCE_LIMIT: usize = 1 << 20;

/// The limited decoder agrees with the same decoder under a limit that does not bind:
/// the same bytes when they fit the limit, `InflatesTooLarge` exactly when they do not,
/// never more than the limit held, and a round trip of what a client compressed.
pub fn decompression(data: &[u8]) {
    let [mode, high, low, body @ ..] = data else {
        return;
    };
    let encoding = match mode & 0x03 {
        0 | 3 => ContentEncoding::Gzip,
        1 => ContentEncoding::Zstd,
        _ => ContentEncoding::Deflate,
    };
    let limit = usize::from(u16::from_be_bytes([*high, *low]));
    let compress_first = mode & 0x80 != 0;
    let body = match compress_first {
        true => compress(encoding, body),
        false => body.to_vec(),
    };
    let reference = decompress(encoding, &body, REFERENCE_LIMIT);
    match (decompress(encoding, &body, limit), reference) {
        (Ok(plain), Ok(expected)) => {
            assert!(
                plain.len() <= limit,
                "{encoding:?}: {} bytes returned over a {limit}-byte limit",
                plain.len()
            );
            assert!(
                plain == expected,
                "{encoding:?}: the limited decoder returned other bytes"
            );
            if compress_first {
                assert!(
                    plain[..] == data[3..],
                    "{encoding:?}: a round trip changed the body"
                );
            }
        }
        (Ok(plain), Err(e)) => panic!(
            "{encoding:?}: accepted {} bytes that the unlimited decoder refuses: {e}",
            plain.len()
        ),
        (Err(Rejection::InflatesTooLarge { .. }), Ok(expected)) => assert!(
            expected.len() > limit,
            "{encoding:?}: refused as too large, but it inflates to {} of {limit} bytes",
            expected.len()
        ),
        // Past the limit the limited decoder stops reading, so it cannot see corruption
        // further on; within it both must see the same.
        (
            Err(Rejection::InflatesTooLarge { .. }),
            Err(Rejection::InflatesTooLarge { .. } | Rejection::Corrupt(_)),
        ) => {}
        (Err(Rejection::Corrupt(_)), Err(Rejection::Corrupt(_))) => {}
        (Err(Rejection::Corrupt(e)), Err(Rejection::InflatesTooLarge { .. })) => panic!(
            "{encoding:?}: refused as corrupt ({e}) under {limit} bytes, but it inflates past {REFERENCE_LIMIT}"
        ),
        (Err(Rejection::Corrupt(e)), Ok(expected)) => panic!(
            "{encoding:?}: refused as corrupt ({e}), but it inflates to {} bytes",
            expected.len()
        ),
        (Err(other), _) => panic!("{encoding:?}: unexpected refusal: {other}"),
    }
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
