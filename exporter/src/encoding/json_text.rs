//! The smallest pieces of JSON text, appended to a caller's reused `Vec<u8>`: escaped
//! strings, integers, finite doubles, hex. Not a JSON model: no values, no parsing.

/// For each byte: 0 if it is written as is, else the character after the backslash
/// (`u` meaning `\u00XX`). Only `"`, `\` and control characters need escaping; every
/// other byte, including UTF-8 continuation bytes, passes through.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_utf8_str(out, s.as_bytes());
}

/// Appends `utf8` (bytes known to be UTF-8, e.g. a string field of a scanned request) as a
/// quoted JSON string.
pub fn write_utf8_str(out: &mut Vec<u8>, utf8: &[u8]) {
    out.reserve(utf8.len() + 2);
    out.push(b'"');
    write_utf8_content(out, utf8);
    out.push(b'"');
}

/// Appends the escaped characters of `s` without the surrounding quotes.
pub fn write_str_content(out: &mut Vec<u8>, s: &str) {
    write_utf8_content(out, s.as_bytes());
}

/// Appends the escaped characters of `bytes` (UTF-8) without the surrounding quotes.
pub fn write_utf8_content(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most strings need no escaping: find out with a tight loop before copying in runs.
    if !bytes.iter().any(|&b| ESCAPE[b as usize] != 0) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX_DIGITS[(b >> 4) as usize]);
            out.push(HEX_DIGITS[(b & 0x0f) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// Appends an object key and its colon: `"key":`.
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    write_utf8_key(out, key.as_bytes());
}

/// [`write_key`] for bytes known to be UTF-8.
pub fn write_utf8_key(out: &mut Vec<u8>, utf8: &[u8]) {
    write_utf8_str(out, utf8);
    out.push(b':');
}

pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a finite double in its shortest exact form, which always carries a `.` or an
/// exponent (`1.0`, `1e300`), so readers keep it a double. Callers handle NaN and
/// infinities, which JSON cannot express as numbers.
pub fn write_finite_f64(out: &mut Vec<u8>, v: f64) {
    debug_assert!(v.is_finite());
    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

/// Appends `bytes` as lowercase hex, without quotes.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    // Cannot fail: the target slice is exactly twice the input's length.
    let encoded = const_hex::encode_to_slice(bytes, &mut out[start..]);
    debug_assert!(encoded.is_ok());
}

/// Appends `bytes` as a quoted lowercase hex string (`""` when empty).
pub fn write_hex_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    write_hex(out, bytes);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters_only() {
        let s = "a\"b\\c\nd\re\tf\u{8}\u{c}\u{1}\u{1f} é ✓ 🚀 \u{7f}";
        let written = text(|o| write_str(o, s));
        assert_eq!(
            written,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\b\\f\\u0001\\u001f é ✓ 🚀 \u{7f}\""
        );
        let back: String = serde_json::from_str(&written).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn doubles_always_read_back_as_doubles_with_the_same_bits() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -2.5,
            0.1,
            1e300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            123456789012345680.0,
        ] {
            let written = text(|o| write_finite_f64(o, v));
            assert!(
                written.contains('.') || written.contains('e'),
                "{written} would read back as an integer"
            );
            let back: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert!(back.is_f64(), "{written}");
            assert_eq!(back.as_f64().unwrap().to_bits(), v.to_bits(), "{written}");
        }
    }

    #[test]
    fn hex_is_lowercase_and_empty_for_no_bytes() {
        assert_eq!(
            text(|o| write_hex_str(o, &[0xAB, 0x01, 0xff])),
            "\"ab01ff\""
        );
        assert_eq!(text(|o| write_hex_str(o, &[])), "\"\"");
        let long: Vec<u8> = (0..=255).collect();
        assert_eq!(text(|o| write_hex(o, &long)), const_hex::encode(&long));
    }

    #[test]
    fn integers_cover_their_whole_range() {
        assert_eq!(text(|o| write_u64(o, u64::MAX)), "18446744073709551615");
        assert_eq!(text(|o| write_i64(o, i64::MIN)), "-9223372036854775808");
    }
}
