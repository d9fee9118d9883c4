//! One suite, two stores: the in-memory store and DynamoDB (moto) must behave alike.

use std::collections::HashSet;

use common::adapters::aws::DynamoStore;
use common::adapters::embedded::MemoryStore;
use common::domain::booking::{Booking, BookingStatus};
use common::domain::delivery::{
    AttemptRecord, DisabledReason, EndpointHealth, ErrorClass, HealthChange, LogEntry,
    MessageRecord, MessageState, Outcome,
};
use common::domain::endpoint::PreviousSecret;
use common::domain::endpoint::{Endpoint, EndpointChanges};
use common::domain::event::{Event, EventType, PendingEvent};
use common::domain::id::{EndpointId, EventId, MessageId};
use common::domain::idempotency::{
    IdempotencyCompletion, IdempotencyRecord, KeyState, StoredResponse, CLAIM_LEASE,
    IDEMPOTENCY_WINDOW,
};
use common::domain::OrgId;
use common::error::StoreError;
use common::ports::{BookingStore, DeliveryLog, EndpointStore, EventOutbox, IdempotencyStore};
use common::testing::{create_table, sdk_config};

/// A cap no contract test other than the cap's own reaches.
const CAP: usize = 1000;

pub fn org(name: &str) -> OrgId {
    OrgId::parse(name).unwrap()
}

pub fn endpoint(org_id: &OrgId, events: &[EventType]) -> Endpoint {
    Endpoint {
        id: EndpointId::generate().unwrap(),
        org_id: org_id.clone(),
        url: "https://hooks.example.com/in".into(),
        events: events.to_vec(),
        description: "test".into(),
        disabled: false,
        disabled_reason: None,
        disabled_at: None,
        health: EndpointHealth::default(),
        created_at: "2030-01-01T00:00:00.000Z".into(),
        updated_at: "2030-01-01T00:00:00.000Z".into(),
        secret_ciphertext: vec![1, 2, 3],
        previous_secrets: Vec::new(),
        secret_rotated_at: None,
        headers: Default::default(),
    }
}

async fn crud_is_scoped_to_the_org(store: &impl EndpointStore) {
    let (a, b) = (org("org_a"), org("org_b"));
    let mine = endpoint(&a, &[EventType::BookingCreated]);
    store.insert_endpoint(&mine, CAP, None).await.unwrap();
    // The same item again (an SDK retry after a lost answer) is done; another under its id is not.
    store.insert_endpoint(&mine, CAP, None).await.unwrap();
    let mut impostor = mine.clone();
    impostor.secret_ciphertext = vec![9, 9, 9];
    assert!(matches!(
        store.insert_endpoint(&impostor, CAP, None).await,
        Err(StoreError::Conflict)
    ));

    assert_eq!(
        store.get_endpoint(&a, &mine.id).await.unwrap(),
        Some(mine.clone())
    );
    assert_eq!(store.get_endpoint(&b, &mine.id).await.unwrap(), None);

    let changes = EndpointChanges {
        url: Some("https://other.example.com/".into()),
        events: Some(vec![EventType::BookingCancelled, EventType::BookingUpdated]),
        description: Some("changed".into()),
        disabled: Some(true),
        headers: Some([("x-tenant".to_owned(), "acme".to_owned())].into()),
    };
    assert_eq!(
        store
            .update_endpoint(&b, &mine.id, &changes, "2030-01-02T00:00:00.000Z")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_endpoint(&a, &mine.id).await.unwrap(),
        Some(mine.clone()),
        "a foreign update changed nothing"
    );

    let updated = store
        .update_endpoint(&a, &mine.id, &changes, "2030-01-02T00:00:00.000Z")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.url, "https://other.example.com/");
    assert_eq!(
        updated.events,
        vec![EventType::BookingCancelled, EventType::BookingUpdated]
    );
    assert_eq!(updated.description, "changed");
    assert!(updated.disabled);
    assert_eq!(updated.updated_at, "2030-01-02T00:00:00.000Z");
    assert_eq!(updated.created_at, mine.created_at);
    assert_eq!(updated.secret_ciphertext, mine.secret_ciphertext);
    assert_eq!(
        store.get_endpoint(&a, &mine.id).await.unwrap(),
        Some(updated)
    );

    let missing = EndpointId::generate().unwrap();
    assert_eq!(
        store
            .update_endpoint(&a, &missing, &changes, "x")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_endpoint(&a, &missing).await.unwrap(),
        None,
        "an update never upserts"
    );

    assert!(!store.delete_endpoint(&b, &mine.id).await.unwrap());
    assert!(
        store.get_endpoint(&a, &mine.id).await.unwrap().is_some(),
        "a foreign delete removed nothing"
    );
    assert!(store.delete_endpoint(&a, &mine.id).await.unwrap());
    assert!(!store.delete_endpoint(&a, &mine.id).await.unwrap());
    assert_eq!(store.get_endpoint(&a, &mine.id).await.unwrap(), None);
}

