//! etcdctl's simple format (`printer_simple.go`).

use std::io::{self, Write};
use std::path::Path;

use etch_proto::{
    DeleteRangeResponse, KeyValue, MemberAddResponse, MemberListResponse, NodeId, PutResponse,
    RangeResponse, ResponseOp, TxnResponse,
};

use super::{EndpointHealth, EndpointStatus, Printer, hex_escaped, member_row, status_row};

/// etcdctl's `printKV`: the key on one line (unless value-only), the value on the next.
pub(super) fn kv(w: &mut dyn Write, p: &Printer, kv: &KeyValue) -> io::Result<()> {
    let show = |bytes: &[u8]| {
        if p.hex {
            hex_escaped(bytes)
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    if !p.value_only {
        writeln!(w, "{}", show(&kv.key))?;
    }
    writeln!(w, "{}", show(&kv.value))
}

pub(super) fn put(w: &mut dyn Write, p: &Printer, resp: &PutResponse) -> io::Result<()> {
    writeln!(w, "OK")?;
    if let Some(prev) = &resp.prev_kv {
        kv(w, p, prev)?;
    }
    Ok(())
}

pub(super) fn get(w: &mut dyn Write, p: &Printer, resp: &RangeResponse) -> io::Result<()> {
    resp.kvs.iter().try_for_each(|x| kv(w, p, x))
}

pub(super) fn del(w: &mut dyn Write, p: &Printer, resp: &DeleteRangeResponse) -> io::Result<()> {
    writeln!(w, "{}", resp.deleted)?;
    resp.prev_kvs.iter().try_for_each(|x| kv(w, p, x))
}

pub(super) fn txn(w: &mut dyn Write, p: &Printer, resp: &TxnResponse) -> io::Result<()> {
    writeln!(w, "{}", if resp.succeeded { "SUCCESS" } else { "FAILURE" })?;
    for r in &resp.responses {
        writeln!(w)?;
        match r {
            ResponseOp::Range(r) => get(w, p, r)?,
            ResponseOp::Put(r) => put(w, p, r)?,
            ResponseOp::DeleteRange(r) => del(w, p, r)?,
            ResponseOp::Txn(t) => txn(w, p, t)?,
        }
    }
    Ok(())
}

pub(super) fn status(w: &mut dyn Write, statuses: &[EndpointStatus]) -> io::Result<()> {
    for s in statuses {
        writeln!(w, "{}", status_row(s).join(", "))?;
    }
    Ok(())
}

pub(super) fn health(
    out: &mut dyn Write,
    err: &mut dyn Write,
    health: &[EndpointHealth],
) -> io::Result<()> {
    for h in health {
        if h.error.is_empty() {
            writeln!(
                out,
                "{} is healthy: successfully committed proposal: took = {}",
                h.endpoint, h.took
            )?;
        } else {
            writeln!(
                err,
                "{} is unhealthy: failed to commit proposal: {}",
                h.endpoint, h.error
            )?;
        }
    }
    Ok(())
}

pub(super) fn member_list(w: &mut dyn Write, resp: &MemberListResponse) -> io::Result<()> {
    for m in &resp.members {
        writeln!(w, "{}", member_row(m).join(", "))?;
    }
    Ok(())
}

/// etcdctl's `Member %16x added to cluster %16x`: Go's `%16x` pads with spaces, as Rust's
/// `{:16x}` does.
pub(super) fn member_added(w: &mut dyn Write, resp: &MemberAddResponse) -> io::Result<()> {
    let learner = if resp.member.is_learner {
        " as learner "
    } else {
        " "
    };
    writeln!(
        w,
        "Member {:16x} added{learner}to cluster {:16x}",
        resp.member.id, resp.header.cluster_id
    )
}

/// `Member <id> promoted in cluster <cluster>` and `... removed from ...`.
pub(super) fn member_changed(
    w: &mut dyn Write,
    id: NodeId,
    what: &str,
    resp: &MemberListResponse,
) -> io::Result<()> {
    writeln!(
        w,
        "Member {id:16x} {what} cluster {:16x}",
        resp.header.cluster_id
    )
}

/// Where etcdctl prints `ETCD_NAME=...`, `ETCD_INITIAL_CLUSTER=...` and
/// `ETCD_INITIAL_CLUSTER_STATE="existing"`: the `etchd` command line that starts the new
/// member, runnable as printed once its certificate exists. The initial cluster lists every
/// member as NAME=PEER_ADDR, the new one under `name`; it listens for peers at the address
/// added ([`listen_addrs`]), keeps its data in `etch-data-NAME`, and presents
/// `NAME.crt`/`NAME.key` from the directory of the CA etchctl was given (`etchctl certs init
/// --dir DIR --nodes NAME` makes them).
pub(super) fn join_command(
    w: &mut dyn Write,
    resp: &MemberAddResponse,
    name: &str,
    cacert: &Path,
) -> io::Result<()> {
    let cluster: Vec<String> = resp
        .members
        .iter()
        .map(|m| {
            let n = if m.id == resp.member.id {
                name
            } else {
                &m.name
            };
            format!("{n}={}", m.peer_addr)
        })
        .collect();
    let (listen_peer, listen_client) = listen_addrs(&resp.member.peer_addr);
    let dir = cacert.parent().unwrap_or(Path::new(""));
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    writeln!(w)?;
    writeln!(
        w,
        "etchd --name {} --data-dir {} --listen-peer {} --listen-client {} --initial-cluster {} \
         --initial-cluster-state existing --ca {} --cert {} --key {}",
        shell_word(name),
        shell_word(&format!("etch-data-{name}")),
        shell_word(&listen_peer),
        shell_word(&listen_client),
        shell_word(&cluster.join(",")),
        shell_word(&cacert.display().to_string()),
        shell_word(&file("crt")),
        shell_word(&file("key")),
    )
}

/// Where a member added with peer address `peer` listens: for peers at that address (a
/// host name is bound on every interface, at its port), for clients at the port below it,
/// as etch's defaults pair them (7379 and 7380; the gRPC front shares the client port).
fn listen_addrs(peer: &str) -> (String, String) {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(addr) => {
            let client = std::net::SocketAddr::new(addr.ip(), addr.port().saturating_sub(1));
            (addr.to_string(), client.to_string())
        }
        Err(_) => {
            let port = (peer.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(7380);
            (
                format!("0.0.0.0:{port}"),
                format!("0.0.0.0:{}", port.saturating_sub(1)),
            )
        }
    }
}

/// `s` as one shell word: as it is when it holds nothing a shell would interpret (IPv6
/// brackets are glob characters), else in single quotes.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:=/@%+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use etch_proto::{ResponseHeader, StatusResponse};

    use super::super::Format;
    use super::*;

    pub(crate) fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn printed(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    const SIMPLE: Printer = Printer {
        format: Format::Simple,
        hex: false,
        value_only: false,
    };

    #[test]
    fn get_put_del_like_etcdctl() {
        let range = RangeResponse {
            kvs: vec![kv("foo", "bar", 2), kv("foo2", "baz", 3)],
            count: 2,
            ..Default::default()
        };
        assert_eq!(
            printed(|w| SIMPLE.get(w, &range, false)),
            "foo\nbar\nfoo2\nbaz\n"
        );
        let value_only = Printer {
            value_only: true,
            ..SIMPLE
        };
        assert_eq!(printed(|w| value_only.get(w, &range, false)), "bar\nbaz\n");
        let hex = Printer {
            hex: true,
            ..SIMPLE
        };
        assert_eq!(
            printed(|w| hex.get(w, &range, false)),
            "\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n\\x66\\x6f\\x6f\\x32\n\\x62\\x61\\x7a\n"
        );
        assert_eq!(printed(|w| SIMPLE.get(w, &range, true)), "2\n");
        let put = PutResponse {
            prev_kv: Some(kv("foo", "old", 1)),
            ..Default::default()
        };
        assert_eq!(printed(|w| SIMPLE.put(w, &put)), "OK\nfoo\nold\n");
        let del = DeleteRangeResponse {
            deleted: 1,
            prev_kvs: vec![kv("foo", "bar", 2)],
            ..Default::default()
        };
        assert_eq!(printed(|w| SIMPLE.del(w, &del)), "1\nfoo\nbar\n");
    }

    #[test]
    fn txn_prints_outcome_then_each_response() {
        let resp = TxnResponse {
            succeeded: false,
            responses: vec![
                ResponseOp::Put(PutResponse::default()),
                ResponseOp::Range(RangeResponse {
                    kvs: vec![kv("k", "v", 4)],
                    count: 1,
                    ..Default::default()
                }),
                ResponseOp::DeleteRange(DeleteRangeResponse {
                    deleted: 0,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        assert_eq!(
            printed(|w| SIMPLE.txn(w, &resp)),
            "FAILURE\n\nOK\n\nk\nv\n\n0\n"
        );
    }

    #[test]
    fn status_and_health_lines() {
        let status = EndpointStatus {
            endpoint: "127.0.0.1:7379".into(),
            status: StatusResponse {
                header: ResponseHeader {
                    member_id: 0x8e9e05c52164694d,
                    ..Default::default()
                },
                version: "0.1.0".into(),
                db_size: 20_480,
                leader: Some(0x8e9e05c52164694d),
                raft_term: 2,
                raft_index: 4,
                raft_applied_index: 4,
                ..Default::default()
            },
        };
        assert_eq!(
            printed(|w| SIMPLE.status(w, &[status])),
            "127.0.0.1:7379, 8e9e05c52164694d, 0.1.0, 20 kB, true, false, 2, 4, 4, \n"
        );
        let health = [
            EndpointHealth {
                endpoint: "a:1".into(),
                healthy: true,
                took: "1.5ms".into(),
                error: String::new(),
            },
            EndpointHealth {
                endpoint: "b:2".into(),
                healthy: false,
                took: "2s".into(),
                error: "context deadline exceeded".into(),
            },
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        SIMPLE.health(&mut out, &mut err, &health).expect("print");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a:1 is healthy: successfully committed proposal: took = 1.5ms\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&err),
            "b:2 is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
    }
}
