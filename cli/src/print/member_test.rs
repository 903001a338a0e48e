//! The member printers in the three formats, on fixed responses.

use std::io::{self, Write};

use etch_proto::{Member, MemberAddResponse, MemberListResponse, ResponseHeader};

use super::{Format, MemberChange, Printer};

fn printer(format: Format) -> Printer {
    Printer {
        format,
        ..Printer::default()
    }
}

fn printed(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).expect("print");
    String::from_utf8(out).expect("utf-8")
}

fn header() -> ResponseHeader {
    ResponseHeader {
        cluster_id: 0x2d8e0a1f5b3c4e7a,
        member_id: 0x8e9e05c52164694d,
        revision: 0,
        raft_term: 3,
        leader_hint: None,
    }
}

/// n1 a started voter, n2 a started learner, n3 added but not heard from.
fn members() -> Vec<Member> {
    let member = |id, name: &str, port: u16, started: bool, is_learner| Member {
        id,
        name: name.into(),
        peer_addr: format!("127.0.0.1:{port}"),
        client_addr: if started {
            format!("127.0.0.1:{}", port - 1)
        } else {
            String::new()
        },
        is_learner,
    };
    vec![
        member(0x8e9e05c52164694d, "n1", 7380, true, false),
        member(0x91bc3c398fb3c146, "n2", 7382, true, true),
        member(0xfd422379fda50e48, "n3", 7384, false, false),
    ]
}

fn list() -> MemberListResponse {
    MemberListResponse {
        header: header(),
        members: members(),
    }
}

fn added(is_learner: bool) -> MemberAddResponse {
    let mut members = members();
    members[2].is_learner = is_learner;
    MemberAddResponse {
        header: header(),
        member: members[2].clone(),
        members,
    }
}

#[test]
fn list_simple_is_one_line_per_member() {
    assert_eq!(
        printed(|w| printer(Format::Simple).member_list(w, &list())),
        "8e9e05c52164694d, started, n1, 127.0.0.1:7380, 127.0.0.1:7379, false\n\
         91bc3c398fb3c146, started, n2, 127.0.0.1:7382, 127.0.0.1:7381, true\n\
         fd422379fda50e48, unstarted, , 127.0.0.1:7384, , false\n"
    );
}

#[test]
fn list_table_has_etcdctls_headers() {
    assert_eq!(
        printed(|w| printer(Format::Table).member_list(w, &list())),
        "+------------------+-----------+------+----------------+----------------+------------+\n\
         |        ID        |  STATUS   | NAME |   PEER ADDRS   |  CLIENT ADDRS  | IS LEARNER |\n\
         +------------------+-----------+------+----------------+----------------+------------+\n\
         | 8e9e05c52164694d |   started |   n1 | 127.0.0.1:7380 | 127.0.0.1:7379 |      false |\n\
         | 91bc3c398fb3c146 |   started |   n2 | 127.0.0.1:7382 | 127.0.0.1:7381 |       true |\n\
         | fd422379fda50e48 | unstarted |      | 127.0.0.1:7384 |                |      false |\n\
         +------------------+-----------+------+----------------+----------------+------------+\n"
    );
}

#[test]
fn list_json_has_etcds_shape() {
    assert_eq!(
        printed(|w| printer(Format::Json).member_list(w, &list())),
        concat!(
            r#"{"header":{"cluster_id":3282572308190613114,"member_id":10276657743932975437,"raft_term":3},"#,
            r#""members":["#,
            r#"{"ID":10276657743932975437,"name":"n1","peerURLs":["127.0.0.1:7380"],"clientURLs":["127.0.0.1:7379"]},"#,
            r#"{"ID":10501334649042878790,"name":"n2","peerURLs":["127.0.0.1:7382"],"clientURLs":["127.0.0.1:7381"],"isLearner":true},"#,
            r#"{"ID":18249187646912138824,"peerURLs":["127.0.0.1:7384"]}]}"#,
            "\n"
        )
    );
    let empty = MemberListResponse::default();
    assert_eq!(
        printed(|w| printer(Format::Json).member_list(w, &empty)),
        "{\"header\":{}}\n"
    );
}

