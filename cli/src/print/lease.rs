//! `lease` output, as etcdctl's printers write it.
//!
//! Simple: `lease %016x granted with TTL(%ds)`, `... revoked`, `... keepalived with
//! TTL(%d)`, `... granted with TTL(%ds), remaining(%ds)[, attached keys([k1 k2])]` or
//! `... already expired`, and `found N leases` then one id per line. JSON: Go's encoding of
//! the `clientv3` lease responses, which embed `*pb.ResponseHeader` (so its fields sit at
//! the top level) and carry untagged `ID`/`TTL` fields or tagged `id`/`ttl` ones, as each
//! struct does.

use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use etch_proto::LeaseId;
use etch_proto::lease::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
};
use serde::Serialize;

use super::json::{Header, print};

pub(super) fn grant(w: &mut dyn Write, resp: &LeaseGrantResponse) -> io::Result<()> {
    writeln!(w, "lease {:016x} granted with TTL({}s)", resp.id, resp.ttl)
}

pub(super) fn revoke(w: &mut dyn Write, id: LeaseId) -> io::Result<()> {
    writeln!(w, "lease {id:016x} revoked")
}

pub(super) fn keep_alive(w: &mut dyn Write, resp: &LeaseKeepAliveResponse) -> io::Result<()> {
    writeln!(
        w,
        "lease {:016x} keepalived with TTL({})",
        resp.id, resp.ttl
    )
}

/// `keys`: the keys were asked for (`--keys`).
pub(super) fn time_to_live(
    w: &mut dyn Write,
    resp: &LeaseTimeToLiveResponse,
    keys: bool,
) -> io::Result<()> {
    if resp.granted_ttl == 0 && resp.ttl == -1 {
        return writeln!(w, "lease {:016x} already expired", resp.id);
    }
    write!(
        w,
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        resp.id, resp.granted_ttl, resp.ttl
    )?;
    if keys {
        let keys: Vec<String> = resp
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        write!(w, ", attached keys([{}])", keys.join(" "))?;
    }
    writeln!(w)
}