async fn pages_return_every_endpoint_once_and_only_the_orgs(store: &impl EndpointStore) {
    let (a, b) = (org("org_pages"), org("org_pages_other"));
    let mut expected = Vec::new();
    for _ in 0..25 {
        let e = endpoint(&a, &[EventType::BookingCreated]);
        store.insert_endpoint(&e, CAP, None).await.unwrap();
        expected.push(e.id);
    }
    for _ in 0..3 {
        store
            .insert_endpoint(&endpoint(&b, &[EventType::BookingCreated]), CAP, None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = store.list_endpoints(&a, 10, after.as_ref()).await.unwrap();
        sizes.push(page.endpoints.len());
        assert!(page.endpoints.iter().all(|e| e.org_id == a));
        seen.extend(page.endpoints.into_iter().map(|e| e.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    expected.sort();
    assert_eq!(seen, expected, "every endpoint exactly once, in id order");
    let exact = store.list_endpoints(&b, 3, None).await.unwrap();
    assert_eq!(
        (exact.endpoints.len(), exact.next_after),
        (3, None),
        "no empty last page"
    );
}

async fn subscribers_are_enabled_subscribed_endpoints_of_the_org(store: &impl EndpointStore) {
    let (a, b) = (org("org_subs"), org("org_subs_other"));
    let wanted = endpoint(
        &a,
        &[EventType::BookingCancelled, EventType::BookingCreated],
    );
    let other_type = endpoint(&a, &[EventType::BookingCancelled]);
    let mut disabled = endpoint(&a, &[EventType::BookingCreated]);
    disabled.disabled = true;
    let foreign = endpoint(&b, &[EventType::BookingCreated]);
    for e in [&wanted, &other_type, &disabled, &foreign] {
        store.insert_endpoint(e, CAP, None).await.unwrap();
    }
    let found = store
        .subscribers(&a, EventType::BookingCreated)
        .await
        .unwrap();
    assert_eq!(found, vec![wanted.id.clone()]);
    let cancelled: HashSet<_> = store
        .subscribers(&a, EventType::BookingCancelled)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(cancelled, HashSet::from([wanted.id, other_type.id]));
    assert!(store
        .subscribers(&a, EventType::BookingUpdated)
        .await
        .unwrap()
        .is_empty());
}

pub fn booking() -> common::domain::booking::Booking {
    common::domain::booking::NewBooking::parse(
        br#"{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"2030-01-01T10:00:00Z","endTime":"2030-01-01T11:00:00Z"}"#,
    )
    .unwrap()
    .into_booking(common::domain::id::BookingId::generate().unwrap(), "2030-01-01T00:00:00.000Z".into())
}

async fn a_booking_and_its_event_are_stored_together_until_the_event_is_cleared(
    store: &(impl BookingStore + EventOutbox),
) {
    let (a, b) = (org("org_outbox"), org("org_outbox_other"));
    let booking = booking();
    let event = Event::new(
        EventType::BookingCreated,
        serde_json::json!({ "booking": &booking }),
    )
    .unwrap();
    store
        .insert_booking(&a, &booking, &event, None)
        .await
        .unwrap();
    let later = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    store
        .insert_booking(&b, &self::booking(), &later, None)
        .await
        .unwrap();

    let again = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    assert!(matches!(
        store.insert_booking(&a, &booking, &again, None).await,
        Err(StoreError::Conflict)
    ));

    let now = common::time::unix_millis_now() + 1;
    let pending = store.pending_events(now, 10).await.unwrap();
    let ids: Vec<_> = pending
        .iter()
        .map(|p| (p.org.clone(), p.event.id.clone()))
        .collect();
    assert!(
        ids.contains(&(a.clone(), event.id.clone()))
            && ids.contains(&(b.clone(), later.id.clone())),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|(_, id)| *id == again.id),
        "a refused booking leaves no event behind"
    );
    let mine = pending.iter().find(|p| p.event.id == event.id).unwrap();
    assert_eq!(mine.event, event, "the event comes back whole");
    assert_eq!(mine.relay_failures, 0);
    assert!(
        store
            .pending_events(event.id.created_millis(), 10)
            .await
            .unwrap()
            .iter()
            .all(|p| p.event.id != event.id),
        "younger than the cutoff"
    );
    assert_eq!(
        store.pending_events(now, 1).await.unwrap().len(),
        1,
        "limit"
    );

    store.clear_event(&b, &event.id).await.unwrap();
    assert!(
        store
            .pending_events(now, 10)
            .await
            .unwrap()
            .iter()
            .any(|p| p.event.id == event.id),
        "another org cannot clear it"
    );
    store.clear_event(&a, &event.id).await.unwrap();
    store.clear_event(&b, &later.id).await.unwrap();
    assert!(store
        .pending_events(now, 10)
        .await
        .unwrap()
        .iter()
        .all(|p| p.event.id != event.id && p.event.id != later.id));
}

async fn an_event_set_aside_comes_after_those_due_before_it(
    store: &(impl BookingStore + EventOutbox),
) {
    let a = org("org_set_aside");
    let poison = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    store
        .insert_booking(&a, &booking(), &poison, None)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let newer = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    store
        .insert_booking(&a, &booking(), &newer, None)
        .await
        .unwrap();
    let now = common::time::unix_millis_now() + 1;
    let mine = |pending: Vec<PendingEvent>| -> Vec<(EventId, u32)> {
        pending
            .into_iter()
            .filter(|p| p.org == a)
            .map(|p| (p.event.id, p.relay_failures))
            .collect()
    };
    assert_eq!(
        mine(store.pending_events(now, 100).await.unwrap()),
        [(poison.id.clone(), 0), (newer.id.clone(), 0)],
        "creation order first"
    );

    // Another org cannot move it.
    store
        .set_aside_event(&org("org_other"), &poison.id, 1, now + 60_000)
        .await
        .unwrap();
    assert_eq!(mine(store.pending_events(now, 100).await.unwrap()).len(), 2);

    store
        .set_aside_event(&a, &poison.id, 1, now + 60_000)
        .await
        .unwrap();
    assert_eq!(
        mine(store.pending_events(now, 100).await.unwrap()),
        [(newer.id.clone(), 0)],
        "not due before its new time"
    );
    assert_eq!(
        mine(store.pending_events(now + 60_001, 100).await.unwrap()),
        [(newer.id.clone(), 0), (poison.id.clone(), 1)],
        "due again later, behind the newer event, with its failures counted"
    );

    // A cleared event stays cleared when a late set-aside names it.
    store.clear_event(&a, &poison.id).await.unwrap();
    store.set_aside_event(&a, &poison.id, 2, now).await.unwrap();
    store.clear_event(&a, &newer.id).await.unwrap();
    assert!(mine(store.pending_events(u64::MAX, 100).await.unwrap()).is_empty());
}

async fn an_org_cannot_pass_its_endpoint_cap(store: &impl EndpointStore) {
    let (a, b) = (org("org_capped"), org("org_capped_other"));
    let mut kept = Vec::new();
    for _ in 0..3 {
        let e = endpoint(&a, &[EventType::BookingCreated]);
        store.insert_endpoint(&e, 3, None).await.unwrap();
        kept.push(e);
    }
    let fourth = endpoint(&a, &[EventType::BookingCreated]);
    assert!(matches!(
        store.insert_endpoint(&fourth, 3, None).await,
        Err(StoreError::LimitReached(3))
    ));
    assert_eq!(store.get_endpoint(&a, &fourth.id).await.unwrap(), None);
    // Another org has its own count.
    store
        .insert_endpoint(&endpoint(&b, &[EventType::BookingCreated]), 3, None)
        .await
        .unwrap();
    // A delete makes room; deleting twice or another org's endpoint does not.
    assert!(store.delete_endpoint(&a, &kept[0].id).await.unwrap());
    assert!(!store.delete_endpoint(&a, &kept[0].id).await.unwrap());
    assert!(!store.delete_endpoint(&b, &kept[1].id).await.unwrap());
    store.insert_endpoint(&fourth, 3, None).await.unwrap();
    assert!(matches!(
        store
            .insert_endpoint(&endpoint(&a, &[EventType::BookingCreated]), 3, None)
            .await,
        Err(StoreError::LimitReached(3))
    ));
}

async fn health(
    store: &impl EndpointStore,
    org: &OrgId,
    id: &EndpointId,
    change: HealthChange,
) -> Option<EndpointHealth> {
    store.change_health(org, id, change).await.unwrap()
}

async fn health_changes_are_atomic_conditional_and_scoped(store: &impl EndpointStore) {
    let a = org("org_health");
    let ep = endpoint(&a, &[EventType::BookingCreated]);
    store.insert_endpoint(&ep, CAP, None).await.unwrap();
    let id = &ep.id;
    let h = health(store, &a, id, HealthChange::Failed { at_millis: 1_000 })
        .await
        .unwrap();
    assert_eq!(
        (h.failure_streak, h.failing_since, h.last_failure_at),
        (1, Some(1_000), Some(1_000))
    );
    let h = health(store, &a, id, HealthChange::Failed { at_millis: 2_000 })
        .await
        .unwrap();
    assert_eq!(
        (h.failure_streak, h.failing_since, h.last_failure_at),
        (2, Some(1_000), Some(2_000)),
        "the streak keeps its start"
    );

    // Opened once, however many failures race to open it.
    let open = HealthChange::OpenCircuit {
        now_millis: 2_000,
        until_millis: 5_000,
    };
    let h = health(store, &a, id, open).await.unwrap();
    assert_eq!((h.circuit_open_until, h.circuit_opens), (Some(5_000), 1));
    let again = HealthChange::OpenCircuit {
        now_millis: 3_000,
        until_millis: 9_000,
    };
    assert_eq!(health(store, &a, id, again).await, None, "already open");

    // One probe, and not before its time.
    let probe = |now, lease| HealthChange::TakeProbe {
        now_millis: now,
        lease_until_millis: lease,
    };
    assert_eq!(
        health(store, &a, id, probe(4_000, 6_000)).await,
        None,
        "still open"
    );
    let h = health(store, &a, id, probe(5_000, 7_000)).await.unwrap();
    assert_eq!(h.probe_until, Some(7_000));
    assert_eq!(
        health(store, &a, id, probe(5_500, 8_000)).await,
        None,
        "taken"
    );
    // A failed probe ends the lease, and the circuit opens again, counted.
    let h = health(store, &a, id, HealthChange::Failed { at_millis: 5_600 })
        .await
        .unwrap();
    assert_eq!((h.failure_streak, h.probe_until), (3, None));
    let reopen = HealthChange::OpenCircuit {
        now_millis: 5_600,
        until_millis: 10_000,
    };
    assert_eq!(
        health(store, &a, id, reopen).await.unwrap().circuit_opens,
        2
    );
    let stored = store.get_endpoint(&a, id).await.unwrap().unwrap();
    assert_eq!(stored.health.circuit_open_until, Some(10_000));

    // Another org cannot even address it.
    let other = org("org_health_other");
    assert_eq!(
        health(store, &other, id, HealthChange::Failed { at_millis: 1 }).await,
        None
    );
    assert!(!store
        .disable_endpoint(
            &other,
            id,
            DisabledReason::Failing,
            "2030-01-01T00:00:00.000Z",
            None
        )
        .await
        .unwrap());

    // A success ends it all.
    let h = health(store, &a, id, HealthChange::Succeeded { at_millis: 11_000 })
        .await
        .unwrap();
    assert_eq!(
        (
            h.failure_streak,
            h.failing_since,
            h.circuit_open_until,
            h.circuit_opens,
            h.probe_until,
            h.last_success_at
        ),
        (0, None, None, 0, None, Some(11_000))
    );

    // Disabled for failing only when the streak began before the cutoff, and only once.
    health(store, &a, id, HealthChange::Failed { at_millis: 20_000 })
        .await
        .unwrap();
    let at = "2030-01-02T00:00:00.000Z";
    assert!(!store
        .disable_endpoint(&a, id, DisabledReason::Failing, at, Some(20_000))
        .await
        .unwrap());
    assert!(store
        .disable_endpoint(&a, id, DisabledReason::Failing, at, Some(20_001))
        .await
        .unwrap());
    assert!(
        !store
            .disable_endpoint(&a, id, DisabledReason::Gone, at, None)
            .await
            .unwrap(),
        "already disabled"
    );
    let stored = store.get_endpoint(&a, id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.disabled,
            stored.disabled_reason,
            stored.disabled_at.as_deref()
        ),
        (true, Some(DisabledReason::Failing), Some(at))
    );

    // Enabled again by its owner: reason cleared, health reset; disabled by its owner: manual.
    let enable = EndpointChanges {
        disabled: Some(false),
        ..EndpointChanges::default()
    };
    let enabled = store
        .update_endpoint(&a, id, &enable, "2030-01-03T00:00:00.000Z")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            enabled.disabled,
            enabled.disabled_reason,
            enabled.disabled_at
        ),
        (false, None, None)
    );
    assert_eq!(enabled.health, EndpointHealth::default());
    let disable = EndpointChanges {
        disabled: Some(true),
        ..EndpointChanges::default()
    };
    let disabled = store
        .update_endpoint(&a, id, &disable, "2030-01-04T00:00:00.000Z")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (disabled.disabled_reason, disabled.disabled_at.as_deref()),
        (
            Some(DisabledReason::Manual),
            Some("2030-01-04T00:00:00.000Z")
        )
    );

    let unknown = EndpointId::generate().unwrap();
    assert_eq!(
        health(
            store,
            &a,
            &unknown,
            HealthChange::Succeeded { at_millis: 1 }
        )
        .await,
        None
    );
}

