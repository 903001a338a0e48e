//! Alarms and defragmentation, as etcd's maintenance `Alarm` and `Defragment`.
//!
//! A member raises an alarm through Raft, so every member holds the same list: `NOSPACE`
//! once the database passes `--quota-backend-bytes` (writes that add data then fail with
//! [`crate::Error::NoSpace`] until the alarm is disarmed). Defragmentation compacts the
//! asked member's storage files in place; it is not replicated.

use serde::{Deserialize, Serialize};

use crate::ResponseHeader;

/// What an [`AlarmRequest`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    /// Lists the raised alarms (of `alarm`'s kind, or all with [`AlarmType::None`]).
    #[default]
    Get,
    /// Raises `alarm` for `member_id`.
    Activate,
    /// Clears `alarm` for `member_id`.
    Deactivate,
}

/// The kinds of alarm, as etcd names them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum AlarmType {
    /// No alarm (in a `Get`: every kind).
    #[default]
    None,
    /// The database passed its space quota.
    NoSpace,
    /// Members' key histories differ at a revision they all hold.
    Corrupt,
}

impl AlarmType {
    /// etcd's name of the alarm (`NOSPACE`, `CORRUPT`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmType::None => "NONE",
            AlarmType::NoSpace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRequest {
    pub action: AlarmAction,
    /// The member the alarm is raised for or cleared of (0 in a `Get`).
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// One raised alarm.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmResponse {
    pub header: ResponseHeader,
    /// The raised alarms a `Get` asked for; the alarm changed by `Activate` or
    /// `Deactivate` (none when it was already so).
    pub alarms: Vec<AlarmMember>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragmentRequest {}

/// Asks the node for a backup of its whole state (root only), as etcd's maintenance
/// `Snapshot`. The node answers with one [`SnapshotResponse`] frame, then the backup
/// file's bytes, raw, to the end of the stream; a node that cannot finish resets the
/// stream with [`crate::codes::stream::SNAPSHOT_FAILED`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {}

/// Hands the leadership to voter `target_id` (root only), as etcd's maintenance
/// `MoveLeader`; answered once the target leads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLeaderRequest {
    pub target_id: u64,
}

/// The header's `member_id` is the member that led when the move began.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLeaderResponse {
    pub header: ResponseHeader,
}

/// The start of a backup stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    pub header: ResponseHeader,
    /// The revision the backup holds the state at.
    pub revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragmentResponse {
    pub header: ResponseHeader,
}
