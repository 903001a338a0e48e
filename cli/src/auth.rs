//! `auth enable|disable|status`, `user ...` and `role ...`: etcdctl 3.5's authorization
//! verbs. A user is a client certificate's common name, so there are no passwords:
//! `user add NAME --no-password` is etcdctl's spelling, and a `NAME:PASSWORD` is refused.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use etch_client::proto::auth::{AuthResponse, PermissionType};

use crate::context::Context;
use crate::print::Shown;

/// `auth ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum AuthCommand {
    /// Enable authorization (a new cluster starts with it enabled).
    Enable,
    /// Disable authorization: every certificate of the cluster's CA may then do anything.
    Disable,
    /// Print whether authorization is enabled, and the auth revision.
    Status,
}

/// `user ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum UserCommand {
    /// Add a user: the common name of the client certificate it will use.
    Add(UserAddArgs),
    /// Delete a user.
    Delete(NameArgs),
    /// Print a user's roles.
    Get(NameArgs),
    /// List the users.
    List,
    /// Grant a role to a user.
    GrantRole(UserRoleArgs),
    /// Revoke a role from a user.
    RevokeRole(UserRoleArgs),
}

/// `role ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum RoleCommand {
    /// Add a role.
    Add(NameArgs),
    /// Delete a role (and take it from its users).
    Delete(NameArgs),
    /// Print a role's permissions.
    Get(NameArgs),
    /// List the roles.
    List,
    /// Grant a permission (read, write or readwrite) on a key, a range [KEY, END), a prefix
    /// (--prefix) or every key from KEY on (--from-key).
    GrantPermission(GrantArgs),
    /// Revoke the permission on a key, a range, a prefix or from a key on.
    RevokePermission(RevokeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Args, Clone, Debug)]
pub struct UserAddArgs {
    /// The user's name (its certificate's common name).
    pub name: String,
    /// etcdctl's flag for a user without a password; etch users never have one (accepted
    /// and ignored).
    #[arg(long)]
    pub no_password: bool,
}

#[derive(Args, Clone, Debug)]
pub struct UserRoleArgs {
    pub user: String,
    pub role: String,
}

/// What a permission command names: a key, a range, a prefix or from a key on.
#[derive(Args, Clone, Debug)]
pub struct KeyArgs {
    pub key: String,
    /// The end of the range [KEY, END).
    pub end: Option<String>,
    /// KEY is a prefix: every key that starts with it.
    #[arg(long)]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub from_key: bool,
}

impl KeyArgs {
    /// `(key, range_end)` as etcd's permissions spell them.
    pub fn range(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let key = self.key.as_bytes().to_vec();
        let end = match (&self.end, self.prefix, self.from_key) {
            (Some(_), true, _) | (Some(_), _, true) => {
                bail!("--prefix and --from-key take no END: they say where the range ends")
            }
            (_, true, true) => bail!("--from-key and --prefix are mutually exclusive"),
            (Some(end), false, false) => end.as_bytes().to_vec(),
            // etcdctl: `--prefix ""` is every key.
            (None, true, false) if key.is_empty() => return Ok((vec![0], vec![0])),
            (None, true, false) => etch_client::proto::prefix_end(&key),
            (None, false, true) if key.is_empty() => return Ok((vec![0], vec![0])),
            (None, false, true) => vec![0],
            (None, false, false) => Vec::new(),
        };
        if key.is_empty() {
            bail!("a permission needs a key");
        }
        Ok((key, end))
    }
}

#[derive(Args, Clone, Debug)]
pub struct GrantArgs {
    pub role: String,
    /// read, write or readwrite.
    pub perm_type: String,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Args, Clone, Debug)]
pub struct RevokeArgs {
    pub role: String,
    #[command(flatten)]
    pub keys: KeyArgs,
}

fn print(ctx: &Context, shown: &Shown<'_>, resp: &AuthResponse) -> Result<()> {
    ctx.print(|p, w| p.auth(w, shown, resp))
}

pub async fn auth(ctx: &Context, cmd: &AuthCommand) -> Result<()> {
    let client = ctx.client()?;
    let (shown, resp) = match cmd {
        AuthCommand::Enable => (Shown::Enable, client.auth_enable().await?),
        AuthCommand::Disable => (Shown::Disable, client.auth_disable().await?),
        AuthCommand::Status => (Shown::Status, client.auth_status().await?),
    };
    print(ctx, &shown, &resp)
}

