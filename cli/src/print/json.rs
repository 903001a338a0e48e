//! etcdctl's JSON format: what Go's `encoding/json` makes of etcd's protobuf structs.
//!
//! Field names and order follow the `json:"..."` tags of `etcdserverpb`/`mvccpb`; every
//! field is `omitempty` there, so zero values are left out; bytes are base64 (std alphabet,
//! padded); 64-bit integers are plain numbers.

use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use etch_proto::{
    DeleteRangeResponse, KeyValue, Member, MemberAddResponse, MemberListResponse, PutResponse,
    RangeResponse, ResponseHeader, ResponseOp, TxnResponse,
};
use serde::Serialize;

use super::{EndpointHash, EndpointHealth, EndpointStatus, shown_name};

pub(super) fn zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Serialize)]
pub(super) struct Header {
    #[serde(skip_serializing_if = "zero")]
    cluster_id: u64,
    #[serde(skip_serializing_if = "zero")]
    member_id: u64,
    #[serde(skip_serializing_if = "zero")]
    revision: i64,
    #[serde(skip_serializing_if = "zero")]
    raft_term: u64,
}

impl From<&ResponseHeader> for Header {
    fn from(h: &ResponseHeader) -> Self {
        Header {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Kv {
    #[serde(skip_serializing_if = "zero")]
    key: String,
    #[serde(skip_serializing_if = "zero")]
    create_revision: i64,
    #[serde(skip_serializing_if = "zero")]
    mod_revision: i64,
    #[serde(skip_serializing_if = "zero")]
    version: i64,
    #[serde(skip_serializing_if = "zero")]
    value: String,
    #[serde(skip_serializing_if = "zero")]
    lease: i64,
}

impl From<&KeyValue> for Kv {
    fn from(kv: &KeyValue) -> Self {
        Kv {
            key: STANDARD.encode(&kv.key),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: STANDARD.encode(&kv.value),
            lease: kv.lease,
        }
    }
}

fn kvs(kvs: &[KeyValue]) -> Vec<Kv> {
    kvs.iter().map(Kv::from).collect()
}

#[derive(Serialize)]
struct Range {
    header: Header,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kvs: Vec<Kv>,
    #[serde(skip_serializing_if = "zero")]
    more: bool,
    #[serde(skip_serializing_if = "zero")]
    count: i64,
}

impl From<&RangeResponse> for Range {
    fn from(r: &RangeResponse) -> Self {
        Range {
            header: (&r.header).into(),
            kvs: kvs(&r.kvs),
            more: r.more,
            count: r.count,
        }
    }
}

#[derive(Serialize)]
struct Put {
    header: Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<Kv>,
}

impl From<&PutResponse> for Put {
    fn from(r: &PutResponse) -> Self {
        Put {
            header: (&r.header).into(),
            prev_kv: r.prev_kv.as_ref().map(Kv::from),
        }
    }
}

#[derive(Serialize)]
struct Delete {
    header: Header,
    #[serde(skip_serializing_if = "zero")]
    deleted: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<Kv>,
}

impl From<&DeleteRangeResponse> for Delete {
    fn from(r: &DeleteRangeResponse) -> Self {
        Delete {
            header: (&r.header).into(),
            deleted: r.deleted,
            prev_kvs: kvs(&r.prev_kvs),
        }
    }
}

/// Go marshals the `oneof` as a field named after the Go field (`Response`) holding the
/// wrapper struct, whose one field is named after its Go field too (`ResponsePut`), as
/// etcdctl 3.4 prints it.
#[derive(Serialize)]
struct Op {
    #[serde(rename = "Response")]
    response: OneOf,
}

#[derive(Serialize)]
enum OneOf {
    #[serde(rename = "ResponseRange")]
    Range(Range),
    #[serde(rename = "ResponsePut")]
    Put(Put),
    #[serde(rename = "ResponseDeleteRange")]
    Delete(Delete),
    #[serde(rename = "ResponseTxn")]
    Txn(Box<Txn>),
}

#[derive(Serialize)]
struct Txn {
    header: Header,
    #[serde(skip_serializing_if = "zero")]
    succeeded: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    responses: Vec<Op>,
}

/// `epStatus`: `{"Endpoint": ..., "Status": StatusResponse}`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    endpoint: String,
    status: StatusBody,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    header: Header,
    #[serde(skip_serializing_if = "zero")]
    version: String,
    #[serde(skip_serializing_if = "zero")]
    db_size: u64,
    #[serde(skip_serializing_if = "zero")]
    leader: u64,
    #[serde(skip_serializing_if = "zero")]
    raft_index: u64,
    #[serde(skip_serializing_if = "zero")]
    raft_term: u64,
    #[serde(skip_serializing_if = "zero")]
    raft_applied_index: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    #[serde(skip_serializing_if = "zero")]
    is_learner: bool,
}

/// `epHashKV`: `{"Endpoint": ..., "HashKV": HashKVResponse}`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Hash {
    endpoint: String,
    #[serde(rename = "HashKV")]
    hash_kv: HashBody,
}

#[derive(Serialize)]
struct HashBody {
    header: Header,
    #[serde(skip_serializing_if = "zero")]
    hash: u32,
    #[serde(skip_serializing_if = "zero")]
    compact_revision: i64,
    #[serde(skip_serializing_if = "zero")]
    hash_revision: i64,
}

/// `epHealth`.
#[derive(Serialize)]
struct Health<'a> {
    endpoint: &'a str,
    health: bool,
    took: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

/// `etcdserverpb.Member`. etch has one peer and one client address per member: each list
/// holds it, or nothing while it is empty.
#[derive(Serialize)]
struct MemberJson {
    #[serde(rename = "ID", skip_serializing_if = "zero")]
    id: u64,
    #[serde(skip_serializing_if = "zero")]
    name: String,
    #[serde(rename = "peerURLs", skip_serializing_if = "Vec::is_empty")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", skip_serializing_if = "Vec::is_empty")]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", skip_serializing_if = "zero")]
    is_learner: bool,
}

impl From<&Member> for MemberJson {
    fn from(m: &Member) -> Self {
        let urls = |addr: &str| {
            Some(addr)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .into_iter()
                .collect()
        };
        MemberJson {
            id: m.id,
            name: shown_name(m).to_owned(),
            peer_urls: urls(&m.peer_addr),
            client_urls: urls(&m.client_addr),
            is_learner: m.is_learner,
        }
    }
}

/// `MemberListResponse`, and the promote and remove responses, which have the same fields.
#[derive(Serialize)]
struct MemberList {
    header: Header,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberJson>,
}

#[derive(Serialize)]
struct MemberAdd {
    header: Header,
    member: MemberJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberJson>,
}

/// etcdctl's `printJSON`: compact JSON on one line.
pub(super) fn print(w: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    writeln!(w)
}

pub(super) fn get(w: &mut dyn Write, resp: &RangeResponse) -> io::Result<()> {
    print(w, &Range::from(resp))
}

pub(super) fn put(w: &mut dyn Write, resp: &PutResponse) -> io::Result<()> {
    print(w, &Put::from(resp))
}

pub(super) fn del(w: &mut dyn Write, resp: &DeleteRangeResponse) -> io::Result<()> {
    print(w, &Delete::from(resp))
}

pub(super) fn txn(w: &mut dyn Write, resp: &TxnResponse) -> io::Result<()> {
    print(w, &Txn::from(resp))
}

impl From<&TxnResponse> for Txn {
    fn from(resp: &TxnResponse) -> Self {
        let responses = resp
            .responses
            .iter()
            .map(|r| Op {
                response: match r {
                    ResponseOp::Range(r) => OneOf::Range(r.into()),
                    ResponseOp::Put(r) => OneOf::Put(r.into()),
                    ResponseOp::DeleteRange(r) => OneOf::Delete(r.into()),
                    ResponseOp::Txn(t) => OneOf::Txn(Box::new(t.into())),
                },
            })
            .collect();
        Txn {
            header: (&resp.header).into(),
            succeeded: resp.succeeded,
            responses,
        }
    }
}

pub(super) fn status(w: &mut dyn Write, statuses: &[EndpointStatus]) -> io::Result<()> {
    let list: Vec<Status> = statuses
        .iter()
        .map(|s| {
            let r = &s.status;
            Status {
                endpoint: s.endpoint.clone(),
                status: StatusBody {
                    header: (&r.header).into(),
                    version: r.version.clone(),
                    db_size: r.db_size,
                    leader: r.leader.unwrap_or(0),
                    raft_index: r.raft_index,
                    raft_term: r.raft_term,
                    raft_applied_index: r.raft_applied_index,
                    errors: r.errors.clone(),
                    is_learner: r.is_learner,
                },
            }
        })
        .collect();
    print(w, &list)
}

pub(super) fn hash_kv(w: &mut dyn Write, hashes: &[EndpointHash]) -> io::Result<()> {
    let list: Vec<Hash> = hashes
        .iter()
        .map(|h| Hash {
            endpoint: h.endpoint.clone(),
            hash_kv: HashBody {
                header: (&h.hash.header).into(),
                hash: h.hash.hash,
                compact_revision: h.hash.compact_revision,
                hash_revision: h.hash.hash_revision,
            },
        })
        .collect();
    print(w, &list)
}

pub(super) fn member_list(w: &mut dyn Write, resp: &MemberListResponse) -> io::Result<()> {
    let list = MemberList {
        header: (&resp.header).into(),
        members: resp.members.iter().map(MemberJson::from).collect(),
    };
    print(w, &list)
}

pub(super) fn member_add(w: &mut dyn Write, resp: &MemberAddResponse) -> io::Result<()> {
    let add = MemberAdd {
        header: (&resp.header).into(),
        member: (&resp.member).into(),
        members: resp.members.iter().map(MemberJson::from).collect(),
    };
    print(w, &add)
}

pub(super) fn health(w: &mut dyn Write, health: &[EndpointHealth]) -> io::Result<()> {
    let list: Vec<Health<'_>> = health
        .iter()
        .map(|h| Health {
            endpoint: &h.endpoint,
            health: h.healthy,
            took: &h.took,
            error: &h.error,
        })
        .collect();
    print(w, &list)
}

#[cfg(test)]
mod tests {
    use etch_proto::StatusResponse;

