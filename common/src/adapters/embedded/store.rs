//! An in-memory endpoint and booking store with the same semantics as the DynamoDB one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::poisoned;
use crate::domain::booking::Booking;
use crate::domain::booking::BookingStatus;
use crate::domain::delivery::{
    AttemptRecord, DisabledReason, EndpointHealth, HealthChange, LogEntry, MessageRecord,
    MessageState, Outcome,
};
use crate::domain::endpoint::{Endpoint, EndpointChanges, PreviousSecret};
use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::{BookingId, EndpointId, EventId, MessageId};
use crate::domain::idempotency::{IdempotencyCompletion, IdempotencyRecord, KeyState};
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::ports::{
    AttemptPage, BookingStore, DeliveryLog, EndpointPage, EndpointStore, EndpointsRead,
    EventOutbox, IdempotencyStore, MessagePage, MAX_PAGE_SIZE,
};
use crate::time::unix_seconds_now;

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
    log: Arc<Mutex<Log>>,
    /// Idempotency records by (org, key id). Locked after the item a write goes with, so a
    /// write and its answer are one, as in a transaction.
    idempotency: Arc<Mutex<HashMap<(OrgId, String), IdempotencyRecord>>>,
}

type IdempotencyRecords = HashMap<(OrgId, String), IdempotencyRecord>;

/// Checks that `completion`'s claim is still its request's, before anything is written.
fn check_completion(
    records: &IdempotencyRecords,
    org: &OrgId,
    completion: Option<&IdempotencyCompletion>,
) -> Result<(), StoreError> {
    let Some(completion) = completion else {
        return Ok(());
    };
    match records.get(&(org.clone(), completion.key_id.clone())) {
        Some(IdempotencyRecord {
            state: KeyState::Claimed { token, .. },
            ..
        }) if *token == completion.token => Ok(()),
        _ => Err(StoreError::Conflict),
    }
}

/// Stores `completion`'s answer (checked by [`check_completion`] under the same lock).
fn apply_completion(
    records: &mut IdempotencyRecords,
    org: &OrgId,
    completion: Option<&IdempotencyCompletion>,
) {
    if let Some(completion) = completion {
        if let Some(record) = records.get_mut(&(org.clone(), completion.key_id.clone())) {
            record.state = KeyState::Completed(completion.response.clone());
        }
    }
}

/// The delivery log, keyed like the table's items (attempts by their sort key, messages by
/// their id, under org and endpoint); an entry past its `expires_at` is gone, as DynamoDB's TTL
/// would (eventually) make it.
#[derive(Default)]
struct Log {
    attempts: BTreeMap<(OrgId, EndpointId, String), AttemptRecord>,
    messages: BTreeMap<(OrgId, EndpointId, MessageId), MessageRecord>,
}

impl Log {
    fn put_message(&mut self, message: &MessageRecord) {
        let key = (
            message.org.clone(),
            message.endpoint_id.clone(),
            message.message_id.clone(),
        );
        self.messages.insert(key, message.clone());
    }
}

