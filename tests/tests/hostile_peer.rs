//! The peer endpoint admits members only. A certificate the cluster CA signed for a node
//! name that is not a member (or no longer one) once deposed the leader with one Vote and
//! got a forged Put committed; these tests send such requests over real QUIC connections to
//! real nodes and check that each is refused and changes nothing.

use std::time::Duration;

use etch_host::node_id;
use etch_host::raft::wire::{Envelope, PeerRequest, PeerResponse};
use etch_proto::pki::TlsFiles;
use etch_proto::{ALPN_PEER, PutRequest, Request, frame};
use etch_tests::{Certs, Cluster, ok_stdout, quic_dial, raw_tls, wait_for};
use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Vote};

/// Sends one envelope over a peer connection made with `files` and reads the answer.
async fn send(addr: &str, files: &TlsFiles, envelope: &Envelope) -> PeerResponse {
    let conn = quic_dial(addr, raw_tls(files, ALPN_PEER))
        .await
        .expect("a node certificate passes the handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    frame::write(&mut send, envelope, 1 << 20)
        .await
        .expect("write the envelope");
    send.finish().expect("finish");
    frame::read::<_, PeerResponse>(&mut recv, 1 << 20)
        .await
        .expect("an answer")
        .expect("an answer frame")
}

/// A Vote for `candidate` at a term far ahead of the cluster's, with a log that wins.
fn vote(candidate: u64) -> PeerRequest {
    PeerRequest::Vote(VoteRequest::new(
        Vote::new(1000, candidate),
        Some(LogId::new(
            CommittedLeaderId::new(999, candidate),
            1_000_000,
        )),
    ))
}

fn refused(answer: &PeerResponse, why: &str) {
    match answer {
        PeerResponse::Refused(reason) | PeerResponse::NotAMember(reason) => {
            assert!(reason.contains(why), "refused for {reason:?}, not {why:?}")
        }
        other => panic!("a forged request was served: {other:?}"),
    }
}

/// The term the members report, which a successful forged vote would have raised.
fn terms(cluster: &Cluster) -> String {
    let status = ok_stdout(&cluster.etchctl(&["endpoint", "status", "--cluster", "-w", "json"]));
    let json: serde_json::Value = serde_json::from_str(&status).expect("status json");
    let mut terms: Vec<u64> = json
        .as_array()
        .expect("one status per member")
        .iter()
        .map(|s| s["Status"]["raftTerm"].as_u64().expect("raftTerm"))
        .collect();
    terms.sort();
    format!("{terms:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_of_a_non_member_cannot_vote_append_forward_or_read() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let leader_id = node_id(&cluster.nodes[leader].name);
    let leader_peer = cluster.nodes[leader].peer_endpoint();
    let before = terms(&cluster);
    let mallory = Certs::new(&cluster.certs.dir, &["mallory"], &[]).files("mallory");
    let mallory_id = node_id("mallory");
    let envelope = |from, body| Envelope {
        cluster_id: 0,
        from,
        to: leader_id,
        body,
    };

    let answer = send(
        &leader_peer,
        &mallory,
        &envelope(mallory_id, vote(mallory_id)),
    )
    .await;
    refused(&answer, "is not a member of this cluster");
    let forward = PeerRequest::Forward {
        principal: "root".into(),
        request: Request::Put(PutRequest {
            key: b"forged".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        }),
    };
    let answer = send(&leader_peer, &mallory, &envelope(mallory_id, forward)).await;
    refused(&answer, "is not a member of this cluster");
    let answer = send(
        &leader_peer,
        &mallory,
        &envelope(mallory_id, PeerRequest::Hello),
    )
    .await;
    refused(&answer, "is not a member of this cluster");
    // Spoofing a member's id in the envelope does not help.
    let member_id = node_id(&cluster.nodes[(leader + 1) % 3].name);
    let answer = send(
        &leader_peer,
        &mallory,
        &envelope(member_id, vote(member_id)),
    )
    .await;
    refused(&answer, "but the certificate is node \"mallory\"");

    assert_eq!(terms(&cluster), before, "a forged vote moved the term");
    assert_eq!(
        cluster.leader_index(),
        leader,
        "a forged vote deposed the leader"
    );
    let out = cluster.etchctl(&["get", "forged", "--print-value-only"]);
    assert_eq!(ok_stdout(&out), "", "a forged put was applied");
    let log = cluster.nodes[leader].log_text();
    assert!(
        log.contains("refused a peer request"),
        "no log of the refusal:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_from_the_moment_its_removal_applies() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let gone = (leader + 1) % 3;
    let gone_name = cluster.nodes[gone].name.clone();
    let gone_files = cluster.certs.files(&gone_name);
    ok_stdout(&cluster.etchctl(&["member", "remove", &format!("{:x}", node_id(&gone_name))]));
    cluster.nodes[gone].kill();
    // Every remaining member refuses the removed one once it has the new membership.
    for i in (0..3).filter(|&i| i != gone) {
        let to = node_id(&cluster.nodes[i].name);
        let addr = cluster.nodes[i].peer_endpoint();
        let from = node_id(&gone_name);
        let answer = wait_for(
            "the removal to reach every member",
            Duration::from_secs(20),
            || {
                let envelope = Envelope {
                    cluster_id: 0,
                    from,
                    to,
                    body: vote(from),
                };
                let answer = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(send(&addr, &gone_files, &envelope))
                });
                match answer {
                    refusal @ PeerResponse::NotAMember(_) => Some(refusal),
                    _ => None,
                }
            },
        );
        refused(&answer, "is not a member of this cluster");
    }
    assert_eq!(
        ok_stdout(&cluster.etchctl(&["put", "still", "serving"])),
        "OK\n"
    );
}

/// `move-leader`'s peer messages come from the leader only, and within bounds: a member
/// that does not lead cannot silence another member's elections or make it campaign, and
/// not even the leader may hold them for long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_may_hold_elections_or_ask_for_a_campaign() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let follower = cluster.certs.files(&cluster.nodes[a].name);
    let envelope = |from: usize, to: usize, body| Envelope {
        cluster_id: 0,
        from: node_id(&cluster.nodes[from].name),
        to: node_id(&cluster.nodes[to].name),
        body,
    };
    let target = cluster.nodes[b].peer_endpoint();
    let hold = PeerRequest::HoldElections { for_ms: 5_000 };
    let answer = send(&target, &follower, &envelope(a, b, hold)).await;
    refused(&answer, "is not the leader");
    let campaign = PeerRequest::Campaign {
        after_ms: 0,
        for_ms: 1_000,
    };
    let answer = send(&target, &follower, &envelope(a, b, campaign)).await;
    refused(&answer, "is not the leader");
    let leader_files = cluster.certs.files(&cluster.nodes[leader].name);
    let forever = PeerRequest::HoldElections { for_ms: u64::MAX };
    let answer = send(&target, &leader_files, &envelope(leader, b, forever)).await;
    refused(&answer, "at most");
    assert_eq!(cluster.leader_index(), leader, "the leadership moved");
}