    use super::*;

    fn printed(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    fn header() -> ResponseHeader {
        ResponseHeader {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            revision: 2,
            raft_term: 2,
            leader_hint: None,
        }
    }

    #[test]
    fn get_matches_etcds_shape() {
        let resp = RangeResponse {
            header: header(),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            printed(|w| get(w, &resp)),
            concat!(
                r#"{"header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"revision":2,"raft_term":2},"#,
                r#""kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1}"#,
                "\n"
            )
        );
        let empty = RangeResponse::default();
        assert_eq!(printed(|w| get(w, &empty)), "{\"header\":{}}\n");
    }

    #[test]
    fn put_del_txn_shapes() {
        let put_resp = PutResponse {
            header: ResponseHeader {
                revision: 3,
                ..Default::default()
            },
            prev_kv: None,
        };
        assert_eq!(
            printed(|w| put(w, &put_resp)),
            "{\"header\":{\"revision\":3}}\n"
        );
        let del_resp = DeleteRangeResponse {
            header: header(),
            deleted: 1,
            prev_kvs: vec![],
        };
        assert!(printed(|w| del(w, &del_resp)).ends_with(",\"deleted\":1}\n"));
        let txn_resp = TxnResponse {
            header: ResponseHeader {
                revision: 3,
                ..Default::default()
            },
            succeeded: true,
            responses: vec![ResponseOp::Put(put_resp)],
        };
        assert_eq!(
            printed(|w| txn(w, &txn_resp)),
            concat!(
                r#"{"header":{"revision":3},"succeeded":true,"#,
                r#""responses":[{"Response":{"ResponsePut":{"header":{"revision":3}}}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn status_and_health_shapes() {
        let s = EndpointStatus {
            endpoint: "127.0.0.1:7379".into(),
            status: StatusResponse {
                header: ResponseHeader {
                    member_id: 1,
                    revision: 5,
                    ..Default::default()
                },
                version: "0.1.0".into(),
                db_size: 4096,
                leader: Some(1),
                raft_term: 2,
                raft_index: 9,
                raft_applied_index: 9,
                ..Default::default()
            },
        };
        assert_eq!(
            printed(|w| status(w, &[s])),
            concat!(
                r#"[{"Endpoint":"127.0.0.1:7379","Status":{"header":{"member_id":1,"revision":5},"#,
                r#""version":"0.1.0","dbSize":4096,"leader":1,"raftIndex":9,"raftTerm":2,"raftAppliedIndex":9}}]"#,
                "\n"
            )
        );
        let h = EndpointHealth {
            endpoint: "a:1".into(),
            healthy: true,
            took: "1ms".into(),
            error: String::new(),
        };
        assert_eq!(
            printed(|w| health(w, &[h])),
            "[{\"endpoint\":\"a:1\",\"health\":true,\"took\":\"1ms\"}]\n"
        );
    }

    #[test]
    fn hash_kv_shape() {
        let h = EndpointHash {
            endpoint: "127.0.0.1:7379".into(),
            hash: etch_proto::HashKvResponse {
                header: ResponseHeader {
                    member_id: 1,
                    revision: 9,
                    ..Default::default()
                },
                hash: 3_735_928_559,
                compact_revision: 0,
                hash_revision: 7,
            },
        };
        assert_eq!(
            printed(|w| hash_kv(w, &[h])),
            concat!(
                r#"[{"Endpoint":"127.0.0.1:7379","HashKV":{"header":{"member_id":1,"revision":9},"#,
                r#""hash":3735928559,"hash_revision":7}}]"#,
                "\n"
            )
        );
    }
}