fn log_entry(
    org: &OrgId,
    endpoint: &EndpointId,
    message: &MessageId,
    attempt: u32,
    outcome: Outcome,
    state: MessageState,
) -> LogEntry {
    LogEntry {
        attempt: AttemptRecord {
            org: org.clone(),
            endpoint_id: endpoint.clone(),
            message_id: message.clone(),
            attempt,
            at: format!("2030-01-01T00:00:0{attempt}.000Z"),
            outcome,
            status_code: Some(if outcome == Outcome::Delivered {
                200
            } else {
                503
            }),
            error_class: (outcome != Outcome::Delivered).then_some(ErrorClass::HttpStatus),
            error: (outcome != Outcome::Delivered).then(|| "HTTP 503: busy".to_owned()),
            latency_ms: 40 + u64::from(attempt),
            response_body: Some(format!("body {attempt} \u{FFFD} é")),
            trigger: Default::default(),
            expires_at: 4_102_444_800,
        },
        message: Some(MessageRecord {
            org: org.clone(),
            endpoint_id: endpoint.clone(),
            message_id: message.clone(),
            event_id: Some(EventId::generate().unwrap()),
            event_type: "booking.created".into(),
            timestamp: "2030-01-01T00:00:00.000Z".into(),
            data: serde_json::json!({ "booking": { "id": "bk_1" } }),
            state,
            attempts: attempt,
            next_attempt_at: (state == MessageState::Pending)
                .then(|| "2030-01-01T00:05:00.000Z".to_owned()),
            last_status: Some(503),
            last_error: Some("HTTP 503: busy".into()),
            updated_at: format!("2030-01-01T00:00:0{attempt}.500Z"),
            expires_at: 4_102_444_800,
            trace: None,
        }),
    }
}