/// The first `limit` of `items`, and the key to start after when more follow.
fn page_of<T, K>(
    mut items: impl Iterator<Item = T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<K>) {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let page: Vec<T> = items.by_ref().take(limit).collect();
    let next = match items.next() {
        Some(_) => page.last().map(key),
        None => None,
    };
    (page, next)
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
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        check_completion(&records, &endpoint.org_id, completion)?;
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
                apply_completion(&mut records, &endpoint.org_id, completion);
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

    async fn get_endpoints(
        &self,
        keys: &[(OrgId, EndpointId)],
    ) -> Result<EndpointsRead, StoreError> {
        let endpoints = self.endpoints.lock().map_err(poisoned)?;
        Ok(keys
            .iter()
            .map(|key| (key.clone(), endpoints.get(key).cloned()))
            .collect())
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
        if let Some(headers) = &changes.headers {
            endpoint.headers.clone_from(headers);
        }
        match changes.disabled {
            Some(true) => {
                endpoint.disabled = true;
                endpoint.disabled_reason = Some(DisabledReason::Manual);
                endpoint.disabled_at = Some(updated_at.to_owned());
            }
            Some(false) => {
                endpoint.disabled = false;
                endpoint.disabled_reason = None;
                endpoint.disabled_at = None;
                endpoint.health = EndpointHealth::default();
            }
            None => {}
        }
        endpoint.updated_at = updated_at.to_owned();
        Ok(Some(endpoint.clone()))
    }

    async fn delete_endpoint(&self, org: &OrgId, id: &EndpointId) -> Result<bool, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        Ok(endpoints.remove(&(org.clone(), id.clone())).is_some())
    }

    async fn change_health(
        &self,
        org: &OrgId,
        id: &EndpointId,
        change: HealthChange,
    ) -> Result<Option<EndpointHealth>, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let Some(endpoint) = endpoints.get_mut(&(org.clone(), id.clone())) else {
            return Ok(None);
        };
        let health = &mut endpoint.health;
        match change {
            HealthChange::Succeeded { at_millis } => {
                *health = EndpointHealth {
                    last_success_at: Some(at_millis),
                    last_failure_at: health.last_failure_at,
                    ..EndpointHealth::default()
                };
            }
            HealthChange::Failed { at_millis } => {
                health.failure_streak += 1;
                health.failing_since.get_or_insert(at_millis);
                health.last_failure_at = Some(at_millis);
                health.probe_until = None;
            }
            HealthChange::OpenCircuit {
                now_millis,
                until_millis,
            } => {
                if health
                    .circuit_open_until
                    .is_some_and(|until| until > now_millis)
                {
                    return Ok(None);
                }
                health.circuit_open_until = Some(until_millis);
                health.circuit_opens += 1;
            }
            HealthChange::TakeProbe {
                now_millis,
                lease_until_millis,
            } => {
                let due = health
                    .circuit_open_until
                    .is_some_and(|until| until <= now_millis);
                let free = health.probe_until.is_none_or(|lease| lease <= now_millis);
                if !(due && free) {
                    return Ok(None);
                }
                health.probe_until = Some(lease_until_millis);
            }
        }
        Ok(Some(health.clone()))
    }

    async fn disable_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        reason: DisabledReason,
        at: &str,
        failing_since_before: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let Some(endpoint) = endpoints.get_mut(&(org.clone(), id.clone())) else {
            return Ok(false);
        };
        let failing_long_enough = failing_since_before.is_none_or(|cutoff| {
            endpoint
                .health
                .failing_since
                .is_some_and(|since| since < cutoff)
        });
        if endpoint.disabled || !failing_long_enough {
            return Ok(false);
        }
        endpoint.disabled = true;
        endpoint.disabled_reason = Some(reason);
        endpoint.disabled_at = Some(at.to_owned());
        Ok(true)
    }

    async fn rotate_secret(
        &self,
        org: &OrgId,
        id: &EndpointId,
        current_ciphertext: &[u8],
        new_ciphertext: &[u8],
        previous: &[PreviousSecret],
        rotated_at: &str,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<bool, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        let Some(endpoint) = endpoints.get_mut(&(org.clone(), id.clone())) else {
            return Ok(false);
        };
        if endpoint.secret_ciphertext != current_ciphertext {
            return Err(StoreError::Conflict);
        }
        check_completion(&records, org, completion)?;
        endpoint.secret_ciphertext = new_ciphertext.to_vec();
        endpoint.previous_secrets = previous.to_vec();
        endpoint.secret_rotated_at = Some(rotated_at.to_owned());
        endpoint.updated_at = rotated_at.to_owned();
        apply_completion(&mut records, org, completion);
        Ok(true)
    }

    async fn forget_expired_secrets(
        &self,
        org: &OrgId,
        id: &EndpointId,
        current_ciphertext: &[u8],
        kept: &[PreviousSecret],
    ) -> Result<bool, StoreError> {
        let mut endpoints = self.endpoints.lock().map_err(poisoned)?;
        match endpoints.get_mut(&(org.clone(), id.clone())) {
            Some(endpoint) if endpoint.secret_ciphertext == current_ciphertext => {
                endpoint.previous_secrets = kept.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
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
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        // The locks are held together, so the writes are one, as in a transaction.
        let mut bookings = self.bookings.lock().map_err(poisoned)?;
        let mut outbox = self.events.lock().map_err(poisoned)?;
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        let key = (org.clone(), booking.id.clone());
        if bookings.contains_key(&key) || outbox.due_of.contains_key(&event.id) {
            return Err(StoreError::Conflict);
        }
        check_completion(&records, org, completion)?;
        bookings.insert(key, booking.clone());
        outbox.add(org, event);
        apply_completion(&mut records, org, completion);
        Ok(())
    }

    async fn get_booking(
        &self,
        org: &OrgId,
        id: &BookingId,
    ) -> Result<Option<Booking>, StoreError> {
        let bookings = self.bookings.lock().map_err(poisoned)?;
        Ok(bookings.get(&(org.clone(), id.clone())).cloned())
    }

    async fn replace_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        read_updated_at: &str,
        event: &Event,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        let mut bookings = self.bookings.lock().map_err(poisoned)?;
        let mut outbox = self.events.lock().map_err(poisoned)?;
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        let key = (org.clone(), booking.id.clone());
        let unchanged = bookings.get(&key).is_some_and(|stored| {
            stored.status == BookingStatus::Confirmed && stored.updated_at == read_updated_at
        });
        if !unchanged || outbox.due_of.contains_key(&event.id) {
            return Err(StoreError::Conflict);
        }
        check_completion(&records, org, completion)?;
        bookings.insert(key, booking.clone());
        outbox.add(org, event);
        apply_completion(&mut records, org, completion);
        Ok(())
    }
}

