//! ClickHouse's own compression format, which its HTTP interface reads with `decompress=1`:
//! the body is a run of blocks, each a 16-byte CityHash128 (v1.0.2) checksum of the rest of
//! the block, a method byte (`0x82`: LZ4), the compressed size (header included) and the
//! uncompressed size (both u32, little-endian), then the LZ4 block. Not framing of anything
//! else (no gzip, no LZ4 frame format).
//!
//! Why this and not gzip: LZ4 costs a fraction of gzip's CPU at its fastest level, and every
//! ClickHouse version since 1.1 reads it (the official clients send it).

/// Bytes of a block before its data: checksum, method, two sizes.
const HEADER: usize = 16 + 1 + 4 + 4;
/// The method byte of LZ4 blocks.
const LZ4_METHOD: u8 = 0x82;
/// Uncompressed bytes per block: the server's `max_compress_block_size` default, so the
/// server decompresses into buffers of the size it is used to.
pub const BLOCK_SIZE: usize = 1 << 20;

/// Appends `data`, compressed as ClickHouse LZ4 blocks of at most [`BLOCK_SIZE`]
/// uncompressed bytes, to `out`. An empty `data` appends nothing.
pub fn compress_into(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(BLOCK_SIZE) {
        let start = out.len();
        let bound = lz4_flex::block::get_maximum_output_size(chunk.len());
        out.resize(start + HEADER + bound, 0);
        // Cannot fail: the target holds the worst case for this input.
        let written =
            lz4_flex::block::compress_into(chunk, &mut out[start + HEADER..]).unwrap_or(0);
        out.truncate(start + HEADER + written);
        let block = &mut out[start..];
        // Both sizes fit: a chunk is at most BLOCK_SIZE, its bound a little more.
        let compressed = (HEADER - 16 + written) as u32;
        block[16] = LZ4_METHOD;
        block[17..21].copy_from_slice(&compressed.to_le_bytes());
        block[21..25].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        let hash = cityhash_rs::cityhash_102_128(&block[16..]);
        // ClickHouse writes its uint128 as (first, second) = the high half, then the low.
        block[..8].copy_from_slice(&((hash >> 64) as u64).to_le_bytes());
        block[8..16].copy_from_slice(&(hash as u64).to_le_bytes());
    }
}

/// The data of a body of blocks, each checked against its checksum (for tests and for
/// reading back what was sent).
pub fn decompress(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    while !body.is_empty() {
        if body.len() < HEADER {
            return Err(format!(
                "{} bytes left, shorter than a block header",
                body.len()
            ));
        }
        if body[16] != LZ4_METHOD {
            return Err(format!("method byte {:#04x}, not LZ4", body[16]));
        }
        let size = |at: usize| {
            u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize
        };
        let (compressed, uncompressed) = (size(17), size(21));
        if compressed < HEADER - 16 || body.len() < 16 + compressed {
            return Err(format!(
                "compressed size {compressed} does not fit the body"
            ));
        }
        let block = &body[16..16 + compressed];
        let hash = cityhash_rs::cityhash_102_128(block);
        let mut expected = [0u8; 16];
        expected[..8].copy_from_slice(&((hash >> 64) as u64).to_le_bytes());
        expected[8..].copy_from_slice(&(hash as u64).to_le_bytes());
        if body[..16] != expected {
            return Err("checksum mismatch".to_string());
        }
        let chunk = lz4_flex::block::decompress(&block[HEADER - 16..], uncompressed)
            .map_err(|e| format!("LZ4: {e}"))?;
        data.extend_from_slice(&chunk);
        body = &body[16 + compressed..];
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_split_at_the_block_size() {
        let data: Vec<u8> = (0..(BLOCK_SIZE * 2 + 12_345))
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let mut body = Vec::new();
        compress_into(&data, &mut body);
        assert_eq!(decompress(&body).unwrap(), data);
        // Three blocks: two full ones and the rest.
        let first = u32::from_le_bytes(body[17..21].try_into().unwrap()) as usize;
        let second_at = 16 + first;
        assert_eq!(
            u32::from_le_bytes(body[second_at + 21..second_at + 25].try_into().unwrap()) as usize,
            BLOCK_SIZE
        );
        let mut nothing = Vec::new();
        compress_into(&[], &mut nothing);
        assert!(nothing.is_empty());
    }

    #[test]
    fn a_damaged_block_is_refused() {
        let mut body = Vec::new();
        compress_into(b"some rows, some rows, some rows", &mut body);
        let last = body.len() - 1;
        body[last] ^= 1;
        assert_eq!(decompress(&body).unwrap_err(), "checksum mismatch");
        assert!(decompress(&body[..10]).is_err());
    }
}
