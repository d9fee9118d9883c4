//! The endpoints of one delivery batch, read together in one store call (DynamoDB
//! `BatchGetItem`) instead of one `GetItem` per record.
//!
//! A record attempted after another must see what that attempt changed, as it would by reading
//! the endpoint itself: so any change of health but a success (a failure, an opened circuit, a
//! probe taken, a disabling), whatever the store answered, drops the endpoint from the view,
//! and the records after it read it alone, fresh. A success keeps it, with the health the
//! store answered (of ten records to one endpoint, one refreshes `lastSuccessAt`). Answers that
//! arrive out of order cannot resurrect a dropped endpoint. The view serves for
//! [`FRESH_FOR`] after the read; records that wait longer for a slot (a concurrency below the
//! batch size, slow subscribers) read their endpoint alone too, so a change made meanwhile
//! through the API or by another worker is seen as soon as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::delivery::EndpointHealth;
use crate::domain::endpoint::Endpoint;
use crate::domain::id::EndpointId;
use crate::domain::OrgId;
use crate::ports::EndpointStore;

type Key = (OrgId, EndpointId);

/// How long the batch's read stands in for a read of the record's own.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(1);

pub(super) struct BatchEndpoints {
    /// Per endpoint read: the endpoint, or `None` when there is none.
    known: Mutex<HashMap<Key, Option<Endpoint>>>,
    read_at: Instant,
}

impl Default for BatchEndpoints {
    fn default() -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
            read_at: Instant::now(),
        }
    }
}

impl BatchEndpoints {
    /// Reads the endpoints `keys` name in one call. A failed read leaves the view empty, so
    /// each record reads its own endpoint (and postpones if that fails too).
    pub(super) async fn read(store: &impl EndpointStore, keys: &[Key]) -> Self {
        if keys.is_empty() {
            return Self::default();
        }
        match store.get_endpoints(keys).await {
            Ok(read) => Self {
                known: Mutex::new(read),
                read_at: Instant::now(),
            },
            Err(error) => {
                tracing::warn!(%error, endpoints = keys.len(), "could not read the batch's endpoints together; each record reads its own");
                Self::default()
            }
        }
    }

    /// `Some(endpoint or none)` when the batch read it (and still stands for it), `None` when
    /// the record must read it alone.
    pub(super) fn get(&self, org: &OrgId, id: &EndpointId) -> Option<Option<Endpoint>> {
        if self.read_at.elapsed() > FRESH_FOR {
            return None;
        }
        let known = self.known.lock().ok()?;
        known.get(&(org.clone(), id.clone())).cloned()
    }

    /// A success at `now_millis`, if the batch holds the endpoint: `Some(Some(health before))`
    /// when it is to be written (`needs_writing` said so of the health the batch holds, which
    /// takes the success at once), `Some(None)` when another success of the batch wrote or is
    /// writing it, `None` when the batch does not hold the endpoint.
    pub(super) fn claim_success(
        &self,
        org: &OrgId,
        id: &EndpointId,
        now_millis: u64,
        needs_writing: impl Fn(&EndpointHealth) -> bool,
    ) -> Option<Option<EndpointHealth>> {
        if self.read_at.elapsed() > FRESH_FOR {
            return None;
        }
        let mut known = self.known.lock().ok()?;
        let endpoint = known.get_mut(&(org.clone(), id.clone()))?.as_mut()?;
        if !needs_writing(&endpoint.health) {
            return Some(None);
        }
        let before = endpoint.health.clone();
        endpoint.health.failure_streak = 0;
        endpoint.health.failing_since = None;
        endpoint.health.circuit_open_until = None;
        endpoint.health.last_success_at = Some(now_millis);
        Some(Some(before))
    }

    /// The health the store answered to a success this batch recorded.
    pub(super) fn note_success(&self, org: &OrgId, id: &EndpointId, health: &EndpointHealth) {
        if let Ok(mut known) = self.known.lock() {
            if let Some(Some(endpoint)) = known.get_mut(&(org.clone(), id.clone())) {
                endpoint.health = health.clone();
            }
        }
    }

    /// Any other change this batch made or tried: the records after it read the endpoint
    /// alone.
    pub(super) fn forget(&self, org: &OrgId, id: &EndpointId) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(&(org.clone(), id.clone()));
        }
    }
}
