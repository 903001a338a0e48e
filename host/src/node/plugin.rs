//! Writes through the plugin gate, and the plugin management requests.
//!
//! [`Node::propose_write`] is the one call `on_leader` makes for a state-machine write. For
//! a Put, DeleteRange or Txn that writes, the leader judges it (`crate::plugin`) off the
//! async runtime, then proposes `Command::Write` with the resulting guard. If apply answers
//! `Conflict` (something the decision read changed, or the bindings did), the write is
//! judged again from the newer state, up to [`MAX_ATTEMPTS`] times; after that the client
//! gets `Conflict`, which it may retry. Any other write is proposed as before.
//!
//! Keys under `crate::mvcc::RESERVED_PREFIX` (reactor checkpoints) are etch's own: a
//! client put of one is refused with `InvalidArgument` (a delete range skips them, a range
//! never shows them: `mvcc/view.rs`). Reactors write through
//! [`Node::judge_and_propose`] directly (`reactor.rs`), validated like any write.
//!
//! Installing checks on the leader that the limits are within the node's maxima
//! (`crate::plugin::Maxima`) and that the component compiles and fits its hook's world
//! before proposing it, so a broken upload is refused with `InvalidArgument` instead of
//! being replicated (the compiled component stays in the cache, ready when the binding
//! takes effect). Listing is answered by the leader with its own call counters and, for
//! reactors, their checkpoints.

use etch_proto::plugin::{
    FailurePolicy, PluginHook, PluginInfo, PluginInstallRequest, PluginListResponse,
    PluginResetRequest, PluginResetResponse, PluginStatus,
};
use etch_proto::{Error, Mutation, PutRequest, Request, RequestOp, Response, TxnRequest};
use sha2::{Digest, Sha256};

use super::Node;
use super::route::Checked;
use crate::mvcc::is_reserved;
use crate::mvcc::{Read, RequestId, hex};
use crate::raft::{Command, Named};

/// How many times a write is judged and proposed before `Conflict` reaches the client.
const MAX_ATTEMPTS: usize = 5;

impl Node {
    /// Proposes a put, a delete or a txn (named by its client or not), through the
    /// validator plugins when it changes keys.
    pub(super) async fn propose_write(
        &self,
        principal: &str,
        request: Request,
        checked: Checked,
    ) -> Result<Response, Error> {
        // A write its client named: the same write, applied at most once per id.
        let (request, once) = match request {
            Request::Once(once) => {
                let id = RequestId {
                    client: once.client,
                    seq: once.seq,
                    stamp_ms: now_ms(),
                };
                (once.write.into_request(), Some(id))
            }
            other => (other, None),
        };
        self.check_quota(&request).await?;
        match request {
            // Read through the log, to be linearizable; no validator to ask.
            Request::Txn(t) if t.is_read_only() && once.is_none() => {
                self.propose(Mutation::Txn(t), checked).await
            }
            request => {
                refuse_reserved(&request)?;
                self.judge_and_propose(principal, request, &[], checked, once)
                    .await
            }
        }
    }

