//! Transactions: `when` every compare holds, run the `and_then` ops, else the `or_else` ops,
//! all at one revision.

use std::future::IntoFuture;

use etch_proto::{
    CompareResult, CompareTarget, DeleteRangeRequest, LeaseId, PutRequest, RangeRequest, Request,
    RequestOp, Response, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{ResponseFuture, from_key, prefix, request_future};

/// One condition of a transaction.
///
/// # Examples
///
/// ```
/// use etch_client::{Compare, CompareResult};
/// // The key does not exist yet (etcd's idiom: its create revision is 0).
/// let absent = Compare::create_revision("lock", CompareResult::Equal, 0);
/// let owner = Compare::value("lock", CompareResult::Equal, "me");
/// # let _ = (absent, owner);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare(etch_proto::Compare);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Compare(etch_proto::Compare {
            key: key.into(),
            range_end: Vec::new(),
            result,
            target,
        })
    }

    /// Compares the key's value with `value`. A missing key never matches.
    pub fn value(
        key: impl Into<Vec<u8>>,
        result: CompareResult,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        Self::new(key, result, CompareTarget::Value(value.into()))
    }

    /// Compares the key's version (number of modifications; 0 when missing).
    pub fn version(key: impl Into<Vec<u8>>, result: CompareResult, version: i64) -> Self {
        Self::new(key, result, CompareTarget::Version(version))
    }

    /// Compares the revision at which the key was created (0 when missing).
    pub fn create_revision(
        key: impl Into<Vec<u8>>,
        result: CompareResult,
        revision: Revision,
    ) -> Self {
        Self::new(key, result, CompareTarget::CreateRevision(revision))
    }

    /// Compares the revision at which the key was last modified (0 when missing).
    pub fn mod_revision(
        key: impl Into<Vec<u8>>,
        result: CompareResult,
        revision: Revision,
    ) -> Self {
        Self::new(key, result, CompareTarget::ModRevision(revision))
    }

    /// Compares the lease the key is attached to (0 for none).
    pub fn lease(key: impl Into<Vec<u8>>, result: CompareResult, lease: LeaseId) -> Self {
        Self::new(key, result, CompareTarget::Lease(lease))
    }

    /// Applies the comparison to every key in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.0.range_end = end.into();
        self
    }

    /// Applies the comparison to every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        prefix(&mut self.0.key, &mut self.0.range_end);
        self
    }

    /// The wire form.
    pub fn into_inner(self) -> etch_proto::Compare {
        self.0
    }
}

/// One compare where several may be given: `.when(Compare::value(..))` as well as
/// `.when([a, b])`.
impl IntoIterator for Compare {
    type Item = Compare;
    type IntoIter = std::iter::Once<Compare>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self)
    }
}

impl From<Compare> for etch_proto::Compare {
    fn from(c: Compare) -> Self {
        c.0
    }
}

impl From<etch_proto::Compare> for Compare {
    fn from(c: etch_proto::Compare) -> Self {
        Compare(c)
    }
}

/// One operation of a transaction branch: a put, a get, a delete or a nested transaction,
/// with the options of [`Client::put`], [`Client::get`], [`Client::delete`] and
/// [`Client::txn`]. An option that does not apply to the operation (`lease` on a get, say)
/// is ignored.
///
/// # Examples
///
/// ```
/// use etch_client::{Compare, CompareResult, TxnOp};
/// let ops = [
///     TxnOp::put("a", "1").prev_kv(),
///     TxnOp::get("dir/").prefix().keys_only(),
///     TxnOp::delete("old").prev_kv(),
///     TxnOp::txn()
///         .when(Compare::version("b", CompareResult::Equal, 0))
///         .and_then(TxnOp::put("b", "first")),
/// ];
/// # let _ = ops;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOp(RequestOp);

