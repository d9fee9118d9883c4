//! One suite, two stores: the in-memory store and DynamoDB (moto) must behave alike.

use std::collections::HashSet;

use common::adapters::aws::DynamoStore;
use common::adapters::embedded::MemoryStore;
use common::domain::endpoint::{Endpoint, EndpointChanges};
use common::domain::event::{Event, EventType};
use common::domain::id::EndpointId;
use common::domain::OrgId;
use common::error::StoreError;
use common::ports::{BookingStore, EndpointStore, EventOutbox};
use common::testing::{create_table, sdk_config};

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
    store.insert_endpoint(&mine).await.unwrap();
    // The same item again (an SDK retry after a lost answer) is done; another under its id is not.
    store.insert_endpoint(&mine).await.unwrap();
    let mut impostor = mine.clone();
    impostor.secret_ciphertext = vec![9, 9, 9];
    assert!(matches!(
        store.insert_endpoint(&impostor).await,
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
        store.insert_endpoint(&e).await.unwrap();
        expected.push(e.id);
    }
    for _ in 0..3 {
        store
            .insert_endpoint(&endpoint(&b, &[EventType::BookingCreated]))
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
        store.insert_endpoint(e).await.unwrap();
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
        .map(|(o, e)| (o.clone(), e.id.clone()))
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
    let mine = pending.iter().find(|(_, e)| e.id == event.id).unwrap();
    assert_eq!(mine.1, event, "the event comes back whole");
    assert!(
        store
            .pending_events(event.id.created_millis(), 10)
            .await
            .unwrap()
            .iter()
            .all(|(_, e)| e.id != event.id),
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
            .any(|(_, e)| e.id == event.id),
        "another org cannot clear it"
    );
    store.clear_event(&a, &event.id).await.unwrap();
    store.clear_event(&b, &later.id).await.unwrap();
    assert!(store
        .pending_events(now, 10)
        .await
        .unwrap()
        .iter()
        .all(|(_, e)| e.id != event.id && e.id != later.id));
}

async fn suite(store: &(impl EndpointStore + BookingStore + EventOutbox)) {
    crud_is_scoped_to_the_org(store).await;
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
        store.insert_endpoint(&e).await.unwrap();
    }
    assert_eq!(
        store
            .subscribers(&a, EventType::BookingCreated)
            .await
            .unwrap(),
        wanted
    );
}
