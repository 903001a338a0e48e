//! Helpers for the unit tests: waiting for a condition with a deadline instead of sleeping.

use std::time::{Duration, Instant};

/// How long a waited-for condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often it is looked at.
const POLL: Duration = Duration::from_millis(5);

/// Blocks until `check` holds.
///
/// # Panics
///
/// After [`DEADLINE`], naming `what`.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for async tests.
///
/// # Panics
///
/// After [`DEADLINE`], naming `what`.
pub async fn wait_until_async(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A store in a fresh temporary directory (kept while the `TempDir` lives).
pub fn temp_store() -> (tempfile::TempDir, crate::mvcc::Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = crate::mvcc::open_database(dir.path()).expect("db");
    (dir, crate::mvcc::Store::open(&db).expect("store"))
}

/// Applies a put of `key` = `value`, as if from the log.
pub fn put(store: &crate::mvcc::Store, key: &str, value: &str) {
    let req = etch_proto::Mutation::Put(etch_proto::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    });
    store
        .apply(&req, b"applied")
        .expect("storage")
        .expect("put");
}