impl TxnOp {
    /// Sets `key` to `value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp(RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
    }

    /// Reads `key` (or a range).
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        TxnOp(RequestOp::Range(RangeRequest {
            key: key.into(),
            ..Default::default()
        }))
    }

    /// Deletes `key` (or a range).
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp(RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }))
    }

    /// A transaction nested in this branch, run at the same revision; give it conditions
    /// and branches with [`TxnOp::when`], [`TxnOp::and_then`] and [`TxnOp::or_else`].
    pub fn txn() -> Self {
        TxnOp(RequestOp::Txn(TxnRequest::default()))
    }

    fn range(&mut self) -> Option<(&mut Vec<u8>, &mut Vec<u8>)> {
        match &mut self.0 {
            RequestOp::Range(r) => Some((&mut r.key, &mut r.range_end)),
            RequestOp::DeleteRange(d) => Some((&mut d.key, &mut d.range_end)),
            RequestOp::Put(_) | RequestOp::Txn(_) => None,
        }
    }

    fn with_txn(mut self, f: impl FnOnce(&mut TxnRequest)) -> Self {
        if let RequestOp::Txn(t) = &mut self.0 {
            f(t);
        }
        self
    }

    /// Nested txn: conditions for its success branch (see [`Txn::when`]).
    pub fn when(self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.with_txn(|t| t.compare.extend(compares.into_iter().map(|c| c.0)))
    }

    /// Nested txn: operations run when every condition holds (see [`Txn::and_then`]).
    pub fn and_then(self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.with_txn(|t| t.success.extend(ops.into_iter().map(|o| o.0)))
    }

    /// Nested txn: operations run otherwise (see [`Txn::or_else`]).
    pub fn or_else(self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.with_txn(|t| t.failure.extend(ops.into_iter().map(|o| o.0)))
    }

    /// Get/delete: every key starting with the key.
    pub fn prefix(mut self) -> Self {
        if let Some((key, end)) = self.range() {
            prefix(key, end);
        }
        self
    }

    /// Get/delete: every key greater than or equal to the key.
    pub fn from_key(mut self) -> Self {
        if let Some((key, end)) = self.range() {
            from_key(key, end);
        }
        self
    }

    /// Get/delete: the keys in `[key, end)`.
    pub fn range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
        if let Some((_, end)) = self.range() {
            *end = range_end.into();
        }
        self
    }

    /// Put/delete: return the previous key-value(s).
    pub fn prev_kv(mut self) -> Self {
        match &mut self.0 {
            RequestOp::Put(p) => p.prev_kv = true,
            RequestOp::DeleteRange(d) => d.prev_kv = true,
            RequestOp::Range(_) | RequestOp::Txn(_) => {}
        }
        self
    }

    fn with_put(mut self, f: impl FnOnce(&mut PutRequest)) -> Self {
        if let RequestOp::Put(p) = &mut self.0 {
            f(p);
        }
        self
    }

    /// Put: attach the key to a lease.
    pub fn lease(self, id: LeaseId) -> Self {
        self.with_put(|p| p.lease = id)
    }

    /// Put: keep the key's current value (see [`crate::kv::Put::ignore_value`]).
    pub fn ignore_value(self) -> Self {
        self.with_put(|p| p.ignore_value = true)
    }

    /// Put: keep the key's current lease (see [`crate::kv::Put::ignore_lease`]).
    pub fn ignore_lease(self) -> Self {
        self.with_put(|p| p.ignore_lease = true)
    }

    fn with_range(mut self, f: impl FnOnce(&mut RangeRequest)) -> Self {
        if let RequestOp::Range(r) = &mut self.0 {
            f(r);
        }
        self
    }

    /// Get: return at most `n` keys.
    pub fn limit(self, n: i64) -> Self {
        self.with_range(|r| r.limit = n)
    }

    /// Get: read as of `revision`.
    pub fn revision(self, revision: Revision) -> Self {
        self.with_range(|r| r.revision = revision)
    }

    /// Get: keys and metadata without values.
    pub fn keys_only(self) -> Self {
        self.with_range(|r| r.keys_only = true)
    }

    /// Get: only the count of matching keys.
    pub fn count_only(self) -> Self {
        self.with_range(|r| r.count_only = true)
    }

    /// Get: the keys in `order` of `target` (see [`crate::kv::Get::sort`]).
    pub fn sort(self, target: SortTarget, order: SortOrder) -> Self {
        self.with_range(|r| (r.sort_target, r.sort_order) = crate::kv::sort_options(target, order))
    }

    /// Get: only keys whose mod revision is in `[min, max]` (`0`: no bound).
    pub fn mod_revisions(self, min: Revision, max: Revision) -> Self {
        self.with_range(|r| {
            r.min_mod_revision = min;
            r.max_mod_revision = max;
        })
    }

    /// Get: only keys whose create revision is in `[min, max]` (`0`: no bound).
    pub fn create_revisions(self, min: Revision, max: Revision) -> Self {
        self.with_range(|r| {
            r.min_create_revision = min;
            r.max_create_revision = max;
        })
    }

    /// The wire form.
    pub fn into_inner(self) -> RequestOp {
        self.0
    }
}

/// One operation where several may be given: `.and_then(TxnOp::put(..))` as well as
/// `.and_then([a, b])`.
impl IntoIterator for TxnOp {
    type Item = TxnOp;
    type IntoIter = std::iter::Once<TxnOp>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self)
    }
}

impl From<TxnOp> for RequestOp {
    fn from(op: TxnOp) -> Self {
        op.0
    }
}

impl From<RequestOp> for TxnOp {
    fn from(op: RequestOp) -> Self {
        TxnOp(op)
    }
}

impl Client {
    /// Starts a transaction.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::{Compare, CompareResult, TxnOp};
    /// let resp = client
    ///     .txn()
    ///     .when([Compare::value("state", CompareResult::Equal, "idle")])
    ///     .and_then([TxnOp::put("state", "busy")])
    ///     .or_else([TxnOp::get("state")])
    ///     .await?;
    /// println!("took the job: {}", resp.succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            client: self,
            req: TxnRequest::default(),
        }
    }
}

/// A transaction being built; see [`Client::txn`]. Each method appends to what was given
/// before.
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Txn<'a> {
    client: &'a Client,
    req: TxnRequest,
}

impl Txn<'_> {
    /// Conditions that must all hold for the success branch to run: one [`Compare`] or
    /// several (etcd's `If`).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.req.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// Operations run when every condition holds: one [`TxnOp`] or several (etcd's
    /// `Then`).
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.req.success.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// Operations run otherwise: one [`TxnOp`] or several (etcd's `Else`).
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.req.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::Txn(self.req)
    }
}
request_future!(Txn, Txn, TxnResponse);