impl Outbox {
    fn add(&mut self, org: &OrgId, event: &Event) {
        let due = event.id.created_millis();
        self.due_of.insert(event.id.clone(), due);
        self.by_due.insert(
            (due, event.id.clone()),
            PendingEvent {
                org: org.clone(),
                event: event.clone(),
                relay_failures: 0,
            },
        );
    }
}

impl IdempotencyStore for MemoryStore {
    async fn claim_idempotency_key(
        &self,
        org: &OrgId,
        claim: &IdempotencyRecord,
        now_millis: u64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        let key = (org.clone(), claim.key_id.clone());
        match records.get(&key) {
            Some(record) if !record.is_free(now_millis) => Ok(Some(record.clone())),
            _ => {
                records.insert(key, claim.clone());
                Ok(None)
            }
        }
    }

    async fn idempotency_record(
        &self,
        org: &OrgId,
        key_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let records = self.idempotency.lock().map_err(poisoned)?;
        Ok(records
            .get(&(org.clone(), key_id.to_owned()))
            .filter(|r| r.expires_at > unix_seconds_now())
            .cloned())
    }

    async fn complete_idempotency_key(
        &self,
        org: &OrgId,
        completion: &IdempotencyCompletion,
    ) -> Result<(), StoreError> {
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        check_completion(&records, org, Some(completion))?;
        apply_completion(&mut records, org, Some(completion));
        Ok(())
    }

