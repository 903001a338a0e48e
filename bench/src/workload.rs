//! The workloads: what one request of each subcommand is, and the flags that shape it.
//!
//! Keys are decimal numbers zero-padded to `--key-size` bytes (`00000042`), as the etcd
//! baseline's load generator makes them, so both stores see the same keys. Sequential keys
//! take request `i` to key `i mod key-space`; otherwise the key is a pseudo-random function
//! of `i` (splitmix64), which needs no shared generator between clients.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use etch_client::{Client, TxnOp};
use serde_json::{Value, json};

use crate::LoadArgs;
use crate::load::Load;
use crate::validator::{Validator, common_prefix, json_value};

/// One request of a workload, made from its index in the run.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        keys: Keys,
        value: Vec<u8>,
    },
    Range {
        key: Vec<u8>,
        end: Vec<u8>,
        limit: i64,
        serializable: bool,
    },
    TxnPut {
        keys: Keys,
        value: Vec<u8>,
        ops: usize,
    },
}

impl Op {
    /// Sends request number `i` and waits for its answer.
    pub async fn issue(&self, client: &Client, i: u64) -> etch_client::Result<()> {
        match self {
            Op::Put { keys, value } => {
                client.put(keys.key(i), value.clone()).await?;
            }
            Op::Range {
                key,
                end,
                limit,
                serializable,
            } => {
                let mut get = client.get(key.clone()).range_end(end.clone()).limit(*limit);
                if *serializable {
                    get = get.serializable();
                }
                get.await?;
            }
            Op::TxnPut { keys, value, ops } => {
                // Consecutive keys from the txn's first one: distinct, as a txn requires.
                let first = keys.number(i * *ops as u64);
                let puts = (0..*ops as u64)
                    .map(|j| TxnOp::put(keys.fixed((first + j) % keys.space), value.clone()));
                client.txn().and_then(puts).await?;
            }
        }
        Ok(())
    }
}

/// How request indexes become keys.
#[derive(Clone, Debug)]
pub struct Keys {
    pub size: usize,
    pub space: u64,
    pub sequential: bool,
    /// Where sequential keys start (`grow` writes each chunk after the last).
    pub offset: u64,
}

impl Keys {
    /// The key of request `i`: exactly `size` bytes.
    pub fn key(&self, i: u64) -> Vec<u8> {
        self.fixed(self.number(i))
    }

    /// The key number (below `space`) of request `i`.
    pub fn number(&self, i: u64) -> u64 {
        if self.sequential {
            (self.offset + i) % self.space
        } else {
            splitmix64(i) % self.space
        }
    }

    /// Key number `n` as a key of `size` bytes.
    pub fn fixed(&self, n: u64) -> Vec<u8> {
        fixed_width(n, self.size)
    }
}

/// `n` in decimal, zero-padded (or cut, keeping the low digits) to `size` bytes.
pub fn fixed_width(n: u64, size: usize) -> Vec<u8> {
    let s = format!("{n:0size$}");
    s.as_bytes()[s.len() - size.min(s.len())..].to_vec()
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key flags shared by `put` and `txn-put`.
#[derive(Args, Clone, Debug)]
pub struct KeyArgs {
    /// Size of each key, in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Size of each value, in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys in order (request i to key i mod key-space-size) instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
}

impl KeyArgs {
    fn keys(&self) -> Keys {
        Keys {
            size: self.key_size.max(1),
            space: self.key_space_size.max(1),
            sequential: self.sequential_keys,
            offset: 0,
        }
    }

    fn params(&self) -> Value {
        json!({
            "key_size": self.key_size,
            "val_size": self.val_size,
            "key_space_size": self.key_space_size,
            "sequential_keys": self.sequential_keys,
        })
    }
}

/// A finished description of a run: the op and its parameters for the report.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub op: Op,
    pub params: Value,
}

