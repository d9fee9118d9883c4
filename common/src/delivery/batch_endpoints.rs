//! The endpoints of one delivery batch, read together in one store call (DynamoDB
//! `BatchGetItem`) instead of one `GetItem` per record, and kept current with the changes the
//! batch itself makes: a record attempted after another sees the failure streak, the open
//! circuit, the probe or the disabling that attempt left, as it would have by reading the
//! endpoint again. Changes made meanwhile by other workers are seen at the next batch, as a
//! read at the start of each attempt would see them only a few hundred milliseconds sooner.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::delivery::EndpointHealth;
use crate::domain::endpoint::Endpoint;
use crate::domain::id::EndpointId;
use crate::domain::OrgId;
use crate::ports::EndpointStore;

type Key = (OrgId, EndpointId);

#[derive(Default)]
pub(super) struct BatchEndpoints {
    /// Per endpoint read: the endpoint, or `None` when there is none.
    known: Mutex<HashMap<Key, Option<Endpoint>>>,
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
            },
            Err(error) => {
                tracing::warn!(%error, endpoints = keys.len(), "could not read the batch's endpoints together; each record reads its own");
                Self::default()
            }
        }
    }

    /// `Some(endpoint or none)` when the batch read it, `None` when it did not.
    pub(super) fn get(&self, org: &OrgId, id: &EndpointId) -> Option<Option<Endpoint>> {
        let known = self.known.lock().ok()?;
        known.get(&(org.clone(), id.clone())).cloned()
    }

    /// The endpoint's health as this batch last saw it, when the batch read it.
    pub(super) fn health(&self, org: &OrgId, id: &EndpointId) -> Option<EndpointHealth> {
        let known = self.known.lock().ok()?;
        known
            .get(&(org.clone(), id.clone()))?
            .as_ref()
            .map(|endpoint| endpoint.health.clone())
    }

    /// What the store answered to a health change made by this batch.
    pub(super) fn note_health(&self, org: &OrgId, id: &EndpointId, health: &EndpointHealth) {
        self.change(org, id, |endpoint| endpoint.health = health.clone());
    }

    /// The endpoint was disabled by this batch.
    pub(super) fn note_disabled(&self, org: &OrgId, id: &EndpointId) {
        self.change(org, id, |endpoint| endpoint.disabled = true);
    }

    fn change(&self, org: &OrgId, id: &EndpointId, apply: impl FnOnce(&mut Endpoint)) {
        if let Ok(mut known) = self.known.lock() {
            if let Some(Some(endpoint)) = known.get_mut(&(org.clone(), id.clone())) {
                apply(endpoint);
            }
        }
    }
}
