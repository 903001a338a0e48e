//! `member list|add|promote|remove|update`: etcdctl's membership verbs.
//!
//! etch members have one peer and one client address each, `host:port` without a scheme;
//! `--peer-urls` accepts etcdctl's URL form and keeps only the address. Member IDs are
//! printed and read in hex, as etcdctl does.

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use etch_client::NodeId;
use etch_client::proto::MemberAddRequest;

use crate::context::Context;
use crate::print::MemberChange;

/// `member ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum MemberCommand {
    /// Add a member to the cluster: prints its ID, then the etchd command line that starts
    /// it (with --initial-cluster-state existing).
    Add(AddArgs),
    /// List the members: ID, status (unstarted until the member has been heard from), name,
    /// peer address, client address and whether it is a learner, one member per line.
    List,
    /// Promote a learner to a voting member; refused until it has caught up with the leader.
    Promote(IdArgs),
    /// Remove a member from the cluster.
    Remove(IdArgs),
    /// Move a member's peer endpoint (start the member listening there).
    Update(UpdateArgs),
}

/// `member update ID --peer-urls HOST:PORT`.
#[derive(Args, Clone, Debug)]
pub struct UpdateArgs {
    /// The member's ID, in hex as `member list` prints it.
    pub id: String,
    /// The member's new peer address, required (host:port; a scheme such as https:// is
    /// ignored).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_urls: Option<String>,
}

/// `member add NAME --peer-urls HOST:PORT [--learner]`.
#[derive(Args, Clone, Debug)]
pub struct AddArgs {
    /// The new member's name (its etchd --name).
    pub name: String,
    /// The new member's peer address, required (host:port; a scheme such as https:// is
    /// ignored).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_urls: Option<String>,
    /// Add the member as a learner, which does not vote until promoted.
    #[arg(long)]
    pub learner: bool,
}

impl AddArgs {
    pub fn request(&self) -> Result<MemberAddRequest> {
        let Some(urls) = self.peer_urls.as_deref().filter(|u| !u.trim().is_empty()) else {
            bail!("member peer urls not provided");
        };
        let addrs: Vec<&str> = urls.split(',').map(str::trim).collect();
        let [url] = addrs[..] else {
            bail!(
                "an etch member has one peer address, got {} ({urls})",
                addrs.len()
            );
        };
        let addr = etch_host::node::strip_scheme(url);
        if addr.is_empty() {
            bail!("member peer urls not provided");
        }
        Ok(MemberAddRequest {
            name: self.name.clone(),
            peer_addr: addr,
            is_learner: self.learner,
        })
    }
}

/// `member promote|remove ID`, `move-leader ID`.
#[derive(Args, Clone, Debug)]
pub struct IdArgs {
    /// The member's ID, in hex as `member list` prints it.
    pub id: String,
}

impl IdArgs {
    pub fn id(&self) -> Result<NodeId> {
        member_id(&self.id)
    }
}

/// A member ID as etcdctl reads one: hex.
fn member_id(id: &str) -> Result<NodeId> {
    NodeId::from_str_radix(id, 16)
        .with_context(|| format!("bad member ID arg ({id}), expecting ID in Hex"))
}

pub async fn run(ctx: &Context, cmd: &MemberCommand) -> Result<()> {
    match cmd {
        MemberCommand::Add(args) => {
            let req = args.request()?;
            let client = ctx.client()?;
            let mut add = client.member_add(req.name, req.peer_addr);
            if req.is_learner {
                add = add.learner();
            }
            let resp = add.await?;
            let cacert = ctx.global.cacert.clone();
            ctx.print(|p, w| p.member_add(w, &resp, &args.name, &cacert))
        }
        MemberCommand::List => {
            let resp = ctx.client()?.member_list().await?;
            ctx.print(|p, w| p.member_list(w, &resp))
        }
        MemberCommand::Promote(args) => {
            let id = args.id()?;
            let resp = ctx.client()?.member_promote(id).await?;
            ctx.print(|p, w| p.member_changed(w, id, MemberChange::Promoted, &resp))
        }
        MemberCommand::Remove(args) => {
            let id = args.id()?;
            let resp = ctx.client()?.member_remove(id).await?;
            ctx.print(|p, w| p.member_changed(w, id, MemberChange::Removed, &resp))
        }
        MemberCommand::Update(args) => {
            let id = member_id(&args.id)?;
            let Some(url) = args.peer_urls.as_deref().filter(|u| !u.trim().is_empty()) else {
                bail!("member peer urls not provided");
            };
            let resp = (ctx.client()?)
                .member_update(id, etch_host::node::strip_scheme(url.trim()))
                .await?;
            ctx.print(|p, w| p.member_changed(w, id, MemberChange::Updated, &resp))
        }
    }
}

/// `move-leader ID`: prints etcdctl's line.
pub async fn move_leader(ctx: &Context, args: &IdArgs) -> Result<()> {
    let id = args.id()?;
    let resp = ctx.client()?.move_leader(id).await?;
    ctx.print(|_, w| {
        writeln!(
            w,
            "Leadership transferred from {:x} to {id:x}",
            resp.header.member_id
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Member {
        #[command(subcommand)]
        cmd: MemberCommand,
    }

    fn parse(args: &[&str]) -> MemberCommand {
        Member::try_parse_from(std::iter::once("member").chain(args.iter().copied()))
            .expect("parse")
            .cmd
    }

    fn add_request(args: &[&str]) -> Result<MemberAddRequest> {
        let MemberCommand::Add(add) = parse(&[&["add"], args].concat()) else {
            panic!("not an add")
        };
        add.request()
    }

    #[test]
    fn add_flags_make_the_request() {
        assert_eq!(
            add_request(&["n4", "--peer-urls", "10.0.0.4:7380"]).expect("request"),
            MemberAddRequest {
                name: "n4".into(),
                peer_addr: "10.0.0.4:7380".into(),
                is_learner: false,
            }
        );
        let learner =
            add_request(&["n4", "--peer-urls=https://[::1]:7380/", "--learner"]).expect("request");
        assert_eq!(
            (learner.peer_addr.as_str(), learner.is_learner),
            ("[::1]:7380", true)
        );
    }

    #[test]
    fn add_needs_exactly_one_peer_address() {
        let err = add_request(&["n4"]).expect_err("no peer urls");
        assert_eq!(err.to_string(), "member peer urls not provided");
        let err = add_request(&["n4", "--peer-urls", "http://"]).expect_err("empty");
        assert_eq!(err.to_string(), "member peer urls not provided");
        let err = add_request(&["n4", "--peer-urls", "a:1,b:2"]).expect_err("two");
        assert!(err.to_string().contains("one peer address"), "{err}");
        assert!(Member::try_parse_from(["member", "add", "--peer-urls", "a:1"]).is_err());
    }

    #[test]
    fn ids_are_hex() {
        let MemberCommand::Promote(args) = parse(&["promote", "8e9e05c52164694d"]) else {
            panic!("not a promote")
        };
        assert_eq!(args.id().expect("id"), 0x8e9e05c52164694d);
        let MemberCommand::Remove(args) = parse(&["remove", "zz"]) else {
            panic!("not a remove")
        };
        let err = args.id().expect_err("bad id");
        assert!(
            err.to_string()
                .starts_with("bad member ID arg (zz), expecting ID in Hex"),
            "{err}"
        );
        assert!(matches!(parse(&["list"]), MemberCommand::List));
    }
}
