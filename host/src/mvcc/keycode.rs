//! Order-preserving encodings of the keys of `kv_versions` and `kv_history`.
//!
//! A version key is `escape(key) ++ 0x00 0x00 ++ big_endian(revision)`, where `escape`
//! writes every 0x00 byte of the user key as 0x00 0xff and leaves the other bytes alone.
//! The terminator 0x00 0x00 cannot occur inside an escaped key, so the encoding is
//! prefix-free, and byte order of the encodings equals `(key, revision)` order:
//!
//! - keys that differ at byte i compare there, and an escaped 0x00 (0x00 0xff) still sorts
//!   below any byte >= 0x01;
//! - a key that is a proper prefix of another ends in 0x00 0x00, which sorts below both the
//!   escaped 0x00 (0x00 0xff) and any byte >= 0x01 of the longer key;
//! - equal keys compare by revision, whose big-endian bytes sort numerically (revisions are
//!   never negative).
//!
//! So all versions of one key are contiguous and ascending, and `[escape_key(a), escape_key(b))`
//! holds exactly the versions of keys in `[a, b)`.

use etch_proto::Revision;

use super::error::{Error, Result};

/// The escaped key with its terminator: the prefix shared by all versions of `key`, and the
/// lower bound of every version of every key `>= key`.
pub(crate) fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// The `kv_versions` key of `key` at `rev`.
pub(crate) fn version_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&encode_rev(rev));
    out
}

/// Splits a `kv_versions` key back into the user key and the revision.
pub(crate) fn decode_version_key(buf: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let corrupt = || Error::Corrupt(format!("malformed version key {buf:02x?}"));
    let mut key = Vec::with_capacity(buf.len().saturating_sub(10));
    let mut i = 0;
    loop {
        match (buf.get(i), buf.get(i + 1)) {
            (Some(0), Some(0)) => break,
            (Some(0), Some(0xff)) => {
                key.push(0);
                i += 2;
            }
            (Some(0), _) | (None, _) => return Err(corrupt()),
            (Some(&b), _) => {
                key.push(b);
                i += 1;
            }
        }
    }
    let rev = buf.get(i + 2..).ok_or_else(corrupt)?;
    Ok((key, decode_rev(rev)?))
}

/// A revision as 8 big-endian bytes (the `kv_history` key, and the tail of a version key).
pub(crate) fn encode_rev(rev: Revision) -> [u8; 8] {
    // Revisions are >= 1 wherever they are stored, so the sign bit is never set and the
    // unsigned big-endian bytes sort numerically.
    (rev as u64).to_be_bytes()
}

/// Reads 8 big-endian bytes back into a revision.
pub(crate) fn decode_rev(buf: &[u8]) -> Result<Revision> {
    let bytes: [u8; 8] = buf
        .try_into()
        .map_err(|_| Error::Corrupt(format!("malformed revision {buf:02x?}")))?;
    Ok(u64::from_be_bytes(bytes) as Revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys chosen around the awkward bytes: 0x00 (escaped), 0xff (the escape's second byte)
    /// and prefixes of each other.
    fn keys() -> Vec<Vec<u8>> {
        let alphabet: [u8; 4] = [0x00, 0x01, 0xfe, 0xff];
        let mut keys = vec![vec![]];
        for len in 1..=3 {
            let mut next = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for &b in &alphabet {
                    let mut k = k.clone();
                    k.push(b);
                    next.push(k);
                }
            }
            keys.extend(next);
        }
        keys.push(b"a".to_vec());
        keys.push(b"a\x00b".to_vec());
        keys.push(b"ab".to_vec());
        keys
    }

    #[test]
    fn encoded_order_is_key_then_revision_order() {
        let revs = [1, 2, 255, 256, 1 << 40, i64::MAX];
        let mut pairs: Vec<(Vec<u8>, Revision)> = keys()
            .into_iter()
            .flat_map(|k| revs.iter().map(move |&r| (k.clone(), r)))
            .collect();
        pairs.sort();
        let encoded: Vec<Vec<u8>> = pairs.iter().map(|(k, r)| version_key(k, *r)).collect();
        for (i, w) in encoded.windows(2).enumerate() {
            assert!(
                w[0] < w[1],
                "order broken between {:?} and {:?}",
                pairs[i],
                pairs[i + 1]
            );
        }
    }

    #[test]
    fn round_trip() {
        for k in keys() {
            for r in [1, 7, i64::MAX] {
                assert_eq!(
                    decode_version_key(&version_key(&k, r)).expect("decodes"),
                    (k.clone(), r)
                );
            }
        }
    }

    #[test]
    fn prefix_bounds_select_exactly_the_key_range() {
        let (a, b) = (b"a\x00".to_vec(), b"b".to_vec());
        for k in keys() {
            let inside = k >= a && k < b;
            let enc = version_key(&k, 3);
            let by_bytes = enc >= key_prefix(&a) && enc < key_prefix(&b);
            assert_eq!(inside, by_bytes, "key {k:02x?}");
            assert!(enc.starts_with(&key_prefix(&k)));
        }
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(decode_version_key(b"abc").is_err());
        assert!(decode_version_key(b"a\x00\x01").is_err());
        assert!(decode_version_key(b"a\x00\x00\x01").is_err());
    }
}