async fn the_delivery_log_keeps_attempts_in_order_under_the_org(store: &impl DeliveryLog) {
    let (a, b) = (org("org_log_a"), org("org_log_b"));
    let endpoint = EndpointId::generate().unwrap();
    let message = MessageId::generate().unwrap();
    let first = log_entry(
        &a,
        &endpoint,
        &message,
        1,
        Outcome::Failed,
        MessageState::Pending,
    );
    let second = log_entry(
        &a,
        &endpoint,
        &message,
        2,
        Outcome::Failed,
        MessageState::Pending,
    );
    // Attempts 1 to 12 of other messages, in one call: more than one BatchWriteItem holds.
    let many: Vec<LogEntry> = (1..=12)
        .map(|n| {
            log_entry(
                &a,
                &endpoint,
                &MessageId::generate().unwrap(),
                n,
                Outcome::Failed,
                MessageState::Pending,
            )
        })
        .collect();
    store.record(&many).await.unwrap();
    // The same attempt twice in one call (a repeat after a crash): the later one stands.
    let mut repeated = second.clone();
    repeated.attempt.latency_ms = 99;
    store
        .record(&[second.clone(), first.clone(), repeated.clone()])
        .await
        .unwrap();
    let third = log_entry(
        &a,
        &endpoint,
        &message,
        10,
        Outcome::Delivered,
        MessageState::Delivered,
    );
    store.record(std::slice::from_ref(&third)).await.unwrap();

    let attempts = store.attempts_of(&a, &endpoint, &message).await.unwrap();
    assert_eq!(
        attempts,
        vec![first.attempt, repeated.attempt, third.attempt.clone()],
        "in attempt order (10 after 2)"
    );
    assert_eq!(
        store.message_record(&a, &endpoint, &message).await.unwrap(),
        third.message
    );
    assert!(store
        .attempts_of(&b, &endpoint, &message)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.message_record(&b, &endpoint, &message).await.unwrap(),
        None
    );
}