pub(super) fn leases(w: &mut dyn Write, resp: &LeaseLeasesResponse) -> io::Result<()> {
    writeln!(w, "found {} leases", resp.leases.len())?;
    for id in &resp.leases {
        writeln!(w, "{id:016x}")?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Grant {
    #[serde(flatten)]
    header: Header,
    #[serde(rename = "ID")]
    id: LeaseId,
    #[serde(rename = "TTL")]
    ttl: i64,
    #[serde(rename = "Error")]
    error: String,
}

#[derive(Serialize)]
struct KeepAlive {
    #[serde(flatten)]
    header: Header,
    #[serde(rename = "ID")]
    id: LeaseId,
    #[serde(rename = "TTL")]
    ttl: i64,
}

#[derive(Serialize)]
struct Revoke {
    header: Header,
}

#[derive(Serialize)]
struct TimeToLive {
    #[serde(flatten)]
    header: Header,
    id: LeaseId,
    ttl: i64,
    #[serde(rename = "granted-ttl")]
    granted_ttl: i64,
    keys: Option<Vec<String>>,
}

#[derive(Serialize)]
struct Leases {
    #[serde(flatten)]
    header: Header,
    leases: Vec<LeaseStatus>,
}

#[derive(Serialize)]
struct LeaseStatus {
    id: LeaseId,
}

pub(super) fn grant_json(w: &mut dyn Write, resp: &LeaseGrantResponse) -> io::Result<()> {
    let grant = Grant {
        header: (&resp.header).into(),
        id: resp.id,
        ttl: resp.ttl,
        error: String::new(),
    };
    print(w, &grant)
}

pub(super) fn revoke_json(w: &mut dyn Write, resp: &LeaseRevokeResponse) -> io::Result<()> {
    print(
        w,
        &Revoke {
            header: (&resp.header).into(),
        },
    )
}

pub(super) fn keep_alive_json(w: &mut dyn Write, resp: &LeaseKeepAliveResponse) -> io::Result<()> {
    let ka = KeepAlive {
        header: (&resp.header).into(),
        id: resp.id,
        ttl: resp.ttl,
    };
    print(w, &ka)
}

pub(super) fn time_to_live_json(
    w: &mut dyn Write,
    resp: &LeaseTimeToLiveResponse,
) -> io::Result<()> {
    let keys =
        (!resp.keys.is_empty()).then(|| resp.keys.iter().map(|k| STANDARD.encode(k)).collect());
    let ttl = TimeToLive {
        header: (&resp.header).into(),
        id: resp.id,
        ttl: resp.ttl,
        granted_ttl: resp.granted_ttl,
        keys,
    };
    print(w, &ttl)
}

/// etcd's server answers `LeaseLeases` with a slice made for its leases, never a nil one:
/// etcdctl prints `"leases":[]` for none, not `null`.
pub(super) fn leases_json(w: &mut dyn Write, resp: &LeaseLeasesResponse) -> io::Result<()> {
    let leases = resp.leases.iter().map(|&id| LeaseStatus { id }).collect();
    let list = Leases {
        header: (&resp.header).into(),
        leases,
    };
    print(w, &list)
}

#[cfg(test)]
mod tests {
    use etch_proto::ResponseHeader;
    use serde_bytes::ByteBuf;

    use super::super::{Format, Printer};
    use super::*;

    const ID: LeaseId = 0x694d77aa9e38260f;

    fn printed(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    fn header() -> ResponseHeader {
        ResponseHeader {
            revision: 5,
            raft_term: 2,
            ..Default::default()
        }
    }

    const SIMPLE: Printer = Printer {
        format: Format::Simple,
        hex: false,
        value_only: false,
    };
    const JSON: Printer = Printer {
        format: Format::Json,
        hex: false,
        value_only: false,
    };

    fn ttl(ttl: i64, granted: i64, keys: &[&str]) -> LeaseTimeToLiveResponse {
        LeaseTimeToLiveResponse {
            header: header(),
            id: ID,
            ttl,
            granted_ttl: granted,
            keys: keys.iter().map(|k| ByteBuf::from(k.as_bytes())).collect(),
        }
    }

    #[test]
    fn simple_lines_match_etcdctl() {
        let grant = LeaseGrantResponse {
            header: header(),
            id: ID,
            ttl: 60,
        };
        assert_eq!(
            printed(|w| SIMPLE.lease_grant(w, &grant)),
            "lease 694d77aa9e38260f granted with TTL(60s)\n"
        );
        let revoke = LeaseRevokeResponse { header: header() };
        assert_eq!(
            printed(|w| SIMPLE.lease_revoke(w, ID, &revoke)),
            "lease 694d77aa9e38260f revoked\n"
        );
        let ka = LeaseKeepAliveResponse {
            header: header(),
            id: ID,
            ttl: 60,
        };
        assert_eq!(
            printed(|w| SIMPLE.lease_keep_alive(w, &ka)),
            "lease 694d77aa9e38260f keepalived with TTL(60)\n"
        );
        assert_eq!(
            printed(|w| SIMPLE.lease_time_to_live(w, &ttl(56, 60, &[]), false)),
            "lease 694d77aa9e38260f granted with TTL(60s), remaining(56s)\n"
        );
        assert_eq!(
            printed(|w| SIMPLE.lease_time_to_live(w, &ttl(56, 60, &["k1", "k2"]), true)),
            "lease 694d77aa9e38260f granted with TTL(60s), remaining(56s), attached keys([k1 k2])\n"
        );
        assert_eq!(
            printed(|w| SIMPLE.lease_time_to_live(w, &ttl(-1, 0, &[]), true)),
            "lease 694d77aa9e38260f already expired\n"
        );
        let list = LeaseLeasesResponse {
            header: header(),
            leases: vec![ID, 0x1f],
        };
        assert_eq!(
            printed(|w| SIMPLE.lease_leases(w, &list)),
            "found 2 leases\n694d77aa9e38260f\n000000000000001f\n"
        );
    }

    #[test]
    fn json_follows_the_clientv3_structs() {
        let grant = LeaseGrantResponse {
            header: header(),
            id: ID,
            ttl: 60,
        };
        assert_eq!(
            printed(|w| JSON.lease_grant(w, &grant)),
            "{\"revision\":5,\"raft_term\":2,\"ID\":7587852521871779343,\"TTL\":60,\"Error\":\"\"}\n"
        );
        let revoke = LeaseRevokeResponse { header: header() };
        assert_eq!(
            printed(|w| JSON.lease_revoke(w, ID, &revoke)),
            "{\"header\":{\"revision\":5,\"raft_term\":2}}\n"
        );
        assert_eq!(
            printed(|w| JSON.lease_time_to_live(w, &ttl(56, 60, &["k1"]), true)),
            concat!(
                r#"{"revision":5,"raft_term":2,"id":7587852521871779343,"ttl":56,"#,
                r#""granted-ttl":60,"keys":["azE="]}"#,
                "\n"
            )
        );
        let list = LeaseLeasesResponse {
            header: header(),
            leases: vec![31],
        };
        assert_eq!(
            printed(|w| JSON.lease_leases(w, &list)),
            "{\"revision\":5,\"raft_term\":2,\"leases\":[{\"id\":31}]}\n"
        );
        let none = LeaseLeasesResponse {
            header: header(),
            leases: vec![],
        };
        assert_eq!(
            printed(|w| JSON.lease_leases(w, &none)),
            "{\"revision\":5,\"raft_term\":2,\"leases\":[]}\n",
            "etcdctl prints [] for no leases"
        );
    }
}
