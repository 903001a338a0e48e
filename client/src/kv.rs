//! The key-value requests as builders: set options with chained calls, then `.await`.
//!
//! Each builder is an [`IntoFuture`]; [`Put::into_request`] and friends give the wire
//! [`Request`] instead, for inspection or for [`Client::request`].

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use etch_proto::{
    CompactRequest, CompactResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvRequest,
    HashKvResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse, Request,
    Response, Revision, SortOrder, SortTarget, StatusRequest, StatusResponse,
};

use crate::client::Client;
use crate::error::{Error, Result};

/// The future every builder turns into.
pub type ResponseFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Sets `(key, end)` to select every key starting with `key`, as etcd's `WithPrefix`: an
/// empty prefix selects all keys.
pub(crate) fn prefix(key: &mut Vec<u8>, end: &mut Vec<u8>) {
    if key.is_empty() {
        *key = vec![0];
        *end = vec![0];
    } else {
        *end = etch_proto::prefix_end(key);
    }
}

/// Sets `(key, end)` to select every key `>= key`, as etcd's `WithFromKey`.
pub(crate) fn from_key(key: &mut Vec<u8>, end: &mut Vec<u8>) {
    if key.is_empty() {
        *key = vec![0];
    }
    *end = vec![0];
}

/// The variant name of a response (`"Range"`, `"Put"`, ...), for error messages.
pub(crate) fn response_name(response: &Response) -> String {
    let debug = format!("{response:?}");
    debug.split('(').next().unwrap_or_default().to_owned()
}

/// Implements `IntoFuture` for a builder whose `into_request` yields `Request::$variant`.
macro_rules! request_future {
    ($builder:ident, $variant:ident, $response:ty) => {
        impl<'a> IntoFuture for $builder<'a> {
            type Output = Result<$response>;
            type IntoFuture = ResponseFuture<'a, $response>;

            fn into_future(self) -> Self::IntoFuture {
                let client = self.client;
                let request = self.into_request();
                Box::pin(async move {
                    match client.request(request).await? {
                        Response::$variant(r) => Ok(r),
                        other => Err(Error::UnexpectedResponse {
                            expected: stringify!($variant),
                            got: $crate::kv::response_name(&other),
                        }),
                    }
                })
            }
        }
    };
}
pub(crate) use request_future;

impl Client {
    /// Sets `key` to `value`. Options: [`Put::prev_kv`], [`Put::lease`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let resp = client.put("/config/a", "1").prev_kv().await?;
    /// if let Some(prev) = resp.prev_kv {
    ///     println!("replaced {:?}", prev.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Put<'_> {
        Put {
            client: self,
            req: PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            },
        }
    }

    /// Reads `key` (or a range, with [`Get::prefix`], [`Get::from_key`], [`Get::range_end`]).
    /// Linearizable unless [`Get::serializable`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let resp = client.get("/config/").prefix().limit(10).await?;
    /// for kv in &resp.kvs {
    ///     println!("{} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self, key: impl Into<Vec<u8>>) -> Get<'_> {
        Get {
            client: self,
            req: RangeRequest {
                key: key.into(),
                ..Default::default()
            },
        }
    }

    /// The value of `key`, or `None` when it does not exist: a linearizable get of one key
    /// in one call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// if let Some(port) = client.get_value("/config/db/port").await? {
    ///     println!("port {}", String::from_utf8_lossy(&port));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_value(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let resp = self.get(key).await?;
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Deletes `key` (or a range). The response counts the keys deleted.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let deleted = client.delete("/tmp/").prefix().await?.deleted;
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&self, key: impl Into<Vec<u8>>) -> Delete<'_> {
        Delete {
            client: self,
            req: DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            },
        }
    }

    /// Compacts the history below `revision`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// client.compact(42).physical().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compact(&self, revision: Revision) -> Compact<'_> {
        Compact {
            client: self,
            req: CompactRequest {
                revision,
                physical: false,
            },
        }
    }

    /// The status of the node this client is connected to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let status = client.status().await?;
    /// println!("{} at raft index {}", status.name, status.raft_index);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self) -> Result<StatusResponse> {
        match self.request(Request::Status(StatusRequest {})).await? {
            Response::Status(s) => Ok(s),
            other => Err(Error::UnexpectedResponse {
                expected: "Status",
                got: response_name(&other),
            }),
        }
    }

    /// The hash of the key history of the node this client is connected to, up to
    /// `revision` (0: its current revision), as etcd's `HashKV`. Members that hold the same
    /// history agree; compare them at one revision that all of them have applied.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let h = client.hash_kv(0).await?;
    /// println!("hash {} at revision {}", h.hash, h.hash_revision);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn hash_kv(&self, revision: Revision) -> Result<HashKvResponse> {
        match self
            .request(Request::HashKv(HashKvRequest { revision }))
            .await?
        {
            Response::HashKv(h) => Ok(h),
            other => Err(Error::UnexpectedResponse {
                expected: "HashKv",
                got: response_name(&other),
            }),
        }
    }
}