async fn idempotency_claims_are_exclusive_leased_and_answered_once(
    store: &(impl IdempotencyStore + BookingStore + EndpointStore + EventOutbox),
) {
    let (a, b) = (org("org_idem_a"), org("org_idem_b"));
    let now = common::time::unix_millis_now();
    let claim = |token: &str, at: u64| {
        IdempotencyRecord::claim("k1".into(), "fp1".into(), token.into(), at)
    };
    assert_eq!(
        store
            .claim_idempotency_key(&a, &claim("t1", now), now)
            .await
            .unwrap(),
        None
    );
    // Held: another claim sees the holder, in another org the key is free.
    let held = store
        .claim_idempotency_key(&a, &claim("t2", now), now)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&held.state, KeyState::Claimed { token, .. } if token == "t1"));
    assert_eq!(
        store
            .claim_idempotency_key(&b, &claim("t1", now), now)
            .await
            .unwrap(),
        None
    );
    // A completion with another token is refused and changes nothing; ours is stored.
    let response = StoredResponse {
        status: 201,
        body: "{\"ok\":true}".into(),
    };
    let completion = |token: &str| IdempotencyCompletion {
        key_id: "k1".into(),
        token: token.into(),
        response: response.clone(),
    };
    assert!(matches!(
        store.complete_idempotency_key(&a, &completion("t2")).await,
        Err(StoreError::Conflict)
    ));
    store
        .complete_idempotency_key(&a, &completion("t1"))
        .await
        .unwrap();
    let done = store.idempotency_record(&a, "k1").await.unwrap().unwrap();
    assert_eq!(done.state, KeyState::Completed(response.clone()));
    assert_eq!(done.fingerprint, "fp1");
    // Completed: no claim takes it, even after the lease; released only by its token.
    let later = now + CLAIM_LEASE.as_millis() as u64 + 1;
    assert!(store
        .claim_idempotency_key(&a, &claim("t3", later), later)
        .await
        .unwrap()
        .is_some());
    // Past its window it is free again (DynamoDB's TTL may not have removed it yet).
    let next_day = now + IDEMPOTENCY_WINDOW.as_millis() as u64 + 1_000;
    assert_eq!(
        store
            .claim_idempotency_key(&a, &claim("t8", next_day), next_day)
            .await
            .unwrap(),
        None
    );
    // An abandoned claim is taken over after its lease; a release with a stale token does
    // nothing, the holder's release frees the key.
    store
        .claim_idempotency_key(&b, &claim("t9", now), now)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key(&b, &claim("t4", later), later)
            .await
            .unwrap(),
        None
    );
    store.release_idempotency_key(&b, "k1", "t9").await.unwrap();
    assert!(store.idempotency_record(&b, "k1").await.unwrap().is_some());
    store.release_idempotency_key(&b, "k1", "t4").await.unwrap();
    assert_eq!(store.idempotency_record(&b, "k1").await.unwrap(), None);

    // An answer stored with its booking: both or neither.
    let c = org("org_idem_c");
    store
        .claim_idempotency_key(&c, &claim("t5", now), now)
        .await
        .unwrap();
    let booking = booking();
    let event = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    assert!(matches!(
        store
            .insert_booking(&c, &booking, &event, Some(&completion("stale")))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.get_booking(&c, &booking.id).await.unwrap(),
        None,
        "nothing written"
    );
    store
        .insert_booking(&c, &booking, &event, Some(&completion("t5")))
        .await
        .unwrap();
    assert_eq!(
        store.get_booking(&c, &booking.id).await.unwrap(),
        Some(booking)
    );
    assert_eq!(
        store
            .idempotency_record(&c, "k1")
            .await
            .unwrap()
            .unwrap()
            .state,
        KeyState::Completed(response)
    );

    // An event stored on its own once; the same event again is a conflict, not a copy.
    let notice = Event::new(EventType::EndpointDisabled, serde_json::json!({})).unwrap();
    store.add_event(&c, &notice).await.unwrap();
    assert!(matches!(
        store.add_event(&c, &notice).await,
        Err(StoreError::Conflict)
    ));
    store.clear_event(&c, &notice.id).await.unwrap();
}