pub async fn user(ctx: &Context, cmd: &UserCommand) -> Result<()> {
    if let UserCommand::Add(args) = cmd
        && args.name.contains(':')
    {
        bail!(
            "etch users have no password: a user is a client certificate's common name (etchctl user add NAME --no-password)"
        );
    }
    let client = ctx.client()?;
    let (shown, resp) = match cmd {
        UserCommand::Add(a) => (Shown::UserAdd(&a.name), client.user_add(&a.name).await?),
        UserCommand::Delete(a) => (
            Shown::UserDelete(&a.name),
            client.user_delete(&a.name).await?,
        ),
        UserCommand::Get(a) => (Shown::UserGet(&a.name), client.user_get(&a.name).await?),
        UserCommand::List => (Shown::UserList, client.user_list().await?),
        UserCommand::GrantRole(a) => (
            Shown::UserGrantRole {
                user: &a.user,
                role: &a.role,
            },
            client.user_grant_role(&a.user, &a.role).await?,
        ),
        UserCommand::RevokeRole(a) => (
            Shown::UserRevokeRole {
                user: &a.user,
                role: &a.role,
            },
            client.user_revoke_role(&a.user, &a.role).await?,
        ),
    };
    print(ctx, &shown, &resp)
}

pub async fn role(ctx: &Context, cmd: &RoleCommand) -> Result<()> {
    let client = ctx.client()?;
    match cmd {
        RoleCommand::Add(a) => print(
            ctx,
            &Shown::RoleAdd(&a.name),
            &client.role_add(&a.name).await?,
        ),
        RoleCommand::Delete(a) => print(
            ctx,
            &Shown::RoleDelete(&a.name),
            &client.role_delete(&a.name).await?,
        ),
        RoleCommand::Get(a) => print(
            ctx,
            &Shown::RoleGet(&a.name),
            &client.role_get(&a.name).await?,
        ),
        RoleCommand::List => print(ctx, &Shown::RoleList, &client.role_list().await?),
        RoleCommand::GrantPermission(a) => {
            let Some(perm_type) = PermissionType::parse(&a.perm_type) else {
                bail!(
                    "permission type must be read, write or readwrite, got {:?}",
                    a.perm_type
                );
            };
            let (key, end) = a.keys.range()?;
            let resp = client
                .role_grant_permission(&a.role, perm_type, key, end)
                .await?;
            print(ctx, &Shown::RoleGrantPermission(&a.role), &resp)
        }
        RoleCommand::RevokePermission(a) => {
            let (key, end) = a.keys.range()?;
            let resp = (client.role_revoke_permission(&a.role, key.clone(), end.clone())).await?;
            let shown = Shown::RoleRevokePermission {
                role: &a.role,
                key: &key,
                end: &end,
            };
            print(ctx, &shown, &resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Role {
        #[command(subcommand)]
        cmd: RoleCommand,
    }

    fn range(args: &[&str]) -> Result<(Vec<u8>, Vec<u8>)> {
        let argv = ["role", "grant-permission", "app", "read"]
            .iter()
            .chain(args);
        let Role {
            cmd: RoleCommand::GrantPermission(grant),
        } = Role::try_parse_from(argv).expect("parse")
        else {
            panic!("not a grant");
        };
        grant.keys.range()
    }

    #[test]
    fn keys_ranges_and_prefixes_follow_etcdctl() {
        assert_eq!(range(&["/k"]).expect("key"), (b"/k".to_vec(), Vec::new()));
        assert_eq!(
            range(&["/a", "/b"]).expect("range"),
            (b"/a".to_vec(), b"/b".to_vec())
        );
        assert_eq!(
            range(&["/a/", "--prefix"]).expect("prefix"),
            (b"/a/".to_vec(), b"/a0".to_vec())
        );
        assert_eq!(
            range(&["/a", "--from-key"]).expect("from"),
            (b"/a".to_vec(), vec![0])
        );
        assert_eq!(range(&["", "--prefix"]).expect("all"), (vec![0], vec![0]));
        assert!(range(&["/a", "/b", "--prefix"]).is_err());
        assert!(range(&["/a", "--prefix", "--from-key"]).is_err());
        assert!(range(&[""]).is_err());
    }
}
