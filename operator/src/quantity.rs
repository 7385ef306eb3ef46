//! Storage sizes as Kubernetes quantities (`10Gi`, `500M`, `1e9`): the CRD schema that admits
//! only positive byte counts, and their value in bytes, so that two spellings of one size
//! (`1Gi`, `1024Mi`) compare equal. Not a general quantity library (no CPU millis, no signs).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::{Schema, SchemaGenerator, json_schema};

/// What a storage size may look like: a positive number (digits, optionally with a
/// fraction), then a binary (`Ki` .. `Ei`) or decimal (`k`, `M` .. `E`) suffix or a
/// non-negative exponent (`e9`). Every value it admits is a valid Kubernetes quantity of at
/// least one byte; signs, `m`/`u`/`n` suffixes and negative exponents (fractions of a byte)
/// and zero are refused. Go's RE2 (the API server's) has no look-ahead, hence the two
/// branches for "some digit is not zero".
pub const STORAGE_SIZE_PATTERN: &str =
    r"^([0-9]*[1-9][0-9]*(\.[0-9]*)?|0*\.[0-9]*[1-9][0-9]*)([KMGTPE]i|[kMGTPE]|[eE]\+?[0-9]+)?$";

/// Largest size Kubernetes can express in bytes (a quantity's value is an int64).
const MAX_BYTES: u128 = i64::MAX as u128;

/// The CRD schema of a storage size field (`queueVolume.persistent.size`): an integer
/// number of bytes (at least 1) or a string matching [`STORAGE_SIZE_PATTERN`].
pub fn storage_size_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": STORAGE_SIZE_PATTERN}
        ]
    })
}

/// A quantity that is not a storage size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form the schema admits.
    #[error(
        "{0:?} is not a storage size: use a positive number of bytes, optionally with a unit (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E) or an exponent, e.g. 10Gi, 500M or 1e9"
    )]
    Malformed(String),
    /// More bytes than Kubernetes can express.
    #[error("{0:?} is larger than Kubernetes can express (at most 8Ei); use a smaller size")]
    TooLarge(String),
}

/// The size in whole bytes (a fraction of a byte rounds up, as Kubernetes does).
pub fn storage_bytes(quantity: &Quantity) -> Result<u64, QuantityError> {
    let text = quantity.0.as_str();
    let malformed = || QuantityError::Malformed(quantity.0.clone());
    let too_large = || QuantityError::TooLarge(quantity.0.clone());

    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(malformed());
    }
    // The number's digits as one integer, and how many of them follow the point.
    let mut digits: u128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut exponent10 = -i64::try_from(fraction.len()).map_err(|_| too_large())?;
    let mut exponent2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let step = "KMGTPE".find(&suffix[..1]).ok_or_else(malformed)?;
            exponent2 = 10 * (u32::try_from(step).map_err(|_| malformed())? + 1);
        }
        "k" | "M" | "G" | "T" | "P" | "E" => {
            let step = "kMGTPE".find(suffix).ok_or_else(malformed)?;
            exponent10 += 3 * (i64::try_from(step).map_err(|_| malformed())? + 1);
        }
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .map(|e| e.strip_prefix('+').unwrap_or(e))
                .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(malformed)?;
            exponent10 += exponent.parse::<i64>().map_err(|_| too_large())?;
        }
    }
    if digits == 0 {
        return Err(malformed());
    }
    let scaled = digits
        .checked_mul(1u128.checked_shl(exponent2).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    let bytes = if exponent10 >= 0 {
        let factor = u32::try_from(exponent10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .ok_or_else(too_large)?;
        scaled.checked_mul(factor).ok_or_else(too_large)?
    } else {
        // More fractional digits than u128 holds powers of ten for: a vanishing fraction
        // of a byte, which rounds up to one.
        match u32::try_from(-exponent10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
        {
            Some(divisor) => scaled.div_ceil(divisor),
            None => 1,
        }
    };
    if bytes > MAX_BYTES {
        return Err(too_large());
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Whether two storage sizes are the same number of bytes; spellings that cannot be read
/// are compared as written.
pub fn same_size(a: &Quantity, b: &Quantity) -> bool {
    match (storage_bytes(a), storage_bytes(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.0 == b.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Result<u64, QuantityError> {
        storage_bytes(&Quantity(s.into()))
    }

    #[test]
    fn units_exponents_and_fractions() {
        assert_eq!(bytes("1"), Ok(1));
        assert_eq!(bytes("10Gi"), Ok(10 << 30));
        assert_eq!(bytes("1024Mi"), Ok(1 << 30));
        assert_eq!(bytes("500M"), Ok(500_000_000));
        assert_eq!(bytes("2k"), Ok(2000));
        assert_eq!(bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(bytes("1E+3"), Ok(1000));
        assert_eq!(bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(bytes("0.5Ki"), Ok(512));
        assert_eq!(bytes(".5"), Ok(1), "a fraction of a byte rounds up");
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes("7Ei"), Ok(7 << 60));
        assert!(same_size(
            &Quantity("1Gi".into()),
            &Quantity("1024Mi".into())
        ));
        assert!(!same_size(&Quantity("1Gi".into()), &Quantity("1G".into())));
    }

    #[test]
    fn what_is_not_a_positive_byte_count_is_refused() {
        for bad in [
            "", "0", "0Gi", "0.0", "-1Gi", "+1Gi", "10Gb", "10 Gi", "1.2.3", "ten", "100m", "1e-3",
            "Gi", ".", "1e",
        ] {
            assert!(
                matches!(bytes(bad), Err(QuantityError::Malformed(_))),
                "{bad:?} admitted: {:?}",
                bytes(bad)
            );
        }
        assert!(matches!(bytes("8Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(bytes("1e30"), Err(QuantityError::TooLarge(_))));
        assert!(bytes("ten").unwrap_err().to_string().contains("e.g. 10Gi"));
    }
}
