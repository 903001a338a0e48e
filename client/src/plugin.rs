//! The plugin management requests (etchctl's `plugin` verbs) as builders: `.await` them, or
//! take the wire [`Request`] with `into_request`.
//!
//! Installing, removing and resetting go through the Raft log on the leader; listing is answered by
//! the leader, with its call counters.

use std::future::IntoFuture;
use std::time::Duration;

use etch_proto::plugin::{
    FailurePolicy, PluginBinding, PluginHook, PluginInstallRequest, PluginInstallResponse,
    PluginListRequest, PluginListResponse, PluginMode, PluginRemoveRequest, PluginRemoveResponse,
    PluginResetRequest, PluginResetResponse,
};
use etch_proto::{Request, Response, Revision};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{ResponseFuture, request_future};

impl Client {
    /// Uploads the plugin component `wasm` and binds it as `name` to the keys starting
    /// with `prefix` (replacing a binding of that name). Defaults: a validator
    /// ([`PluginInstall::react`] makes it a reactor), enforce, fail closed, the limits of
    /// [`etch_proto::plugin::PluginLimits::default`].
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the component does not compile or does not fit its hook's
    /// world (`validator` or `reactor`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let wasm = std::fs::read("target/plugins/json-schema.wasm").expect("built plugin");
    /// client
    ///     .plugin_install("services", wasm, "/services/")
    ///     .config("schema", r#"{"type":"object","required":["host"]}"#)
    ///     .timeout(std::time::Duration::from_millis(50))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn plugin_install(
        &self,
        name: impl Into<String>,
        wasm: impl Into<Vec<u8>>,
        prefix: impl Into<Vec<u8>>,
    ) -> PluginInstall<'_> {
        PluginInstall {
            client: self,
            req: PluginInstallRequest {
                binding: PluginBinding {
                    name: name.into(),
                    prefix: prefix.into(),
                    ..Default::default()
                },
                wasm: wasm.into(),
                installed_by: String::new(),
            },
        }
    }

    /// The installed bindings, with the leader's call counters.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// for p in client.plugin_list().await?.plugins {
    ///     println!("{} on {:?}: {} calls", p.binding.name, p.binding.prefix, p.calls);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn plugin_list(&self) -> PluginList<'_> {
        PluginList {
            client: self,
            req: PluginListRequest {},
        }
    }

    /// Removes binding `name`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// client.plugin_remove("services").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn plugin_remove(&self, name: impl Into<String>) -> PluginRemove<'_> {
        PluginRemove {
            client: self,
            req: PluginRemoveRequest { name: name.into() },
        }
    }

    /// Moves reactor `name`'s checkpoint to `revision` (root only): it goes on with the
    /// changes after it, skipping a batch it cannot take (or, backwards, taking changes
    /// again). A parked reactor is unparked. The response names the checkpoint before.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let now = client.status().await?.header.revision;
    /// let reset = client.plugin_reset("audit", now).await?;
    /// println!("skipped revisions {}..={now}", reset.previous + 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn plugin_reset(&self, name: impl Into<String>, revision: Revision) -> PluginReset<'_> {
        PluginReset {
            client: self,
            req: PluginResetRequest {
                name: name.into(),
                revision,
            },
        }
    }
}

/// A plugin installation being built; see [`Client::plugin_install`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct PluginInstall<'a> {
    client: &'a Client,
    req: PluginInstallRequest,
}

impl PluginInstall<'_> {
    /// Adds a setting the plugin reads through its `config` import.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.req.binding.config.retain(|(k, _)| *k != name);
        self.req.binding.config.push((name, value.into()));
        self.req.binding.config.sort();
        self
    }

    /// Fuel per call (about one unit per WebAssembly instruction).
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.req.binding.limits.fuel = fuel;
        self
    }

    /// Deadline per call, in whole milliseconds of the call's CPU time (a call starved of
    /// CPU also ends after ten times as long in wall time, at most 2.5 s or the deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.req.binding.limits.timeout_ms = timeout.as_millis().max(1) as u64;
        self
    }

    /// Memory cap per call, in MiB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.req.binding.limits.memory_mb = mb;
        self
    }

    /// Makes the plugin a reactor (world `reactor`): it runs on the leader after changes
    /// under the prefix commit, instead of judging writes before.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let wasm = std::fs::read("target/plugins/audit-log.wasm").expect("built plugin");
    /// client
    ///     .plugin_install("audit", wasm, "/app/")
    ///     .react()
    ///     .config("audit-prefix", "/audit/")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn react(self) -> Self {
        self.hook(PluginHook::React)
    }

    /// When the plugin runs.
    pub fn hook(mut self, hook: PluginHook) -> Self {
        self.req.binding.hook = hook;
        self
    }

    /// Audit mode: refusals are logged and counted, never enforced.
    pub fn audit(mut self) -> Self {
        self.req.binding.mode = PluginMode::Audit;
        self
    }

    /// A failing plugin (trap, fuel, deadline, memory) lets the write through (validators).
    pub fn fail_open(mut self) -> Self {
        self.req.binding.on_error = FailurePolicy::FailOpen;
        self
    }

    /// A reactor whose batch fails `after` times in a row is parked instead of retried
    /// for ever: `plugin list` shows it, and [`Client::plugin_reset`] moves it on.
    pub fn park_after(mut self, after: u32) -> Self {
        self.req.binding.on_error = FailurePolicy::Park { after };
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::PluginInstall(self.req)
    }
}
request_future!(PluginInstall, PluginInstall, PluginInstallResponse);

/// A plugin listing being built; see [`Client::plugin_list`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct PluginList<'a> {
    client: &'a Client,
    req: PluginListRequest,
}

impl PluginList<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::PluginList(self.req)
    }
}
request_future!(PluginList, PluginList, PluginListResponse);

/// A plugin removal being built; see [`Client::plugin_remove`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct PluginRemove<'a> {
    client: &'a Client,
    req: PluginRemoveRequest,
}

impl PluginRemove<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::PluginRemove(self.req)
    }
}
request_future!(PluginRemove, PluginRemove, PluginRemoveResponse);

/// A reactor reset being built; see [`Client::plugin_reset`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct PluginReset<'a> {
    client: &'a Client,
    req: PluginResetRequest,
}

impl PluginReset<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::PluginReset(self.req)
    }
}
request_future!(PluginReset, PluginReset, PluginResetResponse);
