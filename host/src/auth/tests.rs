//! The authorization state's changes and what requests need, without a node.

use etch_proto::auth::{AuthRequest, Permission, PermissionType};
use etch_proto::lease::LeaseRevokeRequest;
use etch_proto::{
    CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Error, PutRequest,
    RangeRequest, Request, RequestOp, TxnRequest,
};

use super::{AuthState, authorize};

fn apply(state: &AuthState, reqs: Vec<AuthRequest>) -> AuthState {
    reqs.iter()
        .fold(state.clone(), |s, r| s.change(r).expect("applies"))
}

fn grant(role: &str, perm_type: PermissionType, key: &str, end: &str) -> AuthRequest {
    AuthRequest::RoleGrantPermission {
        role: role.into(),
        permission: Permission {
            perm_type,
            key: key.into(),
            range_end: end.into(),
        },
    }
}

/// root; alice with role `app` (readwrite on prefix /app/, read on /config/db).
fn state() -> AuthState {
    apply(
        &AuthState::default(),
        vec![
            AuthRequest::UserAdd {
                name: "alice".into(),
            },
            AuthRequest::UserAdd { name: "bob".into() },
            AuthRequest::RoleAdd { name: "app".into() },
            grant("app", PermissionType::ReadWrite, "/app/", "/app0"),
            grant("app", PermissionType::Read, "/config/db", ""),
            AuthRequest::UserGrantRole {
                user: "alice".into(),
                role: "app".into(),
            },
        ],
    )
}

fn put(key: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn check(state: &AuthState, user: &str, req: &Request) -> Result<(), Error> {
    authorize(state, user, req, &|_| {
        Ok(vec![b"/app/leased".to_vec(), b"/other".to_vec()])
    })
}

#[test]
fn a_new_cluster_is_secure_by_default() {
    let s = AuthState::default();
    assert!(s.enabled);
    assert!(s.is_root("root"));
    assert!(!s.is_root("alice"));
    let e = check(&s, "alice", &put("/k")).expect_err("denied");
    assert_eq!(
        e.to_string(),
        "permission denied: user alice may not write \"/k\""
    );
}

#[test]
fn users_roles_and_permissions_decide_each_request() {
    let s = state();
    assert!(check(&s, "alice", &put("/app/x")).is_ok());
    let e = check(&s, "alice", &put("/config/db")).expect_err("read only");
    assert_eq!(
        e.to_string(),
        "permission denied: user alice may not write \"/config/db\""
    );
    let range = |k: &str, e: &str| {
        Request::Range(RangeRequest {
            key: k.into(),
            range_end: e.into(),
            ..Default::default()
        })
    };
    assert!(check(&s, "alice", &range("/config/db", "")).is_ok());
    assert!(check(&s, "alice", &range("/app/", "/app0")).is_ok());
    assert!(check(&s, "alice", &range("/app/", "\0")).is_err());
    assert!(check(&s, "bob", &range("/app/x", "")).is_err());
    // A txn needs read on its compares and the rights of both branches.
    let txn = |compare_key: &str, failure_key: &str| {
        Request::Txn(TxnRequest {
            compare: vec![Compare {
                key: compare_key.into(),
                range_end: Vec::new(),
                result: CompareResult::Equal,
                target: CompareTarget::Version(0),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"/app/a".to_vec(),
                ..Default::default()
            })],
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: failure_key.into(),
                ..Default::default()
            })],
        })
    };
    assert!(check(&s, "alice", &txn("/config/db", "/app/b")).is_ok());
    assert!(check(&s, "alice", &txn("/secret", "/app/b")).is_err());
    assert!(check(&s, "alice", &txn("/config/db", "/config/db")).is_err());
    // prev_kv needs read as well.
    let del = Request::DeleteRange(DeleteRangeRequest {
        key: b"/config/db".to_vec(),
        prev_kv: true,
        ..Default::default()
    });
    assert!(check(&s, "alice", &del).is_err());
    // Revoking a lease needs write on every attached key.
    let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
    let e = check(&s, "alice", &revoke).expect_err("holds /other");
    assert!(e.to_string().contains("revoke lease 7"), "{e}");
    // Root only.
    for req in [
        Request::Compact(CompactRequest::default()),
        Request::Auth(AuthRequest::UserList),
        Request::Auth(AuthRequest::Disable),
    ] {
        let e = check(&s, "alice", &req).expect_err("root only");
        assert!(e.to_string().contains("(root only)"), "{e}");
        assert!(check(&s, "root", &req).is_ok());
    }
    assert!(check(&s, "alice", &Request::Auth(AuthRequest::Status)).is_ok());
    // A user granted the root role has every right; disabled authorization gives everyone.
    let admin = apply(
        &s,
        vec![AuthRequest::UserGrantRole {
            user: "bob".into(),
            role: "root".into(),
        }],
    );
    assert!(check(&admin, "bob", &Request::Compact(CompactRequest::default())).is_ok());
    let off = apply(&s, vec![AuthRequest::Disable]);
    assert!(check(&off, "mallory", &put("/anything")).is_ok());
}

#[test]
fn changes_refuse_what_etcd_refuses_and_advance_the_revision() {
    let s = state();
    let refused = |req: AuthRequest, why: &str| {
        let e = s.change(&req).expect_err("refused");
        assert!(e.to_string().contains(why), "{e} should say {why}");
    };
    refused(
        AuthRequest::UserAdd {
            name: "alice".into(),
        },
        "user name already exists",
    );
    refused(
        AuthRequest::UserAdd {
            name: String::new(),
        },
        "name is empty",
    );
    refused(
        AuthRequest::UserDelete {
            name: "carol".into(),
        },
        "user name not found",
    );
    refused(
        AuthRequest::UserDelete {
            name: "root".into(),
        },
        "root user cannot be deleted",
    );
    refused(
        AuthRequest::UserRevokeRole {
            user: "root".into(),
            role: "root".into(),
        },
        "cannot lose the root role",
    );
    refused(
        AuthRequest::UserGrantRole {
            user: "alice".into(),
            role: "ops".into(),
        },
        "role name not found",
    );
    refused(
        AuthRequest::RoleDelete {
            name: "root".into(),
        },
        "root role cannot be deleted",
    );
    refused(
        AuthRequest::RoleRevokePermission {
            role: "app".into(),
            key: b"/nope".to_vec(),
            range_end: Vec::new(),
        },
        "permission is not granted to the role",
    );
    // A role granted again is no error, and changes nothing (etcd's rule).
    let again = s
        .change(&AuthRequest::UserGrantRole {
            user: "alice".into(),
            role: "app".into(),
        })
        .expect("granted again");
    assert_eq!(again, s, "a role granted again changes nothing");
    let before = s.revision;
    let next = s
        .change(&AuthRequest::RoleRevokePermission {
            role: "app".into(),
            key: b"/config/db".to_vec(),
            range_end: Vec::new(),
        })
        .expect("revoked");
    assert_eq!(next.revision, before + 1);
    assert!(
        check(
            &next,
            "alice",
            &Request::Range(RangeRequest {
                key: b"/config/db".to_vec(),
                ..Default::default()
            })
        )
        .is_err()
    );
    // Deleting a role takes it from its users; enabling needs root.
    let gone = next
        .change(&AuthRequest::RoleDelete { name: "app".into() })
        .expect("deleted");
    assert!(gone.users["alice"].is_empty());
    let no_root = apply(
        &AuthState::default(),
        vec![
            AuthRequest::Disable,
            AuthRequest::UserDelete {
                name: "root".into(),
            },
        ],
    );
    assert!(no_root.change(&AuthRequest::Enable).is_err());
}
