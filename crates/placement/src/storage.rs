//! The group's durable storage in sled: the Raft log and vote ([`LogStore`]) and the state
//! machine with its snapshots ([`StateMachine`]).
//!
//! The state machine lives in memory and is published to readers through a watch channel; what
//! makes it durable is the latest snapshot (in sled) plus the log: on start-up openraft re-applies
//! the committed entries after the snapshot. The log is flushed before Raft is told an append is
//! done, so an acknowledged write survives `kill -9`.

use std::{fmt::Debug, io::Cursor, ops::RangeBounds, path::Path, sync::Arc};

use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
    storage::{LogFlushed, RaftLogStorage, RaftStateMachine},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Mutex, watch};

use crate::{
    NodeId, TypeConfig,
    state::PlacementState,
    types::{EntryOutcome, Member, Replica},
};

/// Local records may be large (a snapshot of every app); the limit only guards against garbage.
pub(crate) const LOCAL_RECORD_LIMIT: usize = 256 * 1024 * 1024;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    mycel_protocol::encode(value).map_err(|e| AnyError::new(&e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    mycel_protocol::decode(bytes, LOCAL_RECORD_LIMIT).map_err(|e| AnyError::new(&e))
}

fn sled_error(e: sled::Error) -> AnyError {
    AnyError::new(&e)
}

// openraft's error constructors live on `StorageIOError`; these keep the call sites short.
fn read_logs(e: AnyError) -> StorageError<NodeId> {
    StorageIOError::read_logs(e).into()
}
fn write_logs(e: AnyError) -> StorageError<NodeId> {
    StorageIOError::write_logs(e).into()
}
fn read_vote(e: AnyError) -> StorageError<NodeId> {
    StorageIOError::read_vote(e).into()
}
fn write_vote(e: AnyError) -> StorageError<NodeId> {
    StorageIOError::write_vote(e).into()
}
fn read_snapshot(meta: Option<&SnapshotMeta<NodeId, Member>>, e: AnyError) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(meta.map(|m| m.signature()), e).into()
}
fn write_snapshot(
    meta: Option<&SnapshotMeta<NodeId, Member>>,
    e: AnyError,
) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), e).into()
}

/// Opens (or creates) the group's sled database under `dir`.
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    // The log is flushed explicitly where Raft needs it; a background flush adds nothing.
    sled::Config::new().path(dir).flush_every_ms(None).open()
}

/// The Raft log, the vote and the committed index.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
        })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.meta.get(key).map_err(sled_error)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), AnyError> {
        self.meta.insert(key, encode(value)?).map_err(sled_error)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), AnyError> {
        self.db.flush_async().await.map_err(sled_error)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (key, value) = item.map_err(|e| read_logs(sled_error(e)))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value).map_err(read_logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self.read_meta(PURGED).map_err(read_logs)?;
        let last = match self.log.last().map_err(|e| read_logs(sled_error(e)))? {
            Some((_key, value)) => {
                let entry: Entry<TypeConfig> = decode(&value).map_err(read_logs)?;
                Some(entry.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE, vote).map_err(write_vote)?;
        // A vote must never be forgotten, or this node could vote twice in one term.
        self.flush().await.map_err(write_vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE).map_err(read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed: losing it only means re-learning it from the leader.
        self.write_meta(COMMITTED, &committed).map_err(write_logs)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(read_logs)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(write_logs)?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_logs(sled_error(e)))?;
        let flushed = self.flush().await;
        callback.log_io_completed(flushed.map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) = item.map_err(|e| write_logs(sled_error(e)))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_logs(sled_error(e)))?;
        self.flush().await.map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge first: a crash in between leaves entries that are merely unused.
        self.write_meta(PURGED, &log_id).map_err(write_logs)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) = item.map_err(|e| write_logs(sled_error(e)))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_logs(sled_error(e)))?;
        self.flush().await.map_err(write_logs)
    }
}

