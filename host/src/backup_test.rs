//! Backup files: a round trip keeps every record, and every damaged file is refused with
//! the part that is wrong, before anything is written.

use etch_proto::alarm::{AlarmAction, AlarmRequest, AlarmType};

use super::*;
use crate::testing::put;

fn store(dir: &Path) -> (fjall::Database, Store) {
    let db = mvcc::open_database(dir).expect("db");
    let store = Store::open(&db).expect("store");
    (db, store)
}

fn header(store: &Store) -> BackupHeader {
    BackupHeader {
        format: FORMAT,
        revision: store.revision(),
        compact_revision: store.compact_revision(),
        member_id: 7,
        cluster_id: 9,
        saved_at_unix_ms: 1,
    }
}

/// A backup of a store with three keys (one with two versions) and a NOSPACE alarm.
fn backup() -> (tempfile::TempDir, Vec<u8>, u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, s) = store(&dir.path().join("db"));
    put(&s, "a", "1");
    put(&s, "b", "2");
    put(&s, "a", "3");
    put(&s, "c", "4");
    let alarm = AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 7,
        alarm: AlarmType::NoSpace,
    };
    s.apply_alarm(&alarm, b"applied")
        .expect("storage")
        .expect("alarm");
    let mut file = Vec::new();
    write(&s.begin_export(), &header(&s), &mut file).expect("backup");
    let hash = s.hash_kv(0).expect("storage").expect("hash").hash;
    (dir, file, hash)
}

fn target() -> RestoreTarget {
    RestoreTarget {
        name: "n1".into(),
        initial_cluster: vec![("n1".into(), "127.0.0.1:1".into())],
        initial_cluster_token: "t".into(),
    }
}

#[test]
fn a_backup_verifies_and_restores_to_the_same_history_without_alarms() {
    let (dir, file, hash) = backup();
    let status = verify(&mut file.as_slice()).expect("verifies");
    assert_eq!(status.header.revision, 5);
    assert_eq!(status.total_keys, 3);
    assert_eq!(status.total_size, file.len() as u64);
    assert_eq!(&status.hash[..], &file[file.len() - HASH_LEN..]);

    let path = dir.path().join("backup.db");
    fs::write(&path, &file).expect("write");
    let data_dir = dir.path().join("restored");
    let restored = restore(&path, &data_dir, &target()).expect("restores");
    assert_eq!(restored, status);
    let (_db, s) = store(&data_dir.join("db"));
    assert_eq!(s.revision(), 5);
    assert_eq!(s.hash_kv(0).expect("storage").expect("hash").hash, hash);
    let at3 = s.hash_kv(3).expect("storage").expect("hash");
    assert_eq!(at3.hash_revision, 3);
    assert!(s.alarms().is_empty(), "alarms named the old members");
    assert_eq!(
        s.applied().expect("storage"),
        Some(crate::raft::state_machine::nothing_applied())
    );
    assert!(!dir.path().join("restored.restoring").exists());

    // The member and cluster it was restored for, and no other, may found on it.
    let founders = target().initial_cluster;
    check_restored(&data_dir, "n1", &founders, "t").expect("the restore's own flags");
    let wrong = check_restored(&data_dir, "n2", &founders, "t").expect_err("another name");
    assert!(wrong.to_string().contains("--name n1"), "{wrong}");
    check_restored(&data_dir, "n1", &founders, "other").expect_err("another token");
}

#[test]
fn every_truncation_is_refused() {
    let (_dir, file, _) = backup();
    for len in (0..file.len()).step_by(7).chain([file.len() - 1]) {
        match verify(&mut &file[..len]) {
            Err(BackupError::Truncated(_)) => {}
            other => panic!("cut at {len} of {}: {other:?}", file.len()),
        }
    }
}

#[test]
fn every_flipped_bit_is_refused() {
    let (_dir, file, _) = backup();
    for at in (0..file.len()).step_by(5) {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        match verify(&mut bad.as_slice()) {
            Err(
                BackupError::HashMismatch { .. }
                | BackupError::Corrupt(_)
                | BackupError::NotABackup
                | BackupError::Format(_)
                | BackupError::Truncated(_),
            ) => {}
            other => panic!("bit flipped at {at}: {other:?}"),
        }
    }
    let mut longer = file.clone();
    longer.push(0);
    let err = verify(&mut longer.as_slice()).expect_err("a byte after the hash");
    assert!(err.to_string().contains("follow its hash"), "{err}");
    let err = verify(&mut &b"SQLite format 3\0 and more"[..]).expect_err("not ours");
    assert!(matches!(err, BackupError::NotABackup), "{err}");
}

#[test]
fn a_refused_restore_leaves_no_data_dir() {
    let (dir, mut file, _) = backup();
    let at = file.len() / 2;
    file[at] ^= 1;
    let path = dir.path().join("bad.db");
    fs::write(&path, &file).expect("write");
    let data_dir = dir.path().join("restored");
    restore(&path, &data_dir, &target()).expect_err("a corrupt backup");
    assert!(!data_dir.exists());
    assert!(!dir.path().join("restored.restoring").exists());

    let (_d, good, _) = backup();
    fs::write(&path, &good).expect("write");
    fs::create_dir_all(data_dir.join("db")).expect("mkdir");
    let err = restore(&path, &data_dir, &target()).expect_err("a used data dir");
    assert!(err.to_string().contains("not empty"), "{err}");
    let mut elsewhere = target();
    elsewhere.name = "n9".into();
    let err = restore(&path, &dir.path().join("x"), &elsewhere).expect_err("not a founder");
    assert!(err.to_string().contains("does not name"), "{err}");
}

#[test]
fn a_backup_in_etcds_frame_verifies_and_a_damaged_frame_does_not() {
    let (_dir, file, _) = backup();
    let mut trailer = EtcdTrailer::new();
    trailer.update(&file);
    let mut framed = file.clone();
    framed.extend_from_slice(&trailer.finish());
    // etcd's clients keep a snapshot whose length is 32 past a multiple of 512.
    assert_eq!(framed.len() % EtcdTrailer::SECTOR, 32);
    let plain = verify(&mut file.as_slice()).expect("the plain backup");
    let status = verify(&mut framed.as_slice()).expect("the framed backup");
    assert_eq!((status.header, status.hash), (plain.header, plain.hash));
    // A byte changed in the padding or in etcd's hash, a byte too many or too few.
    let last = framed.len() - 1;
    let first_pad = file.len();
    for (what, bad) in [
        ("its hash", {
            let mut b = framed.clone();
            b[last] ^= 1;
            b
        }),
        ("its padding", {
            let mut b = framed.clone();
            if first_pad < last - 32 {
                b[first_pad] = 1;
            } else {
                b[last - 32] ^= 1;
            }
            b
        }),
        ("a byte more", {
            let mut b = framed.clone();
            b.push(0);
            b
        }),
        ("a byte less", framed[..last].to_vec()),
    ] {
        assert!(
            verify(&mut bad.as_slice()).is_err(),
            "a frame with {what} changed verified"
        );
    }
}
