//! The authorization state in the store: one record in `kv_meta` ([`META_AUTH`]), cached
//! in memory, changed by applying auth requests from the Raft log (see [`crate::auth`]).

use std::sync::{Arc, PoisonError};

use etch_proto::auth::AuthRequest;
use etch_proto::{Response, auth::AuthResponse};

use super::error::Result;
use super::layout::{META_APPLIED, META_AUTH, Spaces, decode, encode};
use super::store::{Outcome, Store};
use crate::auth::AuthState;

impl Store {
    /// The authorization state as of the last applied change.
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth_cell()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A receiver told the auth revision after every change (and after an import).
    pub fn subscribe_auth(&self) -> tokio::sync::watch::Receiver<u64> {
        self.auth_signal().subscribe()
    }

    /// Applies an auth change (from the Raft log) and records `applied` in the same batch;
    /// a change that cannot be made records `applied` alone and fails, the same way on
    /// every replica.
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply_auth(&self, req: &AuthRequest, applied: &[u8]) -> Outcome<Response> {
        let _guard = self.lock();
        let spaces = self.spaces();
        let mut batch = spaces.db.batch();
        let outcome = self.auth().change(req);
        if let Ok(next) = &outcome {
            batch.insert(&spaces.meta, META_AUTH, encode(next)?);
        }
        batch.insert(&spaces.meta, META_APPLIED, applied);
        super::gate::commit(batch)?;
        Ok(outcome.map(|next| {
            let revision = next.revision;
            self.set_auth(Arc::new(next));
            let mut resp = AuthResponse::default();
            resp.header.revision = self.revision();
            resp.auth_revision = revision;
            Response::Auth(resp)
        }))
    }

    /// Replaces the cached state and tells the subscribers.
    pub(super) fn set_auth(&self, state: Arc<AuthState>) {
        let revision = state.revision;
        *self
            .auth_cell()
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state;
        self.auth_signal().send_replace(revision);
    }
}

/// The stored state of `spaces`, or the secure default when none was ever stored.
pub(super) fn load(spaces: &Spaces, snapshot: &fjall::Snapshot) -> Result<AuthState> {
    match fjall::Readable::get(snapshot, &spaces.meta, META_AUTH)? {
        Some(raw) => decode(&raw),
        None => Ok(AuthState::default()),
    }
}