async fn rotations_and_booking_changes_are_conditional(
    store: &(impl EndpointStore + BookingStore),
) {
    let (a, b) = (org("org_rotate_a"), org("org_rotate_b"));
    let mine = endpoint(&a, &[EventType::BookingCreated]);
    store.insert_endpoint(&mine, CAP, None).await.unwrap();
    let previous = vec![PreviousSecret {
        ciphertext: mine.secret_ciphertext.clone(),
        expires_at: 2_000,
    }];
    let rotate = |current: Vec<u8>, owner: OrgId| {
        let previous = previous.clone();
        let id = mine.id.clone();
        async move {
            store
                .rotate_secret(
                    &owner,
                    &id,
                    &current,
                    &[7, 7],
                    &previous,
                    "2030-01-02T00:00:00Z",
                    None,
                )
                .await
        }
    };
    assert!(
        !rotate(mine.secret_ciphertext.clone(), b.clone())
            .await
            .unwrap(),
        "another org's"
    );
    assert!(rotate(mine.secret_ciphertext.clone(), a.clone())
        .await
        .unwrap());
    let rotated = store.get_endpoint(&a, &mine.id).await.unwrap().unwrap();
    assert_eq!(rotated.secret_ciphertext, vec![7, 7]);
    assert_eq!(rotated.previous_secrets, previous);
    assert_eq!(
        rotated.secret_rotated_at.as_deref(),
        Some("2030-01-02T00:00:00Z")
    );
    assert!(
        matches!(
            rotate(mine.secret_ciphertext.clone(), a.clone()).await,
            Err(StoreError::Conflict)
        ),
        "a rotation made from a secret no longer current"
    );
    // Expired secrets are forgotten only while the secret they were read with is current.
    assert!(!store
        .forget_expired_secrets(&a, &mine.id, &mine.secret_ciphertext, &[])
        .await
        .unwrap());
    assert!(store
        .forget_expired_secrets(&a, &mine.id, &[7, 7], &[])
        .await
        .unwrap());
    let stored = store.get_endpoint(&a, &mine.id).await.unwrap().unwrap();
    assert!(stored.previous_secrets.is_empty());

    let booking = booking();
    let created = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    store
        .insert_booking(&a, &booking, &created, None)
        .await
        .unwrap();
    let changed = Booking {
        notes: Some("changed".into()),
        updated_at: "2030-01-03T00:00:00Z".into(),
        ..booking.clone()
    };
    let event = || Event::new(EventType::BookingUpdated, serde_json::json!({})).unwrap();
    assert!(
        matches!(
            store
                .replace_booking(&b, &changed, &booking.updated_at, &event(), None)
                .await,
            Err(StoreError::Conflict)
        ),
        "another org's booking"
    );
    assert!(
        matches!(
            store
                .replace_booking(&a, &changed, "2029-01-01T00:00:00Z", &event(), None)
                .await,
            Err(StoreError::Conflict)
        ),
        "changed since it was read"
    );
    store
        .replace_booking(&a, &changed, &booking.updated_at, &event(), None)
        .await
        .unwrap();
    assert_eq!(
        store.get_booking(&a, &booking.id).await.unwrap(),
        Some(changed.clone())
    );
    let cancelled = Booking {
        status: BookingStatus::Cancelled,
        updated_at: "2030-01-04T00:00:00Z".into(),
        ..changed.clone()
    };
    store
        .replace_booking(&a, &cancelled, &changed.updated_at, &event(), None)
        .await
        .unwrap();
    let again = Booking {
        updated_at: "2030-01-05T00:00:00Z".into(),
        ..cancelled.clone()
    };
    assert!(
        matches!(
            store
                .replace_booking(&a, &again, &cancelled.updated_at, &event(), None)
                .await,
            Err(StoreError::Conflict)
        ),
        "a cancelled booking stays as it is"
    );
    assert_eq!(store.get_booking(&b, &booking.id).await.unwrap(), None);
}

