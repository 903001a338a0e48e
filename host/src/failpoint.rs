//! Failpoints: named places in the storage path where a test makes the disk fail.
//!
//! etcd's gofail is the model, reduced to what etch's disk-fault tests need: a failpoint
//! fails with `EIO` while a trigger file exists, so a test can let a node run, make its
//! disk fail at the moment it chooses, and heal it again, all on a real process. They are
//! compiled into debug builds only (the ones the integration tests run); in a release build
//! [`check`] is an empty inline function and [`arm`] refuses.
//!
//! | name | where it fails |
//! |---|---|
//! | `log-write` | writing a batch of Raft log entries or metadata (`raft::log_store`) |
//! | `log-fsync` | the fsync that makes them durable, after the write succeeded |
//! | `apply-write` | committing an applied command to the state machine (`mvcc::Store`) |
//!
//! `etchd` arms them from `ETCH_FAILPOINTS` (`name=TRIGGER[,name=TRIGGER]`, debug builds
//! only); the library itself never reads the environment.

use std::path::PathBuf;

/// The failpoints this build knows.
pub const NAMES: [&str; 3] = ["log-write", "log-fsync", "apply-write"];

#[cfg(debug_assertions)]
static ARMED: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();

/// Arms failpoints from a `name=TRIGGER[,name=TRIGGER]` list: each fails while its trigger
/// file exists. Once per process.
///
/// # Errors
///
/// An unknown name, a malformed entry, a second call, or a release build.
pub fn arm(spec: &str) -> Result<(), String> {
    let mut armed = Vec::new();
    for entry in spec.split(',').filter(|e| !e.is_empty()) {
        let (name, trigger) = entry
            .split_once('=')
            .ok_or_else(|| format!("failpoint {entry:?}: expected NAME=TRIGGER_FILE"))?;
        if !NAMES.contains(&name) {
            return Err(format!(
                "unknown failpoint {name:?} (known: {})",
                NAMES.join(", ")
            ));
        }
        armed.push((name.to_owned(), PathBuf::from(trigger)));
    }
    set(armed)
}

#[cfg(debug_assertions)]
fn set(armed: Vec<(String, PathBuf)>) -> Result<(), String> {
    ARMED
        .set(armed)
        .map_err(|_| "failpoints are armed already".to_owned())
}

#[cfg(not(debug_assertions))]
fn set(_: Vec<(String, PathBuf)>) -> Result<(), String> {
    Err("failpoints exist in debug builds only".to_owned())
}

/// Fails with `EIO` if failpoint `name` is armed and its trigger file exists.
///
/// # Errors
///
/// The injected failure.
#[cfg(debug_assertions)]
pub fn check(name: &str) -> std::io::Result<()> {
    let Some(armed) = ARMED.get() else {
        return Ok(());
    };
    let triggered = (armed.iter()).any(|(n, trigger)| n == name && trigger.exists());
    if triggered {
        return Err(std::io::Error::other(format!(
            "failpoint {name}: injected I/O error (EIO)"
        )));
    }
    Ok(())
}

/// Never fails: failpoints exist in debug builds only.
///
/// # Errors
///
/// None.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn check(_name: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_malformed_failpoints_are_refused() {
        match arm("log-fsync") {
            Err(e) => assert!(e.contains("NAME=TRIGGER_FILE"), "{e}"),
            Ok(()) => panic!("an entry without a trigger was accepted"),
        }
        match arm("disk-melt=/tmp/x") {
            Err(e) => assert!(
                e.contains("unknown failpoint") && e.contains("log-fsync"),
                "{e}"
            ),
            Ok(()) => panic!("an unknown failpoint was accepted"),
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    fn a_failpoint_fails_only_while_its_trigger_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trigger = dir.path().join("fail");
        arm(&format!("log-fsync={}", trigger.display())).expect("arm");
        assert!(check("log-fsync").is_ok());
        std::fs::write(&trigger, b"").expect("trigger");
        match check("log-fsync") {
            Err(e) => assert!(e.to_string().contains("injected"), "{e}"),
            Ok(()) => panic!("the triggered failpoint passed"),
        }
        assert!(check("log-write").is_ok(), "only the named failpoint fails");
        std::fs::remove_file(&trigger).expect("heal");
        assert!(check("log-fsync").is_ok());
        match arm("log-write=/x") {
            Err(e) => assert!(e.contains("already"), "{e}"),
            Ok(()) => panic!("armed twice"),
        }
    }
}
