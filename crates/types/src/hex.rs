//! Lowercase hex for byte strings in JSON: `#[serde(with = "quartier_types::hex")]`
//! on a `[u8; N]` or `Vec<u8>` field. Canonical bytes stay borsh.

use serde::{Deserialize, Deserializer, Serializer};

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Why a string is not hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected lowercase hex digits in pairs")]
pub struct HexError;

/// The bytes of lowercase hex `s`.
///
/// # Errors
/// [`HexError`] for an odd length or a character outside `0-9a-f`.
pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(HexError),
    };
    bytes
        .chunks_exact(2)
        .map(|p| Ok((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Byte strings that serialise as hex.
pub trait HexBytes: Sized {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// From decoded bytes, `None` for a wrong length.
    fn from_bytes(bytes: Vec<u8>) -> Option<Self>;
}

impl<const N: usize> HexBytes for [u8; N] {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        bytes.try_into().ok()
    }
}

impl HexBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        Some(bytes)
    }
}

/// Serialises as a hex string.
///
/// # Errors
/// Only the serializer's own.
pub fn serialize<T: HexBytes, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(value.bytes()))
}

/// Deserialises from a hex string of the right length.
///
/// # Errors
/// Bad hex or a wrong length.
pub fn deserialize<'de, T: HexBytes, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let s = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
    let bytes = decode(&s).map_err(serde::de::Error::custom)?;
    T::from_bytes(bytes).ok_or_else(|| serde::de::Error::custom("wrong number of bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_digits() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        assert_eq!(decode("0001abff").unwrap(), bytes);
        assert_eq!(decode("0"), Err(HexError));
        assert_eq!(decode("0G"), Err(HexError));
        assert_eq!(decode("AB"), Err(HexError));
    }
}
