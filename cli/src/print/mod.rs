//! Output, in etcdctl's three formats (`-w simple|json|table`).
//!
//! `simple` mirrors etcdctl's `printer_simple.go` (key and value on their own lines, `OK`
//! after a put, the count after a delete, `SUCCESS`/`FAILURE` then each response after a
//! txn); `json` mirrors `printer_json.go` (the response as Go's encoding/json writes etcd's
//! protobuf structs: base64 bytes, zero fields omitted); `table` mirrors `printer_table.go`
//! for endpoint status and health and member list. etcdctl has no table for get and falls
//! back to simple; we print one (key, value, revisions, lease). Put, del, txn and the member
//! changes fall back to simple in table mode, as in etcdctl.
//!
//! Members: etcd knows a member's name only once it has started, so etcdctl shows a member
//! without a name as `unstarted`. etch knows the name from `member add` on, so a member
//! counts as unstarted while its client address is empty, and its name is then left out in
//! every format, as etcdctl would show it.
//!
//! Watch and lease output live in `watch.rs` and `lease.rs` (both formats each); table
//! mode falls back to simple for them, as in etcdctl.
//!
//! Every printer writes to a `&mut dyn Write` so that tests can read what it printed.

mod auth;
mod json;
mod lease;
mod simple;
pub mod table;
mod watch;

#[cfg(test)]
mod member_test;

use std::io::{self, Write};

pub use auth::Shown;

use etch_proto::lease::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
};
use etch_proto::watch::WatchResponse;
use etch_proto::{
    DeleteRangeResponse, HashKvResponse, LeaseId, Member, MemberAddResponse, MemberListResponse,
    NodeId, PutResponse, RangeResponse, StatusResponse, TxnResponse,
};

/// The `-w/--write-out` choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines, as etcdctl prints by default.
    #[default]
    Simple,
    /// etcd's JSON shapes (keys and values base64).
    Json,
    /// ASCII tables (get, endpoint status, endpoint health, member list).
    Table,
}

/// One endpoint's status, as `endpoint status` prints it.
#[derive(Clone, Debug)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: StatusResponse,
}

/// One endpoint's history hash, as `endpoint hashkv` prints it.
#[derive(Clone, Debug)]
pub struct EndpointHash {
    pub endpoint: String,
    pub hash: HashKvResponse,
}

/// One endpoint's health, as `endpoint health` prints it.
#[derive(Clone, Debug)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub healthy: bool,
    /// Go-formatted duration of the health read.
    pub took: String,
    /// Empty when healthy.
    pub error: String,
}

/// Prints responses in one format.
#[derive(Clone, Copy, Debug, Default)]
pub struct Printer {
    pub format: Format,
    /// `--hex`: print keys and values as `\x..` escaped hex.
    pub hex: bool,
    /// `--print-value-only` (get): values without keys.
    pub value_only: bool,
}

/// What `member promote|remove|update` did, as etcdctl words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Promoted,
    Removed,
    Updated,
}

impl MemberChange {
    fn words(self) -> &'static str {
        match self {
            MemberChange::Promoted => "promoted in",
            MemberChange::Removed => "removed from",
            MemberChange::Updated => "updated in",
        }
    }
}