    /// Judges `request` with the validators and proposes it with the resulting guard, plus
    /// `reads` (what the write was decided on elsewhere, e.g. a reactor's reads), named
    /// `once` if its client named it. A write whose authorization a change of users or
    /// roles overtook comes back as `Conflict` at once, for the caller to check it again.
    pub(super) async fn judge_and_propose(
        &self,
        principal: &str,
        request: Request,
        reads: &[Read],
        checked: Checked,
        once: Option<RequestId>,
    ) -> Result<Response, Error> {
        // The limits were checked where the request entered (the client endpoint, a
        // forwarded request, a reactor's staged txn).
        let mut attempt = 1;
        loop {
            let unbound = self.inner.plugins.unbound(self.store(), &request)?;
            let mut guard = if let Some(guard) = unbound {
                guard
            } else {
                // On the plugin threads: a slow validator must not hold the blocking pool
                // that reads, leases and watches use.
                (self.inner.plugins)
                    .judge_on_executor(self.store(), principal, &request)
                    .await?
            };
            guard.reads.extend_from_slice(reads);
            principal.clone_into(&mut guard.principal);
            guard.check_size()?;
            let Ok(mutation) = Mutation::from_request(request.clone()) else {
                return Err(Error::Internal(format!(
                    "a {} cannot be judged and proposed",
                    request.method().1
                )));
            };
            let command = match once {
                None => Command::Write {
                    request: mutation,
                    guard,
                },
                Some(id) => Command::Once {
                    id,
                    write: Named::Write {
                        request: mutation,
                        guard,
                    },
                },
            };
            match self.propose_command(command, checked).await {
                Err(Error::Conflict) if attempt < MAX_ATTEMPTS && !self.auth_moved(checked) => {
                    tracing::debug!(attempt, "validated write conflicted; judging it again");
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    pub(super) async fn plugin_install(
        &self,
        principal: &str,
        mut install: PluginInstallRequest,
        checked: Checked,
    ) -> Result<Response, Error> {
        install.installed_by = principal.to_owned();
        // The leader's maxima, at entry only: apply must not depend on a node's flags (a
        // binding above another node's maxima is clamped there at call time).
        match (install.binding.hook, install.binding.on_error) {
            (PluginHook::Validate, FailurePolicy::Park { .. }) => {
                return Err(Error::InvalidArgument(format!(
                    "plugin {}: only a reactor can be parked (--park-after is for --hook react)",
                    install.binding.name
                )));
            }
            (PluginHook::React, FailurePolicy::Park { after: 0 }) => {
                return Err(Error::InvalidArgument(format!(
                    "plugin {}: --park-after must be at least 1",
                    install.binding.name
                )));
            }
            _ => {}
        }
        let maxima = self.inner.plugins.maxima();
        if let Err(e) = maxima.check(&install.binding.limits) {
            return Err(Error::InvalidArgument(format!(
                "plugin {}: {e}",
                install.binding.name
            )));
        }
        let plugins = self.inner.plugins.clone();
        let wasm = install.wasm.clone();
        let hook = install.binding.hook;
        let compiled = tokio::task::spawn_blocking(move || {
            let sha256 = Sha256::digest(&wasm);
            plugins.check(&sha256, hook, &wasm)
        })
        .await
        .map_err(|e| Error::Internal(format!("plugin check: {e}")))?;
        if let Err(e) = compiled {
            return Err(Error::InvalidArgument(format!(
                "plugin {}: {e}",
                install.binding.name
            )));
        }
        tracing::info!(plugin = %install.binding.name, hook = install.binding.hook.name(), prefix = %String::from_utf8_lossy(&install.binding.prefix), "installing plugin");
        self.propose_command(Command::PluginInstall(install), checked)
            .await
    }

    /// Moves reactor `reset.name`'s checkpoint to `reset.revision`: a put of its checkpoint
    /// key through the normal write path, as the reactor's own commits are. The reactor
    /// loop sees the key move (`node/reactor.rs`), drops its cursor (and a parked state),
    /// and goes on after the new checkpoint.
    pub(super) async fn plugin_reset(
        &self,
        reset: PluginResetRequest,
        checked: Checked,
    ) -> Result<Response, Error> {
        let (_, records) = self.store().plugin_bindings().map_err(super::storage)?;
        let name = reset.name.as_str();
        let Some(record) = records.iter().find(|r| r.binding.name == name) else {
            return Err(Error::InvalidArgument(format!(
                "plugin {name:?} is not installed"
            )));
        };
        if record.binding.hook != PluginHook::React {
            return Err(Error::InvalidArgument(format!(
                "plugin {name} is a validator: only a reactor has a checkpoint to reset"
            )));
        }
        let current = self.store().revision();
        if !(0..=current).contains(&reset.revision) {
            return Err(Error::InvalidArgument(format!(
                "revision {} is not between 0 and the current revision {current}",
                reset.revision
            )));
        }
        let previous = crate::plugin::read_checkpoint(self.store(), name)
            .map_err(super::storage)?
            .revision;
        let txn = Request::Txn(TxnRequest {
            success: vec![RequestOp::Put(PutRequest {
                key: crate::plugin::checkpoint_key(name),
                value: reset.revision.to_string().into_bytes(),
                ..Default::default()
            })],
            ..Default::default()
        });
        tracing::info!(
            plugin = name,
            from = previous,
            to = reset.revision,
            "resetting reactor checkpoint"
        );
        let mut answer = self
            .judge_and_propose(&format!("reactor:{name}"), txn, &[], checked, None)
            .await?;
        let header = answer.header_mut().clone();
        Ok(Response::PluginReset(PluginResetResponse {
            header,
            previous,
        }))
    }

    /// Linearizable, as `member list`: the leader confirms it leads, then answers.
    pub(super) async fn plugin_list(&self) -> Result<Response, Error> {
        self.confirm_leadership().await?;
        let (bindings_version, records) = self.store().plugin_bindings().map_err(super::storage)?;
        let mut plugins = Vec::with_capacity(records.len());
        for r in records {
            let stats = self.inner.plugins.stats_of(&r.binding.name);
            let checkpoint = if r.binding.hook == PluginHook::React {
                crate::plugin::read_checkpoint(self.store(), &r.binding.name)
                    .map_err(super::storage)?
                    .revision
            } else {
                0
            };
            let status = if stats.parked {
                PluginStatus::Parked
            } else if stats.stalled {
                PluginStatus::Stalled
            } else if stats.last_error.is_empty() {
                PluginStatus::Ok
            } else {
                PluginStatus::Retrying
            };
            plugins.push(PluginInfo {
                status,
                sha256: hex(&r.sha256),
                size: r.size,
                calls: stats.calls,
                denials: stats.denials,
                failures: stats.failures,
                checkpoint,
                last_error: stats.last_error,
                binding: r.binding,
            });
        }
        let mut resp = PluginListResponse {
            plugins,
            bindings_version,
            ..Default::default()
        };
        resp.header.revision = self.store().revision();
        Ok(Response::PluginList(resp))
    }
}

/// Refuses a client put of one of etch's reserved keys (a delete range may cover them: it
/// skips them, see `mvcc::RESERVED_PREFIX`).
fn refuse_reserved(request: &Request) -> Result<(), Error> {
    let refused = match request {
        Request::Put(p) => is_reserved(&p.key),
        Request::Txn(t) => puts_reserved(t),
        _ => false,
    };
    if refused {
        return Err(Error::InvalidArgument(
            "keys under \"\\0etch/\" are reserved for etch (reactor checkpoints)".into(),
        ));
    }
    Ok(())
}

/// Whether a branch of `t`, or of a txn nested in it, puts one of etch's own keys.
fn puts_reserved(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Put(p) => is_reserved(&p.key),
        RequestOp::Txn(inner) => puts_reserved(inner),
        RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
    })
}

/// Compiles the bound components whenever the bindings change, so that a node that becomes
/// leader finds them ready. Runs until the state machine stops.
pub(super) async fn warm_plugins(node: Node, mut applied: tokio::sync::watch::Receiver<i64>) {
    let mut seen = None;
    loop {
        let version = Some(node.store().bindings_version());
        if version != seen {
            seen = version;
            let (plugins, store) = (node.inner.plugins.clone(), node.store().clone());
            if tokio::task::spawn_blocking(move || plugins.warm(&store))
                .await
                .is_err()
            {
                return;
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// The leader's clock, in ms since the Unix epoch: the stamp of a named write (when its
/// client was last seen, for the sessions' expiry).
pub(super) fn now_ms() -> u64 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map_or(0, |d| d.as_millis() as u64)
}