#[test]
fn add_simple_prints_the_etchd_command_line() {
    assert_eq!(
        printed(|w| printer(Format::Simple).member_add(
            w,
            &added(false),
            "n3",
            std::path::Path::new("certs/ca.crt")
        )),
        "Member fd422379fda50e48 added to cluster 2d8e0a1f5b3c4e7a\n\
         \n\
         etchd --name n3 --data-dir etch-data-n3 --listen-peer 127.0.0.1:7384 \
         --listen-client 127.0.0.1:7383 --initial-cluster \
         n1=127.0.0.1:7380,n2=127.0.0.1:7382,n3=127.0.0.1:7384 --initial-cluster-state existing \
         --ca certs/ca.crt --cert certs/n3.crt --key certs/n3.key\n"
    );
    // The new member goes under the name given, whatever the answer says; words a shell
    // would interpret are quoted.
    let mut resp = added(true);
    resp.members[2].name.clear();
    resp.members[0].peer_addr = "[::1]:7380".into();
    assert_eq!(
        printed(|w| printer(Format::Simple).member_add(
            w,
            &resp,
            "it's",
            std::path::Path::new("ca.crt")
        )),
        "Member fd422379fda50e48 added as learner to cluster 2d8e0a1f5b3c4e7a\n\
         \n\
         etchd --name 'it'\\''s' --data-dir 'etch-data-it'\\''s' --listen-peer 127.0.0.1:7384 \
         --listen-client 127.0.0.1:7383 --initial-cluster \
         'n1=[::1]:7380,n2=127.0.0.1:7382,it'\\''s=127.0.0.1:7384' --initial-cluster-state existing \
         --ca ca.crt --cert 'it'\\''s.crt' --key 'it'\\''s.key'\n"
    );
}

#[test]
fn add_table_and_json() {
    // etcdctl prints the ETCD_* lines only in simple mode.
    assert_eq!(
        printed(|w| printer(Format::Table).member_add(
            w,
            &added(true),
            "n3",
            std::path::Path::new("ca.crt")
        )),
        "Member fd422379fda50e48 added as learner to cluster 2d8e0a1f5b3c4e7a\n"
    );
    let json = printed(|w| {
        printer(Format::Json).member_add(w, &added(true), "n3", std::path::Path::new("ca.crt"))
    });
    assert!(
        json.starts_with(concat!(
            r#"{"header":{"cluster_id":3282572308190613114,"member_id":10276657743932975437,"raft_term":3},"#,
            r#""member":{"ID":18249187646912138824,"peerURLs":["127.0.0.1:7384"],"isLearner":true},"#,
            r#""members":[{"ID":10276657743932975437,"name":"n1","#,
        )),
        "{json}"
    );
    assert!(json.ends_with("\"isLearner\":true}]}\n"), "{json}");
}

#[test]
fn promote_and_remove_name_the_member_and_cluster() {
    for format in [Format::Simple, Format::Table] {
        let p = printer(format);
        assert_eq!(
            printed(|w| p.member_changed(w, 0x91bc3c398fb3c146, MemberChange::Promoted, &list())),
            "Member 91bc3c398fb3c146 promoted in cluster 2d8e0a1f5b3c4e7a\n"
        );
        assert_eq!(
            printed(|w| p.member_changed(w, 0x91bc3c398fb3c146, MemberChange::Removed, &list())),
            "Member 91bc3c398fb3c146 removed from cluster 2d8e0a1f5b3c4e7a\n"
        );
    }
    // Go's %16x pads short IDs with spaces.
    let short = MemberListResponse {
        header: ResponseHeader {
            cluster_id: 0xabc,
            ..Default::default()
        },
        members: vec![],
    };
    assert_eq!(
        printed(|w| printer(Format::Simple).member_changed(w, 0x1f, MemberChange::Removed, &short)),
        "Member               1f removed from cluster              abc\n"
    );
    let json =
        printed(|w| printer(Format::Json).member_changed(w, 0x1f, MemberChange::Removed, &list()));
    assert_eq!(
        json,
        printed(|w| printer(Format::Json).member_list(w, &list())),
        "the remove response has the list's fields"
    );
}
