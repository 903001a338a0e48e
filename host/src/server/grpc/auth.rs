//! etcd's Auth service: users, roles and permissions, as `etchctl user|role|auth` manages
//! them. A client is the user its certificate names, so the password RPCs are refused with
//! a sentence saying so (`Authenticate`, a password given to `UserAdd`,
//! `UserChangePassword`); the rest become one `AuthRequest` each for the node.

use etch_etcd_api::{authpb, etcdserverpb as pb};
use etch_proto::auth::{AuthRequest, AuthResponse, Permission, PermissionType};
use etch_proto::{Request, Response};
use tonic::Status;

use super::convert::header;
use super::services::Etcd;

type Answer<T> = Result<tonic::Response<T>, Status>;

/// What etch answers wherever etcd takes a password.
const NO_PASSWORDS: &str = "etcdserver: etch users have no password: a client is the user its certificate's common name names (add users with no password: etcdctl user add NAME --no-password)";

impl Etcd {
    /// Runs `auth` for the principal of `req`; `build` makes etcd's answer of the node's.
    async fn auth<T, U: prost::Message>(
        &self,
        req: &tonic::Request<T>,
        auth: AuthRequest,
        build: impl FnOnce(AuthResponse) -> U,
    ) -> Answer<U> {
        self.call(req, Request::Auth(auth), |r| match r {
            Response::Auth(a) => Some(build(a)),
            _ => None,
        })
        .await
    }
}

fn permission_type(t: i32) -> Result<PermissionType, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermissionType::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermissionType::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermissionType::ReadWrite),
        Err(_) => Err(Status::invalid_argument(
            "etcdserver: invalid permission type",
        )),
    }
}

fn permission(p: Permission) -> authpb::Permission {
    let t = match p.perm_type {
        PermissionType::Read => authpb::permission::Type::Read,
        PermissionType::Write => authpb::permission::Type::Write,
        PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
    };
    authpb::Permission {
        perm_type: t as i32,
        key: p.key,
        range_end: p.range_end,
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Etcd {
    async fn auth_enable(
        &self,
        req: tonic::Request<pb::AuthEnableRequest>,
    ) -> Answer<pb::AuthEnableResponse> {
        self.auth(&req, AuthRequest::Enable, |a| pb::AuthEnableResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn auth_disable(
        &self,
        req: tonic::Request<pb::AuthDisableRequest>,
    ) -> Answer<pb::AuthDisableResponse> {
        self.auth(&req, AuthRequest::Disable, |a| pb::AuthDisableResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn auth_status(
        &self,
        req: tonic::Request<pb::AuthStatusRequest>,
    ) -> Answer<pb::AuthStatusResponse> {
        self.auth(&req, AuthRequest::Status, |a| pb::AuthStatusResponse {
            header: header(&a.header),
            enabled: a.enabled,
            auth_revision: a.auth_revision,
        })
        .await
    }

    async fn authenticate(
        &self,
        _: tonic::Request<pb::AuthenticateRequest>,
    ) -> Answer<pb::AuthenticateResponse> {
        Err(Status::invalid_argument(NO_PASSWORDS))
    }

    async fn user_add(
        &self,
        req: tonic::Request<pb::AuthUserAddRequest>,
    ) -> Answer<pb::AuthUserAddResponse> {
        let r = req.get_ref();
        if !r.password.is_empty() || !r.hashed_password.is_empty() {
            return Err(Status::invalid_argument(NO_PASSWORDS));
        }
        let auth = AuthRequest::UserAdd {
            name: r.name.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthUserAddResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn user_get(
        &self,
        req: tonic::Request<pb::AuthUserGetRequest>,
    ) -> Answer<pb::AuthUserGetResponse> {
        let auth = AuthRequest::UserGet {
            name: req.get_ref().name.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthUserGetResponse {
            header: header(&a.header),
            roles: a.names,
        })
        .await
    }

    async fn user_list(
        &self,
        req: tonic::Request<pb::AuthUserListRequest>,
    ) -> Answer<pb::AuthUserListResponse> {
        self.auth(&req, AuthRequest::UserList, |a| pb::AuthUserListResponse {
            header: header(&a.header),
            users: a.names,
        })
        .await
    }

    async fn user_delete(
        &self,
        req: tonic::Request<pb::AuthUserDeleteRequest>,
    ) -> Answer<pb::AuthUserDeleteResponse> {
        let auth = AuthRequest::UserDelete {
            name: req.get_ref().name.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthUserDeleteResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn user_change_password(
        &self,
        _: tonic::Request<pb::AuthUserChangePasswordRequest>,
    ) -> Answer<pb::AuthUserChangePasswordResponse> {
        Err(Status::invalid_argument(NO_PASSWORDS))
    }

    async fn user_grant_role(
        &self,
        req: tonic::Request<pb::AuthUserGrantRoleRequest>,
    ) -> Answer<pb::AuthUserGrantRoleResponse> {
        let r = req.get_ref();
        let auth = AuthRequest::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthUserGrantRoleResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        req: tonic::Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Answer<pb::AuthUserRevokeRoleResponse> {
        let r = req.get_ref();
        let auth = AuthRequest::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthUserRevokeRoleResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn role_add(
        &self,
        req: tonic::Request<pb::AuthRoleAddRequest>,
    ) -> Answer<pb::AuthRoleAddResponse> {
        let auth = AuthRequest::RoleAdd {
            name: req.get_ref().name.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthRoleAddResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn role_get(
        &self,
        req: tonic::Request<pb::AuthRoleGetRequest>,
    ) -> Answer<pb::AuthRoleGetResponse> {
        let auth = AuthRequest::RoleGet {
            name: req.get_ref().role.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthRoleGetResponse {
            header: header(&a.header),
            perm: a.permissions.into_iter().map(permission).collect(),
        })
        .await
    }

    async fn role_list(
        &self,
        req: tonic::Request<pb::AuthRoleListRequest>,
    ) -> Answer<pb::AuthRoleListResponse> {
        self.auth(&req, AuthRequest::RoleList, |a| pb::AuthRoleListResponse {
            header: header(&a.header),
            roles: a.names,
        })
        .await
    }

    async fn role_delete(
        &self,
        req: tonic::Request<pb::AuthRoleDeleteRequest>,
    ) -> Answer<pb::AuthRoleDeleteResponse> {
        let auth = AuthRequest::RoleDelete {
            name: req.get_ref().role.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthRoleDeleteResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn role_grant_permission(
        &self,
        req: tonic::Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Answer<pb::AuthRoleGrantPermissionResponse> {
        let r = req.get_ref();
        let Some(perm) = &r.perm else {
            return Err(Status::invalid_argument("etcdserver: permission not given"));
        };
        let auth = AuthRequest::RoleGrantPermission {
            role: r.name.clone(),
            permission: Permission {
                perm_type: permission_type(perm.perm_type)?,
                key: perm.key.clone(),
                range_end: perm.range_end.clone(),
            },
        };
        self.auth(&req, auth, |a| pb::AuthRoleGrantPermissionResponse {
            header: header(&a.header),
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        req: tonic::Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Answer<pb::AuthRoleRevokePermissionResponse> {
        let r = req.get_ref();
        let auth = AuthRequest::RoleRevokePermission {
            role: r.role.clone(),
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        };
        self.auth(&req, auth, |a| pb::AuthRoleRevokePermissionResponse {
            header: header(&a.header),
        })
        .await
    }
}
