//! `auth`, `user` and `role` output: etcdctl's `printer_simple.go` lines, and its JSON of
//! the `Auth*Response` structs (`printer_json.go`; the header, then the fields a response
//! has, `omitempty`).

use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use etch_proto::auth::{AuthResponse, Permission, PermissionType};
use serde::Serialize;

use super::json::{Header, print, zero};

/// Which auth command produced a response, with the names it was given (the simple format
/// repeats them, as etcdctl does).
#[derive(Clone, Debug)]
pub enum Shown<'a> {
    Enable,
    Disable,
    Status,
    UserAdd(&'a str),
    UserDelete(&'a str),
    UserGet(&'a str),
    UserList,
    UserGrantRole {
        user: &'a str,
        role: &'a str,
    },
    UserRevokeRole {
        user: &'a str,
        role: &'a str,
    },
    RoleAdd(&'a str),
    RoleDelete(&'a str),
    RoleGet(&'a str),
    RoleList,
    RoleGrantPermission(&'a str),
    RoleRevokePermission {
        role: &'a str,
        key: &'a [u8],
        end: &'a [u8],
    },
}

pub(super) fn simple(w: &mut dyn Write, shown: &Shown<'_>, resp: &AuthResponse) -> io::Result<()> {
    match *shown {
        Shown::Enable => writeln!(w, "Authentication Enabled"),
        Shown::Disable => writeln!(w, "Authentication Disabled"),
        Shown::Status => {
            writeln!(w, "Authentication Status: {}", resp.enabled)?;
            writeln!(w, "AuthRevision: {}", resp.auth_revision)
        }
        Shown::UserAdd(name) => writeln!(w, "User {name} created"),
        Shown::UserDelete(name) => writeln!(w, "User {name} deleted"),
        Shown::UserGet(name) => {
            writeln!(w, "User: {name}")?;
            write!(w, "Roles:")?;
            for role in &resp.names {
                write!(w, " {role}")?;
            }
            writeln!(w)
        }
        Shown::UserList | Shown::RoleList => {
            for name in &resp.names {
                writeln!(w, "{name}")?;
            }
            Ok(())
        }
        Shown::UserGrantRole { user, role } => {
            writeln!(w, "Role {role} is granted to user {user}")
        }
        Shown::UserRevokeRole { user, role } => {
            writeln!(w, "Role {role} is revoked from user {user}")
        }
        Shown::RoleAdd(name) => writeln!(w, "Role {name} created"),
        Shown::RoleDelete(name) => writeln!(w, "Role {name} deleted"),
        Shown::RoleGet(name) => role_get(w, name, &resp.permissions),
        Shown::RoleGrantPermission(role) => writeln!(w, "Role {role} updated"),
        Shown::RoleRevokePermission { role, key, end } => {
            let (key, end) = (String::from_utf8_lossy(key), String::from_utf8_lossy(end));
            match &*end {
                "" => writeln!(w, "Permission of key {key} is revoked from role {role}"),
                "\0" => writeln!(
                    w,
                    "Permission of range [{key}, <open ended> is revoked from role {role}"
                ),
                end => writeln!(
                    w,
                    "Permission of range [{key}, {end}) is revoked from role {role}"
                ),
            }
        }
    }
}

/// etcdctl's `RoleGet`: the read permissions, then the write ones.
fn role_get(w: &mut dyn Write, name: &str, perms: &[Permission]) -> io::Result<()> {
    writeln!(w, "Role {name}")?;
    for (title, wanted) in [
        (
            "KV Read:",
            PermissionType::reads as fn(PermissionType) -> bool,
        ),
        ("KV Write:", PermissionType::writes),
    ] {
        writeln!(w, "{title}")?;
        for p in perms.iter().filter(|p| wanted(p.perm_type)) {
            let key = String::from_utf8_lossy(&p.key);
            let end = String::from_utf8_lossy(&p.range_end);
            match &*end {
                "" => writeln!(w, "\t{key}")?,
                "\0" => write!(w, "\t[{key}, <open ended>")?,
                end => write!(w, "\t[{key}, {end})")?,
            }
            if !p.range_end.is_empty() {
                if !p.key.is_empty() && etch_proto::prefix_end(&p.key) == p.range_end {
                    write!(w, " (prefix {key})")?;
                }
                writeln!(w)?;
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Json {
    header: Header,
    #[serde(skip_serializing_if = "zero")]
    enabled: bool,
    #[serde(rename = "authRevision", skip_serializing_if = "zero")]
    auth_revision: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    perm: Vec<PermJson>,
}

/// `authpb.Permission`: `permType` is the enum's number (READ 0, WRITE 1, READWRITE 2).
#[derive(Serialize)]
struct PermJson {
    #[serde(rename = "permType", skip_serializing_if = "zero")]
    perm_type: i32,
    #[serde(skip_serializing_if = "zero")]
    key: String,
    #[serde(skip_serializing_if = "zero")]
    range_end: String,
}

pub(super) fn json(w: &mut dyn Write, shown: &Shown<'_>, resp: &AuthResponse) -> io::Result<()> {
    let names = resp.names.clone();
    let (mut roles, mut users) = (Vec::new(), Vec::new());
    match shown {
        Shown::UserGet(_) => roles = names,
        Shown::UserList => users = names,
        Shown::RoleList => roles = names,
        _ => {}
    }
    let status = matches!(shown, Shown::Status);
    print(
        w,
        &Json {
            header: (&resp.header).into(),
            enabled: status && resp.enabled,
            auth_revision: if status { resp.auth_revision } else { 0 },
            roles,
            users,
            perm: (resp.permissions.iter())
                .map(|p| PermJson {
                    perm_type: match p.perm_type {
                        PermissionType::Read => 0,
                        PermissionType::Write => 1,
                        PermissionType::ReadWrite => 2,
                    },
                    key: STANDARD.encode(&p.key),
                    range_end: STANDARD.encode(&p.range_end),
                })
                .collect(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple_of(shown: &Shown<'_>, resp: &AuthResponse) -> String {
        let mut out = Vec::new();
        simple(&mut out, shown, resp).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn simple_lines_are_etcdctls() {
        let resp = AuthResponse {
            enabled: true,
            auth_revision: 7,
            names: vec!["app".into(), "root".into()],
            permissions: vec![
                Permission {
                    perm_type: PermissionType::ReadWrite,
                    key: b"/app/".to_vec(),
                    range_end: b"/app0".to_vec(),
                },
                Permission {
                    perm_type: PermissionType::Read,
                    key: b"/config/db".to_vec(),
                    range_end: Vec::new(),
                },
                Permission {
                    perm_type: PermissionType::Write,
                    key: b"/logs".to_vec(),
                    range_end: b"\0".to_vec(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            simple_of(&Shown::Status, &resp),
            "Authentication Status: true\nAuthRevision: 7\n"
        );
        assert_eq!(
            simple_of(&Shown::UserGet("alice"), &resp),
            "User: alice\nRoles: app root\n"
        );
        assert_eq!(
            simple_of(&Shown::RoleGet("app"), &resp),
            "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n\t/config/db\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n\t[/logs, <open ended>\n"
        );
        assert_eq!(
            simple_of(
                &Shown::RoleRevokePermission {
                    role: "app",
                    key: b"/a",
                    end: b""
                },
                &resp
            ),
            "Permission of key /a is revoked from role app\n"
        );
        assert_eq!(
            simple_of(
                &Shown::UserGrantRole {
                    user: "alice",
                    role: "app"
                },
                &resp
            ),
            "Role app is granted to user alice\n"
        );
    }
}