/// What a snapshot holds besides its metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    pub(crate) state: PlacementState,
}

/// The state a snapshot's data holds: what a node installs when the leader sends one.
pub(crate) fn decode_snapshot(data: &[u8]) -> Result<PlacementState, AnyError> {
    decode::<SnapshotBody>(data).map(|body| body.state)
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    state: PlacementState,
    snapshots_built: u64,
}

/// The state machine: applies entries, builds and installs snapshots, publishes the replica.
#[derive(Clone)]
pub(crate) struct StateMachine {
    db: sled::Db,
    snapshots: sled::Tree,
    applied: Arc<Mutex<Applied>>,
    publish: Arc<watch::Sender<Arc<Replica>>>,
}

const CURRENT_SNAPSHOT: &[u8] = b"current";

impl StateMachine {
    /// Opens the state machine at its latest snapshot; openraft replays the log after it.
    pub(crate) fn open(db: &sled::Db) -> Result<(Self, watch::Receiver<Arc<Replica>>), AnyError> {
        let snapshots = db.open_tree("snapshots").map_err(sled_error)?;
        let mut applied = Applied {
            last_applied: None,
            membership: StoredMembership::default(),
            state: PlacementState::default(),
            snapshots_built: 0,
        };
        if let Some(bytes) = snapshots.get(CURRENT_SNAPSHOT).map_err(sled_error)? {
            let stored: StoredSnapshot = decode(&bytes)?;
            let body: SnapshotBody = decode(&stored.data)?;
            applied.last_applied = stored.meta.last_log_id;
            applied.membership = stored.meta.last_membership;
            applied.state = body.state;
        }
        let (publish, replica) = watch::channel(Arc::new(Replica {
            state: applied.state.clone(),
            applied_index: applied.last_applied.map(|l| l.index),
        }));
        Ok((
            Self {
                db: db.clone(),
                snapshots,
                applied: Arc::new(Mutex::new(applied)),
                publish: Arc::new(publish),
            },
            replica,
        ))
    }

    fn publish(&self, applied: &Applied) {
        self.publish.send_replace(Arc::new(Replica {
            state: applied.state.clone(),
            applied_index: applied.last_applied.map(|l| l.index),
        }));
    }

    async fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), AnyError> {
        self.snapshots
            .insert(CURRENT_SNAPSHOT, encode(stored)?)
            .map_err(sled_error)?;
        self.db.flush_async().await.map_err(sled_error)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let mut applied = self.applied.lock().await;
            applied.snapshots_built += 1;
            let data = encode(&SnapshotBody {
                state: applied.state.clone(),
            })
            .map_err(|e| write_snapshot(None, e))?;
            let snapshot_id = match applied.last_applied {
                Some(last) => format!(
                    "{}-{}-{}",
                    last.leader_id, last.index, applied.snapshots_built
                ),
                None => format!("empty-{}", applied.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        let stored = StoredSnapshot { meta, data };
        self.store_snapshot(&stored)
            .await
            .map_err(|e| write_snapshot(Some(&stored.meta), e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let applied = self.applied.lock().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<EntryOutcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.lock().await;
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(command) => applied.state.try_apply(&command),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            };
            if let Err(e) = &outcome {
                // Every replica refuses it alike; the leader's client hears why.
                tracing::info!(index = entry.log_id.index, %e, "a placement entry was refused");
            }
            responses.push(outcome);
        }
        self.publish(&applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let state = decode_snapshot(&data).map_err(|e| read_snapshot(Some(meta), e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store_snapshot(&stored)
            .await
            .map_err(|e| write_snapshot(Some(meta), e))?;
        let mut applied = self.applied.lock().await;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.state = state;
        self.publish(&applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = self
            .snapshots
            .get(CURRENT_SNAPSHOT)
            .map_err(|e| read_snapshot(None, sled_error(e)))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes).map_err(|e| read_snapshot(None, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
