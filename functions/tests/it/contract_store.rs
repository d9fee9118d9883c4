//! One suite, two stores: the in-memory store and DynamoDB (moto) must behave alike.

use std::collections::HashSet;

use common::adapters::aws::DynamoStore;
use common::adapters::embedded::MemoryStore;
use common::domain::endpoint::{Endpoint, EndpointChanges};
use common::domain::event::{Event, EventType, PendingEvent};
use common::domain::id::{EndpointId, EventId};
use common::domain::OrgId;
use common::error::StoreError;
use common::ports::{BookingStore, EndpointStore, EventOutbox};
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
        created_at: "2030-01-01T00:00:00.000Z".into(),
        updated_at: "2030-01-01T00:00:00.000Z".into(),
        secret_ciphertext: vec![1, 2, 3],
    }
}

async fn crud_is_scoped_to_the_org(store: &impl EndpointStore) {
    let (a, b) = (org("org_a"), org("org_b"));
    let mine = endpoint(&a, &[EventType::BookingCreated]);
    store.insert_endpoint(&mine, CAP).await.unwrap();
    // The same item again (an SDK retry after a lost answer) is done; another under its id is not.
    store.insert_endpoint(&mine, CAP).await.unwrap();
    let mut impostor = mine.clone();
    impostor.secret_ciphertext = vec![9, 9, 9];
    assert!(matches!(
        store.insert_endpoint(&impostor, CAP).await,
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
        store.insert_endpoint(&e, CAP).await.unwrap();
        expected.push(e.id);
    }
    for _ in 0..3 {
        store
            .insert_endpoint(&endpoint(&b, &[EventType::BookingCreated]), CAP)
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
        store.insert_endpoint(e, CAP).await.unwrap();
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
    store.insert_booking(&a, &booking, &event).await.unwrap();
    let later = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    store
        .insert_booking(&b, &self::booking(), &later)
        .await
        .unwrap();

    let again = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    assert!(matches!(
        store.insert_booking(&a, &booking, &again).await,
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
    store.insert_booking(&a, &booking(), &poison).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let newer = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
    store.insert_booking(&a, &booking(), &newer).await.unwrap();
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
        store.insert_endpoint(&e, 3).await.unwrap();
        kept.push(e);
    }
    let fourth = endpoint(&a, &[EventType::BookingCreated]);
    assert!(matches!(
        store.insert_endpoint(&fourth, 3).await,
        Err(StoreError::LimitReached(3))
    ));
    assert_eq!(store.get_endpoint(&a, &fourth.id).await.unwrap(), None);
    // Another org has its own count.
    store
        .insert_endpoint(&endpoint(&b, &[EventType::BookingCreated]), 3)
        .await
        .unwrap();
    // A delete makes room; deleting twice or another org's endpoint does not.
    assert!(store.delete_endpoint(&a, &kept[0].id).await.unwrap());
    assert!(!store.delete_endpoint(&a, &kept[0].id).await.unwrap());
    assert!(!store.delete_endpoint(&b, &kept[1].id).await.unwrap());
    store.insert_endpoint(&fourth, 3).await.unwrap();
    assert!(matches!(
        store
            .insert_endpoint(&endpoint(&a, &[EventType::BookingCreated]), 3)
            .await,
        Err(StoreError::LimitReached(3))
    ));
}

async fn suite(store: &(impl EndpointStore + BookingStore + EventOutbox)) {
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
        store.insert_endpoint(&e, CAP).await.unwrap();
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
        store.insert_endpoint(&e, CAP).await.unwrap();
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
