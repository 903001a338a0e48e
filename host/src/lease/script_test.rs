//! Golden-script tests of leases; the runner and its commands are in
//! `crate::watch::script_test` (lease scripts watch the deletes too).

crate::watch::script_test::scripts!("lease": grant_revoke, attach, expiry, leader_change, snapshot);
