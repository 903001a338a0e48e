//! Authorization: the replicated users, roles and permissions ([`AuthState`]), and what
//! each request needs of them ([`authorize`]).
//!
//! The state is one record in the store (`kv_meta`, key `auth`), changed only by applying
//! an [`AuthRequest`] from the Raft log ([`AuthState::change`], a pure function of the old
//! state and the request, so every replica computes the same one), and carried by
//! snapshots with the rest of `kv_meta`. A store that never held the record has the
//! secure default ([`AuthState::default`]): authorization enabled, user `root` with role
//! `root`, nobody else.
//!
//! Every change advances the auth revision. A write checked on the leader is proposed with
//! the revision it was checked at (`crate::raft::Command::Authorized`); apply refuses it
//! with `Conflict` if the revision moved meanwhile, and the leader checks it again, so a
//! revoke that commits first is never bypassed (etcd's `ErrAuthOldRevision`, retried by the
//! node instead of the client).

mod check;
mod range;

use std::collections::{BTreeMap, BTreeSet};

use etch_proto::Error;
use etch_proto::auth::{AuthRequest, AuthResponse, Permission, ROOT};
use serde::{Deserialize, Serialize};

pub use check::{Access, authorize, denied};

/// Users, roles and whether authorization is enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Advanced by every change.
    pub revision: u64,
    /// User name → its roles.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Role name → its permissions (kept sorted by key, range end).
    pub roles: BTreeMap<String, Vec<Permission>>,
}

impl Default for AuthState {
    /// The state of a new cluster: enabled, with `root` the only user, holding `root`.
    fn default() -> Self {
        AuthState {
            enabled: true,
            revision: 1,
            users: BTreeMap::from([(ROOT.to_owned(), BTreeSet::from([ROOT.to_owned()]))]),
            roles: BTreeMap::from([(ROOT.to_owned(), Vec::new())]),
        }
    }
}

impl AuthState {
    /// Whether `user` has every right: authorization is off, or it holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        !self.enabled
            || self
                .users
                .get(user)
                .is_some_and(|roles| roles.contains(ROOT))
    }

    /// The permissions of `user`'s roles (none for an unknown user).
    pub fn permissions_of(&self, user: &str) -> impl Iterator<Item = &Permission> {
        (self.users.get(user).into_iter().flatten())
            .filter_map(|role| self.roles.get(role))
            .flatten()
    }

    /// Answers a request that only reads the state.
    ///
    /// # Errors
    ///
    /// An unknown user or role; a change (which must go through [`AuthState::change`]).
    pub fn answer(&self, req: &AuthRequest) -> Result<AuthResponse, Error> {
        let mut resp = AuthResponse::default();
        match req {
            AuthRequest::Status => {
                resp.enabled = self.enabled;
                resp.auth_revision = self.revision;
            }
            AuthRequest::UserGet { name } => {
                resp.names = self.user(name)?.iter().cloned().collect();
            }
            AuthRequest::UserList => resp.names = self.users.keys().cloned().collect(),
            AuthRequest::RoleGet { name } => resp.permissions = self.role(name)?.clone(),
            AuthRequest::RoleList => resp.names = self.roles.keys().cloned().collect(),
            _ => return Err(Error::Internal("an auth change answered as a read".into())),
        }
        Ok(resp)
    }

    /// The state after applying the change `req`, or why it cannot be applied (the state
    /// is then unchanged). Deterministic: apply calls it on every replica.
    ///
    /// # Errors
    ///
    /// etcd's refusals: an empty, unknown or existing name, the root user's or role's
    /// rights, enabling without a root user, a permission that is not granted.
    pub fn change(&self, req: &AuthRequest) -> Result<AuthState, Error> {
        let mut next = self.clone();
        match req {
            AuthRequest::Enable => {
                if !self.users.get(ROOT).is_some_and(|r| r.contains(ROOT)) {
                    return Err(invalid(
                        "the root user with the root role must exist to enable authorization (etchctl user add root; etchctl user grant-role root root)",
                    ));
                }
                next.enabled = true;
            }
            AuthRequest::Disable => next.enabled = false,
            AuthRequest::UserAdd { name } => {
                non_empty("user", name)?;
                if next.users.insert(name.clone(), BTreeSet::new()).is_some() {
                    return Err(invalid("user name already exists"));
                }
            }
            AuthRequest::UserDelete { name } => {
                self.user(name)?;
                if name == ROOT && self.enabled {
                    return Err(invalid(
                        "the root user cannot be deleted while authorization is enabled",
                    ));
                }
                next.users.remove(name);
            }
            AuthRequest::UserGrantRole { user, role } => {
                self.user(user)?;
                if role != ROOT {
                    self.role(role)?;
                }
                // A role granted again changes nothing and is no error, as in etcd.
                if !next
                    .users
                    .entry(user.clone())
                    .or_default()
                    .insert(role.clone())
                {
                    return Ok(next);
                }
            }
            AuthRequest::UserRevokeRole { user, role } => {
                self.user(user)?;
                if user == ROOT && role == ROOT && self.enabled {
                    return Err(invalid(
                        "the root user cannot lose the root role while authorization is enabled",
                    ));
                }
                if !next.users.entry(user.clone()).or_default().remove(role) {
                    return Err(invalid("role is not granted to the user"));
                }
            }
            AuthRequest::RoleAdd { name } => {
                non_empty("role", name)?;
                if next.roles.insert(name.clone(), Vec::new()).is_some() {
                    return Err(invalid("role name already exists"));
                }
            }
            AuthRequest::RoleDelete { name } => {
                self.role(name)?;
                if name == ROOT && self.enabled {
                    return Err(invalid(
                        "the root role cannot be deleted while authorization is enabled",
                    ));
                }
                next.roles.remove(name);
                for roles in next.users.values_mut() {
                    roles.remove(name);
                }
            }
            AuthRequest::RoleGrantPermission { role, permission } => {
                if role == ROOT {
                    return Err(invalid("the root role has every right already"));
                }
                self.role(role)?;
                if permission.key.is_empty() {
                    return Err(invalid("a permission needs a key"));
                }
                let perms = next.roles.entry(role.clone()).or_default();
                // Granting the same key or range again replaces its type, as etcd does.
                perms
                    .retain(|p| (&p.key, &p.range_end) != (&permission.key, &permission.range_end));
                perms.push(permission.clone());
                perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            }
            AuthRequest::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                self.role(role)?;
                let perms = next.roles.entry(role.clone()).or_default();
                let before = perms.len();
                perms.retain(|p| (&p.key, &p.range_end) != (key, range_end));
                if perms.len() == before {
                    return Err(invalid("permission is not granted to the role"));
                }
            }
            AuthRequest::Status
            | AuthRequest::UserGet { .. }
            | AuthRequest::UserList
            | AuthRequest::RoleGet { .. }
            | AuthRequest::RoleList => {
                return Err(Error::Internal("an auth read applied as a change".into()));
            }
        }
        next.revision += 1;
        Ok(next)
    }

    fn user(&self, name: &str) -> Result<&BTreeSet<String>, Error> {
        self.users
            .get(name)
            .ok_or_else(|| invalid("user name not found"))
    }

    fn role(&self, name: &str) -> Result<&Vec<Permission>, Error> {
        self.roles
            .get(name)
            .ok_or_else(|| invalid("role name not found"))
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

fn non_empty(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(invalid(format!("{what} name is empty")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