impl Printer {
    /// An `auth`, `user` or `role` command's answer; table mode falls back to simple.
    pub fn auth(
        &self,
        w: &mut dyn Write,
        shown: &Shown<'_>,
        resp: &etch_proto::auth::AuthResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => auth::json(w, shown, resp),
            Format::Simple | Format::Table => auth::simple(w, shown, resp),
        }
    }

    pub fn put(&self, w: &mut dyn Write, resp: &PutResponse) -> io::Result<()> {
        match self.format {
            Format::Json => json::put(w, resp),
            Format::Simple | Format::Table => simple::put(w, self, resp),
        }
    }

    /// `count_only`: the request asked for the count alone (simple prints it).
    pub fn get(&self, w: &mut dyn Write, resp: &RangeResponse, count_only: bool) -> io::Result<()> {
        match self.format {
            Format::Json => json::get(w, resp),
            Format::Simple if count_only => writeln!(w, "{}", resp.count),
            Format::Simple => simple::get(w, self, resp),
            Format::Table => table::get(w, self, resp),
        }
    }

    pub fn del(&self, w: &mut dyn Write, resp: &DeleteRangeResponse) -> io::Result<()> {
        match self.format {
            Format::Json => json::del(w, resp),
            Format::Simple | Format::Table => simple::del(w, self, resp),
        }
    }

    pub fn txn(&self, w: &mut dyn Write, resp: &TxnResponse) -> io::Result<()> {
        match self.format {
            Format::Json => json::txn(w, resp),
            Format::Simple | Format::Table => simple::txn(w, self, resp),
        }
    }

    pub fn status(&self, w: &mut dyn Write, statuses: &[EndpointStatus]) -> io::Result<()> {
        match self.format {
            Format::Json => json::status(w, statuses),
            Format::Simple => simple::status(w, statuses),
            Format::Table => table::status(w, statuses),
        }
    }

    /// etcdctl prints `ENDPOINT, HASH`; etch adds the revision the hash covers (simple and
    /// table), since hashes only compare at one revision.
    pub fn hash_kv(&self, w: &mut dyn Write, hashes: &[EndpointHash]) -> io::Result<()> {
        match self.format {
            Format::Json => json::hash_kv(w, hashes),
            Format::Simple => {
                for h in hashes {
                    writeln!(w, "{}", hash_row(h).join(", "))?;
                }
                Ok(())
            }
            Format::Table => table::hash_kv(w, hashes),
        }
    }

    pub fn member_list(&self, w: &mut dyn Write, resp: &MemberListResponse) -> io::Result<()> {
        match self.format {
            Format::Json => json::member_list(w, resp),
            Format::Simple => simple::member_list(w, resp),
            Format::Table => table::member_list(w, resp),
        }
    }

    /// `name` is the name given to `member add`. Simple mode follows the result with the
    /// `etchd` command line that starts the new member; table mode, like etcdctl's, does not.
    pub fn member_add(
        &self,
        w: &mut dyn Write,
        resp: &MemberAddResponse,
        name: &str,
        cacert: &std::path::Path,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => json::member_add(w, resp),
            Format::Simple => {
                simple::member_added(w, resp)?;
                simple::join_command(w, resp, name, cacert)
            }
            Format::Table => simple::member_added(w, resp),
        }
    }

    /// A member promoted, removed or updated: `id` as given on the command line, and the
    /// members after the change.
    pub fn member_changed(
        &self,
        w: &mut dyn Write,
        id: NodeId,
        change: MemberChange,
        resp: &MemberListResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => json::member_list(w, resp),
            Format::Simple | Format::Table => simple::member_changed(w, id, change.words(), resp),
        }
    }

    /// One watch response, as it arrives.
    pub fn watch(&self, w: &mut dyn Write, resp: &WatchResponse) -> io::Result<()> {
        watch::progress(w, resp)?;
        match self.format {
            Format::Json => watch::json(w, resp),
            Format::Simple | Format::Table => watch::simple(w, self, resp),
        }
    }

    pub fn lease_grant(&self, w: &mut dyn Write, resp: &LeaseGrantResponse) -> io::Result<()> {
        match self.format {
            Format::Json => lease::grant_json(w, resp),
            Format::Simple | Format::Table => lease::grant(w, resp),
        }
    }

    /// `id` is the lease revoked, as given on the command line.
    pub fn lease_revoke(
        &self,
        w: &mut dyn Write,
        id: LeaseId,
        resp: &LeaseRevokeResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => lease::revoke_json(w, resp),
            Format::Simple | Format::Table => lease::revoke(w, id),
        }
    }

    pub fn lease_keep_alive(
        &self,
        w: &mut dyn Write,
        resp: &LeaseKeepAliveResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => lease::keep_alive_json(w, resp),
            Format::Simple | Format::Table => lease::keep_alive(w, resp),
        }
    }

    /// `keys`: `--keys` was given.
    pub fn lease_time_to_live(
        &self,
        w: &mut dyn Write,
        resp: &LeaseTimeToLiveResponse,
        keys: bool,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => lease::time_to_live_json(w, resp),
            Format::Simple | Format::Table => lease::time_to_live(w, resp, keys),
        }
    }

    pub fn lease_leases(&self, w: &mut dyn Write, resp: &LeaseLeasesResponse) -> io::Result<()> {
        match self.format {
            Format::Json => lease::leases_json(w, resp),
            Format::Simple | Format::Table => lease::leases(w, resp),
        }
    }

    /// Simple mode prints the unhealthy endpoints to `err`, as etcdctl does.
    pub fn health(
        &self,
        out: &mut dyn Write,
        err: &mut dyn Write,
        health: &[EndpointHealth],
    ) -> io::Result<()> {
        match self.format {
            Format::Json => json::health(out, health),
            Format::Simple => simple::health(out, err, health),
            Format::Table => table::health(out, health),
        }
    }
}

