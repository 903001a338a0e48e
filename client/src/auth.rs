//! The authorization requests (etcdctl's `auth`, `user` and `role` verbs): `.await` them,
//! or take the wire [`Request`] with `into_request`.
//!
//! A user is a client certificate's common name; there are no passwords. Changes go
//! through the Raft log on the leader and need the root role; `auth status` is open.

use std::future::IntoFuture;

use etch_proto::auth::{AuthRequest, AuthResponse, Permission, PermissionType};
use etch_proto::{Request, Response};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{ResponseFuture, request_future};

impl Client {
    /// Whether authorization is enabled, and the auth revision.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let status = client.auth_status().await?;
    /// println!("enabled {} at auth revision {}", status.enabled, status.auth_revision);
    /// # Ok(())
    /// # }
    /// ```
    pub fn auth_status(&self) -> Auth<'_> {
        self.auth(AuthRequest::Status)
    }

    /// Enables authorization (a new cluster starts with it enabled).
    pub fn auth_enable(&self) -> Auth<'_> {
        self.auth(AuthRequest::Enable)
    }

    /// Disables authorization: every certificate of the cluster's CA may then do anything.
    pub fn auth_disable(&self) -> Auth<'_> {
        self.auth(AuthRequest::Disable)
    }

    /// Adds user `name` (the common name of the client certificate it will use).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::proto::auth::PermissionType;
    /// client.role_add("app").await?;
    /// client.role_grant_permission("app", PermissionType::ReadWrite, "/app/", "/app0").await?;
    /// client.user_add("app1").await?;
    /// client.user_grant_role("app1", "app").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn user_add(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::UserAdd { name: name.into() })
    }

    pub fn user_delete(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::UserDelete { name: name.into() })
    }

    /// User `name`'s roles, in [`AuthResponse::names`].
    pub fn user_get(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::UserGet { name: name.into() })
    }

    /// Every user, in [`AuthResponse::names`].
    pub fn user_list(&self) -> Auth<'_> {
        self.auth(AuthRequest::UserList)
    }

    pub fn user_grant_role(&self, user: impl Into<String>, role: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::UserGrantRole {
            user: user.into(),
            role: role.into(),
        })
    }

    pub fn user_revoke_role(&self, user: impl Into<String>, role: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::UserRevokeRole {
            user: user.into(),
            role: role.into(),
        })
    }

    pub fn role_add(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::RoleAdd { name: name.into() })
    }

    pub fn role_delete(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::RoleDelete { name: name.into() })
    }

    /// Role `name`'s permissions, in [`AuthResponse::permissions`].
    pub fn role_get(&self, name: impl Into<String>) -> Auth<'_> {
        self.auth(AuthRequest::RoleGet { name: name.into() })
    }

    /// Every role, in [`AuthResponse::names`].
    pub fn role_list(&self) -> Auth<'_> {
        self.auth(AuthRequest::RoleList)
    }

    /// Grants `role` `perm_type` on `key` (alone when `range_end` is empty), on
    /// `[key, range_end)`, or on every key from `key` on (`range_end` `"\0"`).
    pub fn role_grant_permission(
        &self,
        role: impl Into<String>,
        perm_type: PermissionType,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Auth<'_> {
        self.auth(AuthRequest::RoleGrantPermission {
            role: role.into(),
            permission: Permission {
                perm_type,
                key: key.into(),
                range_end: range_end.into(),
            },
        })
    }

    /// Revokes `role`'s permission on exactly `key` with `range_end`.
    pub fn role_revoke_permission(
        &self,
        role: impl Into<String>,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Auth<'_> {
        self.auth(AuthRequest::RoleRevokePermission {
            role: role.into(),
            key: key.into(),
            range_end: range_end.into(),
        })
    }

    fn auth(&self, req: AuthRequest) -> Auth<'_> {
        Auth { client: self, req }
    }
}

/// An authorization request being built; see [`Client::auth_status`] and its siblings.
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Auth<'a> {
    client: &'a Client,
    req: AuthRequest,
}

impl Auth<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::Auth(self.req)
    }
}
request_future!(Auth, Auth, AuthResponse);
