//! The export stream's seal: every flipped bit and every cut is refused; the unsealed
//! format of the release before is still read.

use super::*;
use crate::testing::{put, temp_store};

fn exported() -> Vec<u8> {
    let (_dir, store) = temp_store();
    for i in 0..5 {
        put(&store, &format!("key{i}"), &format!("value{i}"));
    }
    let mut out = Vec::new();
    store.export(&mut out).expect("export");
    out
}

#[test]
fn every_flipped_bit_and_every_cut_is_refused() {
    let good = exported();
    let entries = scan(&mut good.as_slice())
        .expect("the stream scans")
        .entries;
    assert!(entries > 5, "{entries} entries");
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            if let Ok(s) = scan(&mut bad.as_slice()) {
                panic!(
                    "a flip of bit {bit:#x} at byte {i} of {} scanned: {s:?}",
                    good.len()
                );
            }
        }
    }
    for cut in 0..good.len() {
        if let Ok(s) = scan(&mut &good[..cut]) {
            panic!(
                "a stream cut at {cut} of {} bytes scanned: {s:?}",
                good.len()
            );
        }
    }
}

#[test]
fn a_damaged_import_leaves_the_live_state_as_it_was() {
    let mut bad = exported();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x10;
    let (_dir, store) = temp_store();
    put(&store, "mine", "kept");
    let before = store.revision();
    match store.import(&mut bad.as_slice(), b"applied") {
        Err(Error::Corrupt(_) | Error::Codec(_) | Error::Io(_)) => {}
        other => panic!("a damaged import was not refused: {other:?}"),
    }
    assert_eq!(store.revision(), before);
    let view = store.view().expect("view");
    assert!(
        view.get(b"mine").expect("get").is_some(),
        "the live state changed"
    );
}

#[test]
fn an_unsealed_stream_of_the_release_before_is_read() {
    let mut old = Vec::new();
    let crc = &mut crc32fast::Hasher::new();
    write_record(
        &mut old,
        crc,
        &Record::Header {
            format: FORMAT_UNSEALED,
        },
    )
    .expect("header");
    let entries = [(b"k1".as_slice(), b"v1".as_slice()), (b"k2", b"v2")];
    for (key, value) in entries {
        write_record(
            &mut old,
            crc,
            &Record::Entry {
                space: 0,
                key,
                value,
            },
        )
        .expect("entry");
    }
    write_record(&mut old, crc, &Record::End { entries: 2 }).expect("end");
    let scanned = scan(&mut old.as_slice()).expect("a format-1 stream scans");
    assert_eq!(scanned.entries, 2);
    // A format-1 stream ended as a format-2 one (or the reverse) is refused.
    let mut mixed = Vec::new();
    let crc = &mut crc32fast::Hasher::new();
    write_record(
        &mut mixed,
        crc,
        &Record::Header {
            format: FORMAT_UNSEALED,
        },
    )
    .expect("header");
    let crc32 = crc.clone().finalize();
    write_record(&mut mixed, crc, &Record::Sealed { entries: 0, crc32 }).expect("seal");
    if let Ok(s) = scan(&mut mixed.as_slice()) {
        panic!("a format-1 header with a seal scanned: {s:?}");
    }
}

/// A sealed stream (its checksum right) of `records`, as a peer could send.
fn sealed(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let crc = &mut crc32fast::Hasher::new();
    write_record(&mut out, crc, &Record::Header { format: FORMAT }).expect("header");
    for &(space, key, value) in records {
        write_record(&mut out, crc, &Record::Entry { space, key, value }).expect("entry");
    }
    let crc32 = crc.clone().finalize();
    let entries = records.len() as u64;
    write_record(&mut out, crc, &Record::Sealed { entries, crc32 }).expect("seal");
    out
}

/// Import ingests each keyspace's records in order, and ingestion panics on a key out of
/// order: a stream whose checksum is right but whose keys or keyspaces are out of order is
/// refused as corrupt first, and the live state stays.
#[test]
fn a_stream_out_of_order_is_refused_not_ingested() {
    let (_dir, store) = temp_store();
    put(&store, "mine", "kept");
    let before = store.revision();
    let backwards = sealed(&[(0, b"b", b"1"), (0, b"a", b"2")]);
    let repeated = sealed(&[(0, b"a", b"1"), (0, b"a", b"2")]);
    let spaces_back = sealed(&[(1, b"a", b"1"), (0, b"b", b"2")]);
    for bad in [backwards, repeated, spaces_back] {
        match store.import(&mut bad.as_slice(), b"applied") {
            Err(Error::Corrupt(why)) => {
                assert!(why.contains("order") || why.contains("after"), "{why}")
            }
            other => panic!("a stream out of order was not refused: {other:?}"),
        }
    }
    assert_eq!(store.revision(), before);
    let view = store.view().expect("view");
    assert!(
        view.get(b"mine").expect("get").is_some(),
        "the live state changed"
    );
    // In order, the same records import.
    let good = sealed(&[(0, b"a", b"1"), (0, b"b", b"2"), (1, b"a", b"3")]);
    let scanned = scan(&mut good.as_slice()).expect("scans");
    assert_eq!(scanned.entries, 3);
}
