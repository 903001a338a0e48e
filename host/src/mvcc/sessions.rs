//! Sessions: the outcomes of recent writes by request id, so that a write a client sends
//! again after losing its answer (a leader killed mid-request) applies once, and the retry
//! gets the first answer.
//!
//! A client (an SDK `Client`) names itself with a random 64-bit id and numbers its writes
//! 1, 2, 3, ...; a write so named carries a [`RequestId`] into the Raft log. Applying it
//! first looks for the outcome recorded under that id: found, it is the answer and nothing
//! is applied; not found, the write applies and its outcome (answer or refusal) is recorded
//! in the same atomic batch, so a crash can never leave one without the other. Every replica
//! does the same with the same entries: deduplication is part of the replicated state, and
//! snapshots carry it (the `sessions` keyspace is one of [`super::layout::Spaces::all`]).
//!
//! Bounds, all deterministic:
//! - per client, the outcomes of its newest [`WINDOW`] requests: recording request `n`
//!   drops request `n - WINDOW`; a request older than that, not found, is refused (it may
//!   have applied: its outcome is unknown) rather than applied again;
//! - per client, a record of its newest request and when it was last seen (the leader's
//!   clock, stamped into the entry); clients not seen since a cut-off are forgotten by a
//!   `SessionsExpire` entry the leader proposes now and then, a bounded number per entry.

use std::collections::HashMap;

use etch_proto::{Error as ProtoError, Response};
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::layout::{Spaces, decode, encode};

/// Outcomes kept per client.
pub const WINDOW: u64 = 1024;
/// Clients one `SessionsExpire` entry forgets at most.
pub const EXPIRE_BATCH: usize = 1024;

/// Who sent a write, and which of its writes it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
    /// The leader's clock when it proposed the write (ms since the Unix epoch).
    pub stamp_ms: u64,
}

/// What is kept of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRecord {
    newest: u64,
    last_seen_ms: u64,
}

/// An outcome as recorded: the answer the write got, or its refusal.
pub type Recorded = std::result::Result<Response, ProtoError>;

fn client_key(client: u64) -> [u8; 9] {
    let mut key = [b'c'; 9];
    key[1..].copy_from_slice(&client.to_be_bytes());
    key
}

fn outcome_key(client: u64, seq: u64) -> [u8; 17] {
    let mut key = [b'o'; 17];
    key[1..9].copy_from_slice(&client.to_be_bytes());
    key[9..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Looks up and records outcomes within one atomic batch; sees what it recorded itself
/// before the batch commits (a batch of puts may hold several writes of one client).
pub(crate) struct Recorder<'a> {
    spaces: &'a Spaces,
    clients: HashMap<u64, ClientRecord>,
    outcomes: HashMap<(u64, u64), Recorded>,
}

impl<'a> Recorder<'a> {
    pub fn new(spaces: &'a Spaces) -> Self {
        Recorder {
            spaces,
            clients: HashMap::new(),
            outcomes: HashMap::new(),
        }
    }

    fn client(&mut self, client: u64) -> Result<ClientRecord> {
        if let Some(record) = self.clients.get(&client) {
            return Ok(*record);
        }
        let record = match self.spaces.sessions.get(client_key(client))? {
            Some(bytes) => decode(&bytes)?,
            None => ClientRecord::default(),
        };
        self.clients.insert(client, record);
        Ok(record)
    }

    /// The outcome already recorded for `id`, if any; a refusal for a request too old to
    /// tell.
    ///
    /// # Errors
    ///
    /// A storage failure or a record that does not decode.
    pub fn lookup(&mut self, id: &RequestId) -> Result<Option<Recorded>> {
        if let Some(found) = self.outcomes.get(&(id.client, id.seq)) {
            return Ok(Some(found.clone()));
        }
        if let Some(bytes) = self.spaces.sessions.get(outcome_key(id.client, id.seq))? {
            return Ok(Some(decode(&bytes)?));
        }
        let newest = self.client(id.client)?.newest;
        if id.seq.saturating_add(WINDOW) <= newest {
            return Ok(Some(Err(ProtoError::InvalidArgument(format!(
                "request {} of client {:x} is older than the {WINDOW} requests kept for it (its newest is {newest}): whether it applied is not known",
                id.seq, id.client
            )))));
        }
        Ok(None)
    }

    /// Notes `outcome` for `id`; [`Recorder::write`] puts every noted outcome into the
    /// batch.
    ///
    /// # Errors
    ///
    /// A storage failure or a record that does not decode.
    pub fn record(&mut self, id: &RequestId, outcome: &Recorded) -> Result<()> {
        let mut client = self.client(id.client)?;
        client.newest = client.newest.max(id.seq);
        client.last_seen_ms = client.last_seen_ms.max(id.stamp_ms);
        self.clients.insert(id.client, client);
        self.outcomes.insert((id.client, id.seq), outcome.clone());
        Ok(())
    }

    /// Writes the noted outcomes and client records into `batch`, dropping for each outcome
    /// the one [`WINDOW`] requests behind it (removals first, so a batch never drops what it
    /// records).
    ///
    /// # Errors
    ///
    /// A record that does not encode.
    pub fn write(self, batch: &mut fjall::OwnedWriteBatch) -> Result<()> {
        let sessions = &self.spaces.sessions;
        for &(client, seq) in self.outcomes.keys() {
            if seq >= WINDOW {
                batch.remove(sessions, outcome_key(client, seq - WINDOW).to_vec());
            }
        }
        for ((client, seq), outcome) in &self.outcomes {
            batch.insert(
                sessions,
                outcome_key(*client, *seq).to_vec(),
                encode(outcome)?,
            );
        }
        for (client, record) in &self.clients {
            if self.outcomes.keys().any(|(c, _)| c == client) {
                batch.insert(sessions, client_key(*client).to_vec(), encode(record)?);
            }
        }
        Ok(())
    }
}

/// Forgets, into `batch`, at most [`EXPIRE_BATCH`] clients last seen before `before_ms`,
/// with their outcomes; answers how many.
///
/// # Errors
///
/// A storage failure or a record that does not decode.
pub(crate) fn expire(
    spaces: &Spaces,
    batch: &mut fjall::OwnedWriteBatch,
    before_ms: u64,
) -> Result<usize> {
    let sessions = &spaces.sessions;
    let mut forgotten = 0;
    for item in sessions.prefix(b"c") {
        if forgotten == EXPIRE_BATCH {
            break;
        }
        let (key, value) = item.into_inner()?;
        let record: ClientRecord = decode(&value)?;
        if record.last_seen_ms >= before_ms {
            continue;
        }
        batch.remove(sessions, key.to_vec());
        let mut prefix = [b'o'; 9];
        prefix[1..].copy_from_slice(&key[1..]);
        for outcome in sessions.prefix(prefix) {
            batch.remove(sessions, outcome.key()?.to_vec());
        }
        forgotten += 1;
    }
    Ok(forgotten)
}

#[cfg(test)]
#[path = "sessions_test.rs"]
mod tests;