/// The row printed for one endpoint's hash.
pub(crate) fn hash_row(h: &EndpointHash) -> Vec<String> {
    vec![
        h.endpoint.clone(),
        h.hash.hash.to_string(),
        h.hash.hash_revision.to_string(),
    ]
}

pub(crate) const HASH_HEADER: [&str; 3] = ["endpoint", "hash", "hash revision"];

/// The row etcdctl prints for one endpoint's status (`makeEndpointStatusTable`).
pub(crate) fn status_row(s: &EndpointStatus) -> Vec<String> {
    let r = &s.status;
    vec![
        s.endpoint.clone(),
        format!("{:x}", r.header.member_id),
        r.version.clone(),
        human_bytes(r.db_size),
        (r.leader == Some(r.header.member_id)).to_string(),
        r.is_learner.to_string(),
        r.raft_term.to_string(),
        r.raft_index.to_string(),
        r.raft_applied_index.to_string(),
        r.errors.join(", "),
    ]
}

pub(crate) const STATUS_HEADER: [&str; 10] = [
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
];

/// Whether the member has been heard from: etch fills in the client address then.
pub(crate) fn is_started(m: &Member) -> bool {
    !m.client_addr.is_empty()
}

/// The name etcdctl would show: none until the member has started.
pub(crate) fn shown_name(m: &Member) -> &str {
    if is_started(m) { &m.name } else { "" }
}

/// The row etcdctl prints for one member (`makeMemberListTable`).
pub(crate) fn member_row(m: &Member) -> Vec<String> {
    vec![
        format!("{:x}", m.id),
        if is_started(m) {
            "started"
        } else {
            "unstarted"
        }
        .to_owned(),
        shown_name(m).to_owned(),
        m.peer_addr.clone(),
        m.client_addr.clone(),
        m.is_learner.to_string(),
    ]
}

pub(crate) const MEMBER_HEADER: [&str; 6] = [
    "ID",
    "Status",
    "Name",
    "Peer Addrs",
    "Client Addrs",
    "Is Learner",
];

/// Bytes in SI units, as go-humanize's `Bytes` writes them: `9 B`, `20 kB`, `1.5 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let n = n as f64;
    let e = (n.log10() / 3.0).floor().min(6.0);
    let val = (n / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    let unit = UNITS[e as usize];
    if val < 10.0 {
        format!("{val:.1} {unit}")
    } else {
        format!("{val:.0} {unit}")
    }
}

/// Bytes as etcdctl's `--hex` prints them: `\x` before every two hex digits.
pub fn hex_escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_matches_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(82), "82 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(25_000_000_000), "25 GB");
    }

    #[test]
    fn hex_escapes_every_byte() {
        assert_eq!(hex_escaped(b"a\x00"), "\\x61\\x00");
    }
}