    async fn release_idempotency_key(
        &self,
        org: &OrgId,
        key_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut records = self.idempotency.lock().map_err(poisoned)?;
        let key = (org.clone(), key_id.to_owned());
        let ours = matches!(
            records.get(&key),
            Some(IdempotencyRecord { state: KeyState::Claimed { token: t, .. }, .. }) if t == token
        );
        if ours {
            records.remove(&key);
        }
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

    async fn add_event(&self, org: &OrgId, event: &Event) -> Result<(), StoreError> {
        let mut outbox = self.events.lock().map_err(poisoned)?;
        if outbox.due_of.contains_key(&event.id) {
            return Err(StoreError::Conflict);
        }
        outbox.add(org, event);
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

impl DeliveryLog for MemoryStore {
    async fn record(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        let mut log = self.log.lock().map_err(poisoned)?;
        for LogEntry { attempt, message } in entries {
            log.attempts.insert(
                (
                    attempt.org.clone(),
                    attempt.endpoint_id.clone(),
                    attempt.sort_key(),
                ),
                attempt.clone(),
            );
            if let Some(message) = message {
                log.put_message(message);
            }
        }
        Ok(())
    }

    async fn note_manual_delivery(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
        status: u16,
        at: &str,
    ) -> Result<(), StoreError> {
        let mut log = self.log.lock().map_err(poisoned)?;
        let key = (org.clone(), endpoint_id.clone(), message_id.clone());
        if let Some(record) = log.messages.get_mut(&key) {
            record.state = MessageState::Delivered;
            record.last_status = Some(status);
            record.last_error = None;
            record.next_attempt_at = None;
            record.updated_at = at.to_owned();
        }
        Ok(())
    }

    async fn claim_for_recovery(
        &self,
        record: &MessageRecord,
        at: &str,
    ) -> Result<bool, StoreError> {
        let mut log = self.log.lock().map_err(poisoned)?;
        let key = (
            record.org.clone(),
            record.endpoint_id.clone(),
            record.message_id.clone(),
        );
        match log.messages.get_mut(&key) {
            Some(stored) if stored.state == record.state && stored.attempts == record.attempts => {
                stored.state = MessageState::Pending;
                stored.next_attempt_at = Some(at.to_owned());
                stored.updated_at = at.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_recovery(&self, record: &MessageRecord) -> Result<(), StoreError> {
        let mut log = self.log.lock().map_err(poisoned)?;
        let key = (
            record.org.clone(),
            record.endpoint_id.clone(),
            record.message_id.clone(),
        );
        if let Some(stored) = log.messages.get_mut(&key) {
            if stored.state == MessageState::Pending && stored.attempts == record.attempts {
                stored.state = record.state;
                stored.next_attempt_at = None;
            }
        }
        Ok(())
    }

    async fn record_messages(&self, records: &[MessageRecord]) -> Result<(), StoreError> {
        let mut log = self.log.lock().map_err(poisoned)?;
        for message in records {
            log.put_message(message);
        }
        Ok(())
    }

    async fn attempts_of(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let log = self.log.lock().map_err(poisoned)?;
        let now = unix_seconds_now();
        let prefix = format!("{message_id}#");
        Ok(log
            .attempts
            .range((org.clone(), endpoint_id.clone(), prefix.clone())..)
            .take_while(|((o, e, key), _)| o == org && e == endpoint_id && key.starts_with(&prefix))
            .map(|(_, record)| record)
            .filter(|record| record.expires_at > now)
            .cloned()
            .collect())
    }

    async fn list_messages(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        state: Option<MessageState>,
        limit: usize,
        after: Option<&MessageId>,
    ) -> Result<MessagePage, StoreError> {
        let log = self.log.lock().map_err(poisoned)?;
        let now = unix_seconds_now();
        let items = log
            .messages
            .iter()
            .rev()
            .filter(|((o, e, id), _)| o == org && e == endpoint_id && after.is_none_or(|a| id < a))
            .map(|(_, record)| record)
            .filter(|record| record.expires_at > now && state.is_none_or(|s| record.state == s))
            .cloned();
        let (messages, next_after) = page_of(items, limit, |record| record.message_id.clone());
        Ok(MessagePage {
            messages,
            next_after,
        })
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: Option<&MessageId>,
        outcome: Option<Outcome>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<AttemptPage, StoreError> {
        let log = self.log.lock().map_err(poisoned)?;
        let now = unix_seconds_now();
        let items = log
            .attempts
            .iter()
            .rev()
            .filter(|((o, e, key), _)| {
                o == org && e == endpoint_id && after.is_none_or(|a| key.as_str() < a)
            })
            .map(|(_, record)| record)
            .filter(|record| {
                record.expires_at > now
                    && message_id.is_none_or(|m| &record.message_id == m)
                    && outcome.is_none_or(|o| record.outcome == o)
            })
            .cloned();
        let (attempts, next_after) = page_of(items, limit, AttemptRecord::sort_key);
        Ok(AttemptPage {
            attempts,
            next_after,
        })
    }

    async fn recoverable_messages(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        since_millis: u64,
        until_millis: u64,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let log = self.log.lock().map_err(poisoned)?;
        let now = unix_seconds_now();
        let (low, high) = (
            MessageId::lower_bound(since_millis),
            MessageId::lower_bound(until_millis),
        );
        let items = log
            .messages
            .iter()
            .filter(|((o, e, id), _)| {
                o == org
                    && e == endpoint_id
                    && id.as_str() >= low.as_str()
                    && id.as_str() < high.as_str()
                    && after.is_none_or(|a| id > a)
            })
            .map(|(_, record)| record)
            .filter(|record| {
                record.expires_at > now
                    && matches!(record.state, MessageState::Failed | MessageState::Dead)
            })
            .cloned();
        let (messages, next_after) = page_of(items, limit, |record| record.message_id.clone());
        Ok(MessagePage {
            messages,
            next_after,
        })
    }

    async fn message_record(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let log = self.log.lock().map_err(poisoned)?;
        let key = (org.clone(), endpoint_id.clone(), message_id.clone());
        Ok(log
            .messages
            .get(&key)
            .filter(|record| record.expires_at > unix_seconds_now())
            .cloned())
    }
}
