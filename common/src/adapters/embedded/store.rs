//! An in-memory endpoint and booking store with the same semantics as the DynamoDB one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::poisoned;
use crate::domain::booking::Booking;
use crate::domain::endpoint::{Endpoint, EndpointChanges};
use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::{BookingId, EndpointId, EventId};
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::ports::{BookingStore, EndpointPage, EndpointStore, EventOutbox, MAX_PAGE_SIZE};

/// Pending events by (due millis, id), like the table's sparse index, and when each is due.
#[derive(Default)]
struct Outbox {
    by_due: BTreeMap<(u64, EventId), PendingEvent>,
    due_of: HashMap<EventId, u64>,
}

/// Items keyed by (org, id), like the table's partition and sort key. Clones share the items,
/// so the API and the delivery worker of the local runner see one store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    endpoints: Arc<Mutex<BTreeMap<(OrgId, EndpointId), Endpoint>>>,
    bookings: Arc<Mutex<BTreeMap<(OrgId, BookingId), Booking>>>,
    events: Arc<Mutex<Outbox>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl EndpointStore for MemoryStore {
    async fn insert_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: usize,
    ) -> Result<(), StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let key = (endpoint.org_id.clone(), endpoint.id.clone());
        match endpoints.get(&key) {
            // As DynamoStore: the same item again is a retried insert, not a conflict.
            Some(stored) if stored.secret_ciphertext == endpoint.secret_ciphertext => Ok(()),
            Some(_) => Err(StoreError::Conflict),
            None if endpoints
                .keys()
                .filter(|(org, _)| org == &endpoint.org_id)
                .count()
                >= max_per_org =>
            {
                Err(StoreError::LimitReached(max_per_org))
            }
            None => {
                endpoints.insert(key, endpoint.clone());
                Ok(())
            }
        }
    }

    async fn get_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, StoreError> {
        let endpoints = self.endpoints.lock().map_err(poisoned)?;
        Ok(endpoints.get(&(org.clone(), id.clone())).cloned())
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        limit: usize,
        after: Option<&EndpointId>,
    ) -> Result<EndpointPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let endpoints = self.endpoints.lock().map_err(poisoned)?;
        let mut page: Vec<Endpoint> = endpoints
            .iter()
            .filter(|((o, id), _)| o == org && after.is_none_or(|a| id > a))
            .take(limit + 1)
            .map(|(_, e)| e.clone())
            .collect();
        let next_after = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|e| e.id.clone())
        });
        Ok(EndpointPage {
            endpoints: page,
            next_after: next_after.flatten(),
        })
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        changes: &EndpointChanges,
        updated_at: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let Some(endpoint) = endpoints.get_mut(&(org.clone(), id.clone())) else {
            return Ok(None);
        };
        if let Some(url) = &changes.url {
            endpoint.url.clone_from(url);
        }
        if let Some(events) = &changes.events {
            endpoint.events.clone_from(events);
        }
        if let Some(description) = &changes.description {
            endpoint.description.clone_from(description);
        }
        if let Some(disabled) = changes.disabled {
            endpoint.disabled = disabled;
        }
        endpoint.updated_at = updated_at.to_owned();
        Ok(Some(endpoint.clone()))
    }

    async fn delete_endpoint(&self, org: &OrgId, id: &EndpointId) -> Result<bool, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        Ok(endpoints.remove(&(org.clone(), id.clone())).is_some())
    }

    async fn subscribers(
        &self,
        org: &OrgId,
        event_type: EventType,
    ) -> Result<Vec<EndpointId>, StoreError> {
        let endpoints = self.endpoints.lock().map_err(poisoned)?;
        Ok(endpoints
            .iter()
            .filter(|((o, _), e)| o == org && e.subscribes_to(event_type))
            .map(|((_, id), _)| id.clone())
            .collect())
    }
}

impl BookingStore for MemoryStore {
    async fn insert_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        event: &Event,
    ) -> Result<(), StoreError> {
        // Both locks are held together, so the two writes are one, as in a transaction.
        let mut bookings = self.bookings.lock().map_err(poisoned)?;
        let mut outbox = self.events.lock().map_err(poisoned)?;
        let key = (org.clone(), booking.id.clone());
        if bookings.contains_key(&key) || outbox.due_of.contains_key(&event.id) {
            return Err(StoreError::Conflict);
        }
        bookings.insert(key, booking.clone());
        let due = event.id.created_millis();
        outbox.due_of.insert(event.id.clone(), due);
        outbox.by_due.insert(
            (due, event.id.clone()),
            PendingEvent {
                org: org.clone(),
                event: event.clone(),
                relay_failures: 0,
            },
        );
        Ok(())
    }
}

impl EventOutbox for MemoryStore {
    async fn pending_events(
        &self,
        due_before_millis: u64,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        let outbox = self.events.lock().map_err(poisoned)?;
        Ok(outbox
            .by_due
            .iter()
            .take_while(|((due, _), _)| *due < due_before_millis)
            .take(limit)
            .map(|(_, pending)| pending.clone())
            .collect())
    }

    async fn set_aside_event(
        &self,
        org: &OrgId,
        id: &EventId,
        relay_failures: u32,
        due_at_millis: u64,
    ) -> Result<(), StoreError> {
        let mut outbox = self.events.lock().map_err(poisoned)?;
        let Some(due) = outbox.due_of.get(id).copied() else {
            return Ok(());
        };
        let key = (due, id.clone());
        if outbox.by_due.get(&key).is_none_or(|p| &p.org != org) {
            return Ok(());
        }
        if let Some(mut pending) = outbox.by_due.remove(&key) {
            pending.relay_failures = relay_failures;
            outbox.due_of.insert(id.clone(), due_at_millis);
            outbox.by_due.insert((due_at_millis, id.clone()), pending);
        }
        Ok(())
    }

    async fn clear_event(&self, org: &OrgId, id: &EventId) -> Result<(), StoreError> {
        let mut outbox = self.events.lock().map_err(poisoned)?;
        let Some(due) = outbox.due_of.get(id).copied() else {
            return Ok(());
        };
        if outbox
            .by_due
            .get(&(due, id.clone()))
            .is_some_and(|p| &p.org == org)
        {
            outbox.by_due.remove(&(due, id.clone()));
            outbox.due_of.remove(id);
        }
        Ok(())
    }
}
