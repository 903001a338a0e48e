//! Authorization, as etcd's: users, roles, and permissions on keys, ranges and prefixes.
//!
//! A client's user is its certificate's common name (etcd's `--client-cert-auth`): there
//! are no passwords. A user holds roles; a role holds [`Permission`]s, each read, write or
//! both on one key, a range `[key, range_end)`, or everything from a key on (`range_end`
//! `"\0"`), with etcd's `range_end` conventions. The built-in user [`ROOT`] and role
//! [`ROOT`] may do everything. While authorization is enabled (the default of a new
//! cluster), every request needs the rights its kind asks for; see `docs/security.md`.
//!
//! Users, roles and the enabled flag are replicated state: every change goes through the
//! Raft log, advances the auth revision, and is carried by snapshots.

use serde::{Deserialize, Serialize};

use crate::message::ResponseHeader;

/// The built-in user and role with every right.
pub const ROOT: &str = "root";

/// What a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermissionType {
    Read,
    Write,
    ReadWrite,
}

impl PermissionType {
    /// etcdctl's spelling: `read`, `write`, `readwrite`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Some(PermissionType::Read),
            "write" => Some(PermissionType::Write),
            "readwrite" => Some(PermissionType::ReadWrite),
            _ => None,
        }
    }

    pub fn reads(self) -> bool {
        matches!(self, PermissionType::Read | PermissionType::ReadWrite)
    }

    pub fn writes(self) -> bool {
        matches!(self, PermissionType::Write | PermissionType::ReadWrite)
    }
}

/// One permission of a role: `perm_type` on `key` (alone when `range_end` is empty), on
/// `[key, range_end)`, or on every key from `key` on (`range_end` = `"\0"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub perm_type: PermissionType,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

/// A management or status request of the authorization state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRequest {
    Enable,
    Disable,
    Status,
    UserAdd {
        name: String,
    },
    UserDelete {
        name: String,
    },
    UserGet {
        name: String,
    },
    UserList,
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGet {
        name: String,
    },
    RoleList,
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    /// Revokes the role's permission on exactly `[key, range_end)` (whatever its type).
    RoleRevokePermission {
        role: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
}

impl AuthRequest {
    /// The method of etcd's `etcdserverpb.Auth` service this request is.
    pub fn method(&self) -> &'static str {
        match self {
            AuthRequest::Enable => "AuthEnable",
            AuthRequest::Disable => "AuthDisable",
            AuthRequest::Status => "AuthStatus",
            AuthRequest::UserAdd { .. } => "UserAdd",
            AuthRequest::UserDelete { .. } => "UserDelete",
            AuthRequest::UserGet { .. } => "UserGet",
            AuthRequest::UserList => "UserList",
            AuthRequest::UserGrantRole { .. } => "UserGrantRole",
            AuthRequest::UserRevokeRole { .. } => "UserRevokeRole",
            AuthRequest::RoleAdd { .. } => "RoleAdd",
            AuthRequest::RoleDelete { .. } => "RoleDelete",
            AuthRequest::RoleGet { .. } => "RoleGet",
            AuthRequest::RoleList => "RoleList",
            AuthRequest::RoleGrantPermission { .. } => "RoleGrantPermission",
            AuthRequest::RoleRevokePermission { .. } => "RoleRevokePermission",
        }
    }

    /// Whether this request changes the authorization state (through the Raft log).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            AuthRequest::Status
                | AuthRequest::UserGet { .. }
                | AuthRequest::UserList
                | AuthRequest::RoleGet { .. }
                | AuthRequest::RoleList
        )
    }

    /// The users and roles this request names, to be checked against the name limits.
    pub fn names(&self) -> Vec<&str> {
        match self {
            AuthRequest::Enable
            | AuthRequest::Disable
            | AuthRequest::Status
            | AuthRequest::UserList
            | AuthRequest::RoleList => Vec::new(),
            AuthRequest::UserAdd { name }
            | AuthRequest::UserDelete { name }
            | AuthRequest::UserGet { name }
            | AuthRequest::RoleAdd { name }
            | AuthRequest::RoleDelete { name }
            | AuthRequest::RoleGet { name } => vec![name],
            AuthRequest::UserGrantRole { user, role }
            | AuthRequest::UserRevokeRole { user, role } => {
                vec![user, role]
            }
            AuthRequest::RoleGrantPermission { role, .. }
            | AuthRequest::RoleRevokePermission { role, .. } => vec![role],
        }
    }
}

/// The answer to an [`AuthRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub header: ResponseHeader,
    /// `Status`: whether authorization is enabled.
    pub enabled: bool,
    /// `Status`: the auth revision (advanced by every change of users, roles or the flag).
    pub auth_revision: u64,
    /// `UserGet`: the user's roles; `UserList`: the users; `RoleList`: the roles (sorted).
    pub names: Vec<String>,
    /// `RoleGet`: the role's permissions, in key order.
    pub permissions: Vec<Permission>,
}