fn workload(name: &str, op: Op, load: &LoadArgs, mut params: Value) -> (Workload, Load) {
    let load = load.load();
    if let Value::Object(map) = &mut params {
        map.insert("conns".into(), load.conns.into());
        map.insert("clients".into(), load.clients.into());
        map.insert("total".into(), load.total.into());
        map.insert("rate".into(), load.rate.into());
    }
    let name = name.to_owned();
    (Workload { name, op, params }, load)
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// A validator plugin (FILE.wasm) to bind, for the run, to the prefix all written keys
    /// share; values are then JSON documents of --val-size bytes (`{"v":"vvv…"}`).
    #[arg(long, value_name = "FILE.wasm")]
    pub validator: Option<PathBuf>,
    /// A setting of the validator's binding (repeatable), as etchctl plugin install
    /// --config takes it.
    #[arg(long, value_name = "NAME=VALUE", requires = "validator")]
    pub validator_config: Vec<String>,
}

impl PutArgs {
    pub fn workload(&self) -> Result<(Workload, Load, Option<Validator>)> {
        let validator = (self.validator.as_deref())
            .map(|file| Validator::new(file, &self.validator_config))
            .transpose()?;
        let value = match validator {
            Some(_) => json_value(self.keys.val_size),
            None => vec![b'v'; self.keys.val_size],
        };
        let op = Op::Put {
            keys: self.keys.keys(),
            value,
        };
        let mut params = self.keys.params();
        if let Some(v) = &validator {
            params["validator"] = v.file.display().to_string().into();
        }
        let (workload, load) = workload("put", op, &self.load, params);
        Ok((workload, load, validator))
    }
}

impl Keys {
    /// The prefix every key of this key space starts with.
    pub fn shared_prefix(&self) -> Vec<u8> {
        common_prefix(&self.fixed(0), &self.fixed(self.space.saturating_sub(1)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Debug)]
pub struct RangeArgs {
    /// First key of the range.
    pub key: String,
    /// End of the range (exclusive); without it, just KEY.
    pub end: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Linearizable (l) or serializable (s) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of keys returned per request (0 for no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
}

impl RangeArgs {
    pub fn workload(&self) -> (Workload, Load) {
        let serializable = self.consistency == Consistency::S;
        let op = Op::Range {
            key: self.key.clone().into_bytes(),
            end: self.end.clone().unwrap_or_default().into_bytes(),
            limit: self.limit,
            serializable,
        };
        let params = json!({
            "key": self.key,
            "end": self.end,
            "consistency": if serializable { "s" } else { "l" },
            "limit": self.limit,
        });
        workload("range", op, &self.load, params)
    }
}

#[derive(Args, Debug)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Number of puts in each transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

impl TxnPutArgs {
    pub fn workload(&self) -> Result<(Workload, Load)> {
        if self.keys.key_space_size < self.txn_ops as u64 {
            bail!(
                "--key-space-size ({}) must be at least --txn-ops ({}): the keys of one \
                 transaction must differ",
                self.keys.key_space_size,
                self.txn_ops
            );
        }
        let op = Op::TxnPut {
            keys: self.keys.keys(),
            value: vec![b'v'; self.keys.val_size],
            ops: self.txn_ops.max(1),
        };
        let mut params = self.keys.params();
        params["txn_ops"] = self.txn_ops.into();
        Ok(workload("txn-put", op, &self.load, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(fixed_width(42, 8), b"00000042");
        assert_eq!(fixed_width(123_456, 3), b"456");
        let keys = Keys {
            size: 8,
            space: 10_000,
            sequential: true,
            offset: 0,
        };
        assert_eq!(keys.key(10_001), b"00000001");
        let random = Keys {
            sequential: false,
            offset: 0,
            ..keys
        };
        assert!((0..1000).all(|i| random.key(i).len() == 8));
        assert!((0..1000).map(|i| random.key(i)).any(|k| k != random.key(0)));
    }
}
