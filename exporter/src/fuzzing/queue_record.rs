//! Target `queue_record`: the durable queue's record reader, on a segment of any bytes.

use crate::chain::queue::durable::record::{Found, HEADER_LEN, encode_header, read_at};

/// Reads `data` followed by one sound record, record by record, as recovery does: every
/// step moves forward and stops at the end; each record found is whole, inside the bytes,
/// and frames itself exactly (its header re-encodes to the bytes it was read from); and the
/// sound record at the end is found whatever garbage precedes it (one bad record costs only
/// itself), unless a record found earlier covers it.
pub fn queue_record(data: &[u8]) {
    let payload = data.get(..data.len().min(64)).unwrap_or_default();
    let last_at = data.len() as u64;
    let mut segment = data.to_vec();
    segment.extend_from_slice(&encode_header(u64::MAX - 1, 3, payload));
    segment.extend_from_slice(payload);
    let end = segment.len() as u64;

    let mut offset = 0;
    let mut covered_to = 0;
    let mut found_last = false;
    loop {
        let found = match read_at(segment.as_slice(), offset, end) {
            Ok(found) => found,
            Err(e) => panic!("reading bytes in memory failed at {offset}: {e}"),
        };
        match found {
            Found::End => break,
            Found::Record {
                header,
                payload: read,
                next,
            } => {
                assert_eq!(
                    next,
                    offset + header.record_len(),
                    "next is not after the record"
                );
                assert!(next <= end, "a record past the end");
                let at = usize::try_from(offset).expect("offsets fit in memory");
                let framed = encode_header(header.id, header.spans, &read);
                assert_eq!(
                    &segment[at..at + HEADER_LEN],
                    &framed[..],
                    "header does not re-encode"
                );
                assert_eq!(
                    &segment[at + HEADER_LEN..next as usize],
                    &read[..],
                    "payload is not the bytes read"
                );
                if offset == last_at {
                    assert_eq!(read, payload, "the sound record's payload changed");
                    found_last = true;
                }
                covered_to = covered_to.max(next);
                offset = next;
            }
            Found::Corrupt { at, resume } => {
                assert_eq!(at, offset, "corruption reported elsewhere than asked");
                assert!(
                    resume > at && resume <= end,
                    "resync did not move forward: {at} -> {resume}"
                );
                offset = resume;
            }
        }
    }
    assert!(
        found_last || covered_to > last_at,
        "the sound record after {last_at} bytes of garbage was skipped"
    );
}

#[cfg(test)]
mod tests {
    use super::queue_record;
    use crate::fuzzing::mutate::for_each_mutation;

    #[test]
    fn mutated_segments_keep_the_invariants() {
        for_each_mutation("queue_record", 3_000, 0x5e9, queue_record);
    }
}