/// A sort as sent: ascending by key is key order, the layout every node reads (as etcd's
/// `clientv3.WithSort` does).
pub(crate) fn sort_options(target: SortTarget, order: SortOrder) -> (SortTarget, SortOrder) {
    match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => (SortTarget::Key, SortOrder::None),
        other => other,
    }
}

/// A put being built; see [`Client::put`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Put<'a> {
    client: &'a Client,
    req: PutRequest,
}

impl Put<'_> {
    /// Return the key's previous version in [`PutResponse::prev_kv`].
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// Attach the key to lease `id` (`0`, the default, for none).
    pub fn lease(mut self, id: LeaseId) -> Self {
        self.req.lease = id;
        self
    }

    /// Keep the key's current value and change only its lease (etcd's `ignore_value`):
    /// give an empty value. The key must exist ("key not found" otherwise).
    pub fn ignore_value(mut self) -> Self {
        self.req.ignore_value = true;
        self
    }

    /// Keep the key's current lease and change only its value (etcd's `ignore_lease`):
    /// give no lease. The key must exist ("key not found" otherwise).
    pub fn ignore_lease(mut self) -> Self {
        self.req.ignore_lease = true;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::Put(self.req)
    }
}
request_future!(Put, Put, PutResponse);

/// A range read being built; see [`Client::get`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Get<'a> {
    client: &'a Client,
    req: RangeRequest,
}

impl Get<'_> {
    /// Read every key that starts with the key (all keys if the key is empty).
    pub fn prefix(mut self) -> Self {
        prefix(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Read every key greater than or equal to the key.
    pub fn from_key(mut self) -> Self {
        from_key(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Read the keys in `[key, end)`.
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.req.range_end = end.into();
        self
    }

    /// Return at most `n` keys (`0`, the default, for no limit); `more` tells if there were
    /// others.
    pub fn limit(mut self, n: i64) -> Self {
        self.req.limit = n;
        self
    }

    /// Read as of `revision` (`0`, the default, for the current one).
    pub fn revision(mut self, revision: Revision) -> Self {
        self.req.revision = revision;
        self
    }

    /// Return keys and metadata without values.
    pub fn keys_only(mut self) -> Self {
        self.req.keys_only = true;
        self
    }

    /// Return only the count of matching keys.
    pub fn count_only(mut self) -> Self {
        self.req.count_only = true;
        self
    }

    /// Serve the read from the node's local state, possibly stale, without a round of
    /// consensus. Default: linearizable.
    pub fn serializable(mut self) -> Self {
        self.req.serializable = true;
        self
    }

    /// Return the keys in `order` of `target` (ascending key order by default). Keys that
    /// tie stay in key order. The limit applies after sorting: the node reads the whole
    /// range to answer.
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        (self.req.sort_target, self.req.sort_order) = sort_options(target, order);
        self
    }

    /// Return only keys whose mod revision is in `[min, max]` (`0` for no bound on that
    /// side). `count` still counts every key in the range, as etcd's does.
    pub fn mod_revisions(mut self, min: Revision, max: Revision) -> Self {
        self.req.min_mod_revision = min;
        self.req.max_mod_revision = max;
        self
    }

    /// Return only keys whose create revision is in `[min, max]` (`0` for no bound on
    /// that side).
    pub fn create_revisions(mut self, min: Revision, max: Revision) -> Self {
        self.req.min_create_revision = min;
        self.req.max_create_revision = max;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::Range(self.req)
    }
}
request_future!(Get, Range, RangeResponse);

/// A delete being built; see [`Client::delete`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Delete<'a> {
    client: &'a Client,
    req: DeleteRangeRequest,
}

impl Delete<'_> {
    /// Delete every key that starts with the key (all keys if the key is empty).
    pub fn prefix(mut self) -> Self {
        prefix(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Delete every key greater than or equal to the key.
    pub fn from_key(mut self) -> Self {
        from_key(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Delete the keys in `[key, end)`.
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.req.range_end = end.into();
        self
    }

    /// Return the deleted key-values in [`DeleteRangeResponse::prev_kvs`].
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::DeleteRange(self.req)
    }
}
request_future!(Delete, DeleteRange, DeleteRangeResponse);

/// A compaction being built; see [`Client::compact`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Compact<'a> {
    client: &'a Client,
    req: CompactRequest,
}

impl Compact<'_> {
    /// Wait until the compaction is physically applied (etch always does; kept for etcd
    /// compatibility).
    pub fn physical(mut self) -> Self {
        self.req.physical = true;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::Compact(self.req)
    }
}
request_future!(Compact, Compact, CompactResponse);