/// Many keys in one read, past DynamoDB's 100 per `BatchGetItem`, each org's under its own
/// org only, duplicates once, and a missing endpoint answered as none.
async fn a_batch_read_answers_every_key_under_its_org(store: &impl EndpointStore) {
    let (a, b) = (org("org_batch_a"), org("org_batch_b"));
    let mut keys = Vec::new();
    let mut stored = Vec::new();
    for n in 0..105 {
        let owner = if n % 2 == 0 { &a } else { &b };
        let e = endpoint(owner, &[EventType::BookingCreated]);
        store.insert_endpoint(&e, CAP, None).await.unwrap();
        keys.push((owner.clone(), e.id.clone()));
        stored.push(e);
    }
    // Another org's key for an existing endpoint, one that was never stored, and a duplicate.
    let foreign = (b.clone(), stored[0].id.clone());
    let missing = (a.clone(), EndpointId::generate().unwrap());
    keys.push(foreign.clone());
    keys.push(missing.clone());
    keys.push(keys[3].clone());

    let read = store.get_endpoints(&keys).await.unwrap();
    assert_eq!(read.len(), 107);
    for e in &stored {
        assert_eq!(read[&(e.org_id.clone(), e.id.clone())].as_ref(), Some(e));
    }
    assert_eq!(read[&foreign], None);
    assert_eq!(read[&missing], None);
    assert!(store.get_endpoints(&[]).await.unwrap().is_empty());
}

async fn suite(
    store: &(impl EndpointStore + BookingStore + EventOutbox + DeliveryLog + IdempotencyStore),
) {
    a_batch_read_answers_every_key_under_its_org(store).await;
    idempotency_claims_are_exclusive_leased_and_answered_once(store).await;
    rotations_and_booking_changes_are_conditional(store).await;
    health_changes_are_atomic_conditional_and_scoped(store).await;
    the_delivery_log_keeps_attempts_in_order_under_the_org(store).await;
    crud_is_scoped_to_the_org(store).await;
    an_org_cannot_pass_its_endpoint_cap(store).await;
    an_event_set_aside_comes_after_those_due_before_it(store).await;
    pages_return_every_endpoint_once_and_only_the_orgs(store).await;
    subscribers_are_enabled_subscribed_endpoints_of_the_org(store).await;
    a_booking_and_its_event_are_stored_together_until_the_event_is_cleared(store).await;
}

#[tokio::test]
async fn memory_store_passes_the_store_contract() {
    suite(&MemoryStore::new()).await;
}

#[tokio::test]
async fn dynamodb_store_passes_the_store_contract() {
    let sdk = sdk_config().await;
    let store = DynamoStore::from_sdk_config(&sdk, create_table(&sdk).await);
    suite(&store).await;
}

#[tokio::test]
async fn dynamodb_subscribers_read_every_page() {
    // Small pages, and a filter that discards most items, so the loop must follow
    // LastEvaluatedKey through pages that hold no subscriber at all.
    let sdk = sdk_config().await;
    let store = DynamoStore::from_sdk_config(&sdk, create_table(&sdk).await).with_scan_page_size(7);
    let a = org("org_many");
    let mut wanted = Vec::new();
    for i in 0..60 {
        let e = endpoint(
            &a,
            if i % 20 == 0 {
                &[EventType::BookingCreated]
            } else {
                &[EventType::BookingUpdated]
            },
        );
        if i % 20 == 0 {
            wanted.push(e.id.clone());
        }
        store.insert_endpoint(&e, CAP, None).await.unwrap();
    }
    assert_eq!(
        store
            .subscribers(&a, EventType::BookingCreated)
            .await
            .unwrap(),
        wanted
    );
}

#[tokio::test]
async fn dynamodb_listing_reads_on_past_a_short_page() {
    // DynamoDB may end a query page early (1 MB per call); with 4-item query pages every API
    // page spans several, and none may end the listing early.
    let sdk = sdk_config().await;
    let store = DynamoStore::from_sdk_config(&sdk, create_table(&sdk).await).with_scan_page_size(4);
    let a = org("org_short_pages");
    let mut ids = Vec::new();
    for _ in 0..23 {
        let e = endpoint(&a, &[EventType::BookingCreated]);
        store.insert_endpoint(&e, CAP, None).await.unwrap();
        ids.push(e.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_endpoints(&a, 10, after.as_ref()).await.unwrap();
        assert!(page.endpoints.len() == 10 || page.next_after.is_none());
        seen.extend(page.endpoints.into_iter().map(|e| e.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn dynamodb_filtered_pages_stop_after_ten_reads_and_go_on_from_there() {
    // One item per DynamoDB page: a filter that matches only the oldest of 25 messages must not
    // read all 25 in one request; each request reads at most 10 and hands on a cursor.
    let sdk = sdk_config().await;
    let store = DynamoStore::from_sdk_config(&sdk, create_table(&sdk).await).with_scan_page_size(1);
    let a = org("org_filtered_pages");
    let endpoint = EndpointId::generate().unwrap();
    let mut messages = Vec::new();
    for n in 0..25 {
        let state = if n == 0 {
            MessageState::Dead
        } else {
            MessageState::Delivered
        };
        let message = MessageId::generate().unwrap();
        let entry = log_entry(&a, &endpoint, &message, 1, Outcome::Delivered, state);
        store.record(&[entry]).await.unwrap();
        messages.push(message);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut after: Option<MessageId> = None;
    let mut requests = 0;
    let found = loop {
        requests += 1;
        let page = store
            .list_messages(&a, &endpoint, Some(MessageState::Dead), 5, after.as_ref())
            .await
            .unwrap();
        if !page.messages.is_empty() {
            break page.messages;
        }
        after = Some(page.next_after.expect("a short page says where to go on"));
    };
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].message_id, messages[0],
        "the oldest, reached page by page"
    );
    assert!(
        requests >= 3,
        "25 reads at most 10 a request: {requests} requests"
    );
}

#[tokio::test]
async fn dynamodb_batch_read_leaves_an_unreadable_endpoint_unanswered() {
    // Not `None`, which would drop its records as deleted: the record reads it alone and
    // reports the corrupt item.
    let sdk = sdk_config().await;
    let table = create_table(&sdk).await;
    let store = DynamoStore::from_sdk_config(&sdk, &table);
    let a = org("org_corrupt");
    let good = endpoint(&a, &[EventType::BookingCreated]);
    store.insert_endpoint(&good, CAP, None).await.unwrap();
    let broken = EndpointId::generate().unwrap();
    let s = aws_sdk_dynamodb::types::AttributeValue::S;
    aws_sdk_dynamodb::Client::new(&sdk)
        .put_item()
        .table_name(&table)
        .item("PK", s(format!("ORG#{a}")))
        .item("SK", s(format!("EP#{broken}")))
        .item("url", s("https://hooks.example.com/in".into()))
        .send()
        .await
        .unwrap();
    let read = store
        .get_endpoints(&[(a.clone(), good.id.clone()), (a.clone(), broken.clone())])
        .await
        .unwrap();
    assert_eq!(read.get(&(a.clone(), good.id.clone())), Some(&Some(good)));
    assert!(!read.contains_key(&(a.clone(), broken.clone())));
    assert!(matches!(
        store.get_endpoint(&a, &broken).await,
        Err(StoreError::Corrupt(_))
    ));
}
