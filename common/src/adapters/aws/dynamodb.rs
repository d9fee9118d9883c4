//! Endpoints, bookings and pending events in one DynamoDB table, pool model: `PK = ORG#<org>`
//! carries the tenant, `SK = EP#<id>`, `BK#<id>` or `EVT#<id>` the item. Every key is built from
//! the caller's org, so another org's item cannot be addressed; conditional writes turn a missing
//! item into a clean `None`.

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures_util::future::join_all;

use super::describe;
use crate::domain::booking::{Booking, BookingStatus};
use crate::domain::delivery::{
    AttemptRecord, DisabledReason, EndpointHealth, HealthChange, LogEntry, MessageRecord,
    MessageState, Outcome,
};
use crate::domain::endpoint::{CustomHeaders, Endpoint, EndpointChanges, PreviousSecret};
use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::{random_hex, BookingId, EndpointId, EventId, MessageId};
use crate::domain::idempotency::{
    IdempotencyCompletion, IdempotencyRecord, KeyState, StoredResponse,
};
use crate::domain::trace::TraceContext;
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::ports::{
    AttemptPage, BookingStore, DeliveryLog, EndpointPage, EndpointStore, EndpointsRead,
    EventOutbox, IdempotencyStore, MessagePage, MAX_PAGE_SIZE,
};
use crate::time::unix_seconds_now;

type Item = HashMap<String, AttributeValue>;

const ENDPOINT_PREFIX: &str = "EP#";
const BOOKING_PREFIX: &str = "BK#";
const EVENT_PREFIX: &str = "EVT#";
const MESSAGE_PREFIX: &str = "MSG#";
const ATTEMPT_PREFIX: &str = "ATT#";
const IDEMPOTENCY_PREFIX: &str = "IDEM#";

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Items read per query page when collecting subscribers.
    scan_page_size: i32,
}

/// Bounds the memory and time of one query page: a whole API page and the one item that tells
/// whether another follows.
const DEFAULT_SCAN_PAGE_SIZE: i32 = MAX_PAGE_SIZE as i32 + 1;

impl DynamoStore {
    pub fn from_sdk_config(sdk: &super::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), table)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            scan_page_size: DEFAULT_SCAN_PAGE_SIZE,
        }
    }

    /// Changes how many items one query page reads (listing and subscribers); tests use a
    /// small one to make every read span several DynamoDB pages.
    pub fn with_scan_page_size(mut self, items: i32) -> Self {
        self.scan_page_size = items.max(1);
        self
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn partition(org: &OrgId) -> AttributeValue {
    s(format!("ORG#{org}"))
}

fn endpoint_key(org: &OrgId, id: &EndpointId) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        ("SK".to_owned(), s(format!("{ENDPOINT_PREFIX}{id}"))),
    ])
}

/// The org and endpoint an endpoint key names (the inverse of [`endpoint_key`]).
fn endpoint_of_key(key: &Item) -> Option<(OrgId, EndpointId)> {
    let org = key.get("PK")?.as_s().ok()?.strip_prefix("ORG#")?;
    let id = key.get("SK")?.as_s().ok()?.strip_prefix(ENDPOINT_PREFIX)?;
    Some((OrgId::parse(org)?, EndpointId::parse(id)?))
}

/// Most keys in one `BatchGetItem` (DynamoDB API reference, BatchGetItem: 100 items).
const MAX_BATCH_GET: usize = 100;
/// Rounds for keys DynamoDB leaves unprocessed (throttling), waiting 25, 50, 100 ms: what the
/// BatchGetItem reference asks for (retry with exponential backoff), bounded so a throttled
/// table costs a delivery batch 175 ms at most before its records read alone.
const BATCH_GET_RETRIES: u32 = 3;
const BATCH_GET_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// The org's endpoint count, kept by create and delete in the same transaction as the endpoint.
/// Its sort key shares no prefix with an item kind, so no listing ever reads it.
fn endpoint_count_key(org: &OrgId) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        ("SK".to_owned(), s("COUNT#endpoints")),
    ])
}

const ENDPOINT_COUNT: &str = "endpointCount";

/// A fresh idempotency token for one transaction (DynamoDB takes 1 to 36 characters).
fn request_token() -> Result<String, StoreError> {
    random_hex(16).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// The items of a cancelled transaction whose condition failed, by their index in the request
/// (with DynamoDB's reason, which holds the stored item when it was asked for); empty for any
/// other error, a transaction conflict included.
fn failed_conditions(
    error: &SdkError<TransactWriteItemsError, HttpResponse>,
) -> Vec<(usize, &CancellationReason)> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, reason)| reason.code() == Some("ConditionalCheckFailed"))
            .collect(),
        _ => Vec::new(),
    }
}

/// An `UpdateItem`'s answer when its condition held, `None` when the condition refused it (a
/// clean "no", not a failure).
fn applied(
    result: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
) -> Result<Option<UpdateItemOutput>, StoreError> {
    match result {
        Ok(output) => Ok(Some(output)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The endpoint an `UpdateItem` with `ReturnValues: ALL_NEW` left, when its condition held.
fn updated_endpoint(
    result: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
) -> Result<Option<Endpoint>, StoreError> {
    applied(result)?
        .and_then(|output| output.attributes)
        .as_ref()
        .map(endpoint_from_item)
        .transpose()
}

fn unavailable(error: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

fn events_value(events: &[EventType]) -> AttributeValue {
    AttributeValue::L(events.iter().map(|t| s(t.as_str())).collect())
}

fn endpoint_item(endpoint: &Endpoint) -> Item {
    let mut item = endpoint_key(&endpoint.org_id, &endpoint.id);
    item.extend([
        ("kind".to_owned(), s("endpoint")),
        ("id".to_owned(), s(endpoint.id.as_str())),
        ("orgId".to_owned(), s(endpoint.org_id.as_str())),
        ("url".to_owned(), s(&endpoint.url)),
        ("events".to_owned(), events_value(&endpoint.events)),
        ("description".to_owned(), s(&endpoint.description)),
        (
            "disabled".to_owned(),
            AttributeValue::Bool(endpoint.disabled),
        ),
        ("createdAt".to_owned(), s(&endpoint.created_at)),
        ("updatedAt".to_owned(), s(&endpoint.updated_at)),
        (
            "secret".to_owned(),
            AttributeValue::B(Blob::new(endpoint.secret_ciphertext.clone())),
        ),
        ("headers".to_owned(), headers_value(&endpoint.headers)),
        (
            "previousSecrets".to_owned(),
            previous_secrets_value(&endpoint.previous_secrets),
        ),
    ]);
    optional(
        &mut item,
        "secretRotatedAt",
        endpoint.secret_rotated_at.clone().map(s),
    );
    item
}

fn headers_value(headers: &CustomHeaders) -> AttributeValue {
    AttributeValue::M(
        headers
            .iter()
            .map(|(name, value)| (name.clone(), s(value)))
            .collect(),
    )
}

fn headers_from(item: &Item) -> Result<CustomHeaders, StoreError> {
    let Some(map) = item.get("headers").and_then(|v| v.as_m().ok()) else {
        return Ok(CustomHeaders::new());
    };
    map.iter()
        .map(|(name, value)| {
            value
                .as_s()
                .map(|value| (name.clone(), value.clone()))
                .map_err(|_| StoreError::Corrupt(format!("header {name} is not a string")))
        })
        .collect()
}

/// `[{secret: B, expiresAt: N (Unix ms)}]`, newest first.
fn previous_secrets_value(previous: &[PreviousSecret]) -> AttributeValue {
    AttributeValue::L(
        previous
            .iter()
            .map(|p| {
                AttributeValue::M(HashMap::from([
                    (
                        "secret".to_owned(),
                        AttributeValue::B(Blob::new(p.ciphertext.clone())),
                    ),
                    ("expiresAt".to_owned(), n(p.expires_at)),
                ]))
            })
            .collect(),
    )
}

fn previous_secrets_from(item: &Item) -> Result<Vec<PreviousSecret>, StoreError> {
    let Some(list) = item.get("previousSecrets").and_then(|v| v.as_l().ok()) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|entry| {
            let entry = entry.as_m().ok();
            let ciphertext = entry
                .and_then(|m| m.get("secret"))
                .and_then(|v| v.as_b().ok())
                .map(|b| b.as_ref().to_vec());
            let expires_at = entry.and_then(|m| number(m, "expiresAt"));
            match (ciphertext, expires_at) {
                (Some(ciphertext), Some(expires_at)) => Ok(PreviousSecret {
                    ciphertext,
                    expires_at,
                }),
                _ => Err(StoreError::Corrupt("malformed previous secret".into())),
            }
        })
        .collect()
}

/// A string attribute that may be absent.
fn optional_text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} is missing or not a string")))
}

fn endpoint_from_item(item: &Item) -> Result<Endpoint, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let events = item
        .get("events")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("attribute events is missing"))?
        .iter()
        .map(|v| {
            v.as_s()
                .ok()
                .and_then(|name| name.parse::<EventType>().ok())
                .ok_or_else(|| corrupt("unknown event type in events"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Endpoint {
        id: EndpointId::parse(text(item, "id")?).ok_or_else(|| corrupt("malformed endpoint id"))?,
        org_id: OrgId::parse(text(item, "orgId")?).ok_or_else(|| corrupt("malformed org id"))?,
        url: text(item, "url")?.to_owned(),
        events,
        description: text(item, "description")?.to_owned(),
        disabled: *item
            .get("disabled")
            .and_then(|v| v.as_bool().ok())
            .ok_or_else(|| corrupt("attribute disabled is missing"))?,
        disabled_reason: item
            .get("disabledReason")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| v.parse::<DisabledReason>().ok()),
        disabled_at: optional_text(item, "disabledAt"),
        health: EndpointHealth {
            failure_streak: number(item, "failureStreak").unwrap_or(0),
            failing_since: number(item, "failingSince"),
            last_success_at: number(item, "lastSuccessAt"),
            last_failure_at: number(item, "lastFailureAt"),
            circuit_open_until: number(item, "circuitOpenUntil"),
            circuit_opens: number(item, "circuitOpens").unwrap_or(0),
            probe_until: number(item, "probeUntil"),
        },
        created_at: text(item, "createdAt")?.to_owned(),
        updated_at: text(item, "updatedAt")?.to_owned(),
        secret_ciphertext: item
            .get("secret")
            .and_then(|v| v.as_b().ok())
            .ok_or_else(|| corrupt("attribute secret is missing"))?
            .clone()
            .into_inner(),
        headers: headers_from(item)?,
        previous_secrets: previous_secrets_from(item)?,
        secret_rotated_at: optional_text(item, "secretRotatedAt"),
    })
}

impl EndpointStore for DynamoStore {
    async fn insert_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: usize,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(endpoint_item(endpoint)))
            .condition_expression("attribute_not_exists(PK)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(endpoint_count_key(&endpoint.org_id)))
            .update_expression("ADD #count :one")
            .condition_expression("attribute_not_exists(#count) OR #count < :max")
            .expression_attribute_names("#count", ENDPOINT_COUNT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":max", AttributeValue::N(max_per_org.to_string()))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            // The SDK's own retry of a transaction that did commit is then a success, not a
            // failed condition (DynamoDB remembers the token for 10 minutes); a new id is
            // generated for every create.
            .client_request_token(endpoint.id.as_str())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .transact_item_if_some(self.completion_item(&endpoint.org_id, completion)?)
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let failed = failed_conditions(&error);
        if failed.iter().any(|(index, _)| *index == 2) {
            return Err(StoreError::Conflict);
        }
        if let Some(endpoint_reason) = failed.iter().find(|(index, _)| *index == 0) {
            // A retried create whose first try was stored but whose answer was lost: the item
            // holding our own secret ciphertext is ours, not a conflict.
            let stored = endpoint_reason
                .1
                .item()
                .and_then(|item| item.get("secret"))
                .and_then(|v| v.as_b().ok());
            return if stored.is_some_and(|b| b.as_ref() == endpoint.secret_ciphertext.as_slice()) {
                Ok(())
            } else {
                Err(StoreError::Conflict)
            };
        }
        if failed.iter().any(|(index, _)| *index == 1) {
            return Err(StoreError::LimitReached(max_per_org));
        }
        Err(unavailable(error))
    }

    async fn get_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, StoreError> {
        self.read_item(endpoint_key(org, id))
            .await?
            .as_ref()
            .map(endpoint_from_item)
            .transpose()
    }

    async fn get_endpoints(
        &self,
        keys: &[(OrgId, EndpointId)],
    ) -> Result<EndpointsRead, StoreError> {
        let mut unique: Vec<&(OrgId, EndpointId)> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        let mut read = EndpointsRead::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_BATCH_GET) {
            let mut wanted: Vec<Item> = chunk
                .iter()
                .map(|(org, id)| endpoint_key(org, id))
                .collect();
            // Left unprocessed after the retries, or unparsable: not answered.
            let mut unreadable: Vec<(OrgId, EndpointId)> = Vec::new();
            let mut backoff = BATCH_GET_BACKOFF;
            for round in 0..=BATCH_GET_RETRIES {
                if round > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .map_err(unavailable)?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(unavailable)?;
                // Keyed by the item's own key. One that does not parse is left unanswered
                // (not `None`, which would drop its records as deleted): the record that needs
                // it reads it alone and reports it.
                for item in output
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let Some(key) = endpoint_of_key(&item) else {
                        continue;
                    };
                    match endpoint_from_item(&item) {
                        Ok(endpoint) => {
                            read.insert(key, Some(endpoint));
                        }
                        Err(_) => unreadable.push(key),
                    }
                }
                wanted = output
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.table)
                    .map(|left| left.keys)
                    .unwrap_or_default();
                if wanted.is_empty() {
                    break;
                }
            }
            unreadable.extend(wanted.iter().filter_map(endpoint_of_key));
            for key in chunk {
                if !unreadable.contains(key) {
                    read.entry((*key).clone()).or_insert(None);
                }
            }
        }
        Ok(read)
    }

    async fn list_endpoints(
        &self,
        org: &OrgId,
        limit: usize,
        after: Option<&EndpointId>,
    ) -> Result<EndpointPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        // One more than asked tells whether another page follows, without an empty last page.
        // A query page can stop short of its Limit (DynamoDB reads at most 1 MB per call), so
        // read on from LastEvaluatedKey until the page is full or the org has no more.
        let mut endpoints = Vec::with_capacity(limit + 1);
        let mut start = after.map(|id| endpoint_key(org, id));
        loop {
            let wanted = i32::try_from(limit + 1 - endpoints.len()).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", partition(org))
                .expression_attribute_values(":prefix", s(ENDPOINT_PREFIX))
                .set_exclusive_start_key(start.take())
                .limit(wanted.min(self.scan_page_size))
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                endpoints.push(endpoint_from_item(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && endpoints.len() <= limit => start = Some(key),
                _ => break,
            }
        }
        let next_after = if endpoints.len() > limit {
            endpoints.truncate(limit);
            endpoints.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EndpointPage {
            endpoints,
            next_after,
        })
    }

    async fn update_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        changes: &EndpointChanges,
        updated_at: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut sets = vec!["#updatedAt = :updatedAt"];
        let mut names = HashMap::from([("#updatedAt".to_owned(), "updatedAt".to_owned())]);
        let mut values = HashMap::from([(":updatedAt".to_owned(), s(updated_at))]);
        let mut set = |name: &'static str, expression: &'static str, value: AttributeValue| {
            sets.push(expression);
            names.insert(format!("#{name}"), name.to_owned());
            values.insert(format!(":{name}"), value);
        };
        if let Some(url) = &changes.url {
            set("url", "#url = :url", s(url));
        }
        if let Some(events) = &changes.events {
            set("events", "#events = :events", events_value(events));
        }
        if let Some(description) = &changes.description {
            set("description", "#description = :description", s(description));
        }
        if let Some(headers) = &changes.headers {
            set("headers", "#headers = :headers", headers_value(headers));
        }
        if let Some(disabled) = changes.disabled {
            set(
                "disabled",
                "#disabled = :disabled",
                AttributeValue::Bool(disabled),
            );
        }
        let mut removes: &[&str] = &[];
        if changes.disabled == Some(true) {
            set(
                "disabledReason",
                "#disabledReason = :disabledReason",
                s(DisabledReason::Manual.as_str()),
            );
            set("disabledAt", "#disabledAt = :disabledAt", s(updated_at));
        }
        if changes.disabled == Some(false) {
            // Enabled again: a fresh start, its circuit closed.
            set("failureStreak", "#failureStreak = :failureStreak", n(0));
            set("circuitOpens", "#circuitOpens = :circuitOpens", n(0));
            removes = &[
                "disabledReason",
                "disabledAt",
                "failingSince",
                "lastSuccessAt",
                "lastFailureAt",
                "circuitOpenUntil",
                "probeUntil",
            ];
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(" REMOVE ");
            expression.push_str(&removes.join(", "));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .update_expression(expression)
            .condition_expression("attribute_exists(PK)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated_endpoint(result)
    }

    async fn delete_endpoint(&self, org: &OrgId, id: &EndpointId) -> Result<bool, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .condition_expression("attribute_exists(PK)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(endpoint_count_key(org)))
            .update_expression("ADD #count :minus_one")
            .expression_attribute_names("#count", ENDPOINT_COUNT)
            .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            // One token per call: the SDK's retry of a delete that happened but whose answer
            // was lost is then a success, not a failed condition (a 404 for a delete that
            // happened); a new DELETE request is a new call, and gets its own 404.
            .client_request_token(request_token()?)
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if failed_conditions(&e).iter().any(|(index, _)| *index == 0) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn change_health(
        &self,
        org: &OrgId,
        id: &EndpointId,
        change: HealthChange,
    ) -> Result<Option<EndpointHealth>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .return_values(ReturnValue::AllNew);
        let update = match change {
            HealthChange::Succeeded { at_millis } => update
                .update_expression("SET failureStreak = :zero, circuitOpens = :zero, lastSuccessAt = :at REMOVE failingSince, circuitOpenUntil, probeUntil")
                .condition_expression("attribute_exists(PK)")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":at", n(at_millis)),
            HealthChange::Failed { at_millis } => update
                .update_expression("SET failureStreak = if_not_exists(failureStreak, :zero) + :one, failingSince = if_not_exists(failingSince, :at), lastFailureAt = :at REMOVE probeUntil")
                .condition_expression("attribute_exists(PK)")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":at", n(at_millis)),
            HealthChange::OpenCircuit { now_millis, until_millis } => update
                .update_expression("SET circuitOpenUntil = :until, circuitOpens = if_not_exists(circuitOpens, :zero) + :one")
                // Concurrent failures open it once.
                .condition_expression("attribute_exists(PK) AND (attribute_not_exists(circuitOpenUntil) OR circuitOpenUntil <= :now)")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now_millis))
                .expression_attribute_values(":until", n(until_millis)),
            HealthChange::TakeProbe { now_millis, lease_until_millis } => update
                .update_expression("SET probeUntil = :lease")
                .condition_expression("attribute_exists(PK) AND circuitOpenUntil <= :now AND (attribute_not_exists(probeUntil) OR probeUntil <= :now)")
                .expression_attribute_values(":now", n(now_millis))
                .expression_attribute_values(":lease", n(lease_until_millis)),
        };
        Ok(updated_endpoint(update.send().await)?.map(|endpoint| endpoint.health))
    }

    async fn disable_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        reason: DisabledReason,
        at: &str,
        failing_since_before: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut condition = "attribute_exists(PK) AND disabled = :false".to_owned();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .update_expression("SET disabled = :true, disabledReason = :reason, disabledAt = :at")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":reason", s(reason.as_str()))
            .expression_attribute_values(":at", s(at));
        if let Some(cutoff) = failing_since_before {
            condition.push_str(" AND failingSince < :cutoff");
            update = update.expression_attribute_values(":cutoff", n(cutoff));
        }
        Ok(applied(update.condition_expression(condition).send().await)?.is_some())
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
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .condition_expression("attribute_exists(PK) AND secret = :current")
            .expression_attribute_values(":current", AttributeValue::B(Blob::new(current_ciphertext)))
            .expression_attribute_values(":new", AttributeValue::B(Blob::new(new_ciphertext)))
            .expression_attribute_values(":previous", previous_secrets_value(previous))
            .expression_attribute_values(":at", s(rotated_at))
            .update_expression("SET secret = :new, previousSecrets = :previous, secretRotatedAt = :at, updatedAt = :at")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            .client_request_token(request_token()?)
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_item_if_some(self.completion_item(org, completion)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let failed = failed_conditions(&e);
                match failed.iter().find(|(index, _)| *index == 0) {
                    Some((_, reason)) if reason.item().is_none() => Ok(false),
                    Some(_) => Err(StoreError::Conflict),
                    None if !failed.is_empty() => Err(StoreError::Conflict),
                    None => Err(unavailable(e)),
                }
            }
        }
    }

    async fn forget_expired_secrets(
        &self,
        org: &OrgId,
        id: &EndpointId,
        current_ciphertext: &[u8],
        kept: &[PreviousSecret],
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(endpoint_key(org, id)))
            .update_expression("SET previousSecrets = :kept")
            .condition_expression("attribute_exists(PK) AND secret = :current")
            .expression_attribute_values(
                ":current",
                AttributeValue::B(Blob::new(current_ciphertext)),
            )
            .expression_attribute_values(":kept", previous_secrets_value(kept))
            .send()
            .await;
        Ok(applied(result)?.is_some())
    }

    async fn subscribers(
        &self,
        org: &OrgId,
        event_type: EventType,
    ) -> Result<Vec<EndpointId>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .filter_expression("#disabled = :false AND contains(#events, :type)")
                .projection_expression("id")
                .expression_attribute_names("#disabled", "disabled")
                .expression_attribute_names("#events", "events")
                .expression_attribute_values(":pk", partition(org))
                .expression_attribute_values(":prefix", s(ENDPOINT_PREFIX))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":type", s(event_type.as_str()))
                .set_exclusive_start_key(start.take())
                .limit(self.scan_page_size)
                // An endpoint created a moment before the event must not be missed.
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                let id = text(item, "id")?;
                ids.push(
                    EndpointId::parse(id)
                        .ok_or_else(|| StoreError::Corrupt("malformed endpoint id".into()))?,
                );
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(ids),
            }
        }
    }
}

/// The sparse index of the outbox: only pending event items carry its keys.
pub const PENDING_EVENTS_INDEX: &str = "pending-events";
/// The outbox index key is spread over this many values, so bookings of every tenant do not all
/// write to one index partition.
const OUTBOX_SHARDS: usize = 8;

fn outbox_shard_key(shard: usize) -> String {
    format!("PENDING#{shard}")
}

/// The shard of an event: a hash of its id (the random part spreads it evenly).
fn outbox_shard(id: &EventId) -> usize {
    let hash = id.as_str().bytes().fold(0u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u32::from(byte))
    });
    hash as usize % OUTBOX_SHARDS
}
/// An event still pending after this long is past saving (the DLQ keeps messages as long);
/// DynamoDB's TTL removes it.
const OUTBOX_TTL_SECS: i64 = 14 * 24 * 3600;

fn booking_item(org: &OrgId, booking: &Booking) -> Item {
    let mut item = HashMap::from([
        ("PK".to_owned(), partition(org)),
        (
            "SK".to_owned(),
            s(format!("{BOOKING_PREFIX}{}", booking.id)),
        ),
        ("kind".to_owned(), s("booking")),
        ("id".to_owned(), s(booking.id.as_str())),
        ("customerName".to_owned(), s(&booking.customer_name)),
        ("customerEmail".to_owned(), s(&booking.customer_email)),
        ("startTime".to_owned(), s(&booking.start_time)),
        ("endTime".to_owned(), s(&booking.end_time)),
        ("status".to_owned(), s(booking.status.as_str())),
        ("createdAt".to_owned(), s(&booking.created_at)),
        ("updatedAt".to_owned(), s(&booking.updated_at)),
    ]);
    optional(&mut item, "serviceId", booking.service_id.clone().map(s));
    optional(&mut item, "notes", booking.notes.clone().map(s));
    optional(
        &mut item,
        "cancelledAt",
        booking.cancelled_at.clone().map(s),
    );
    optional(&mut item, "reason", booking.reason.clone().map(s));
    item
}

fn booking_key(org: &OrgId, id: &BookingId) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        ("SK".to_owned(), s(format!("{BOOKING_PREFIX}{id}"))),
    ])
}

fn booking_from_item(item: &Item) -> Result<Booking, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let created_at = text(item, "createdAt")?.to_owned();
    Ok(Booking {
        id: BookingId::parse(text(item, "id")?).ok_or_else(|| corrupt("malformed booking id"))?,
        customer_name: text(item, "customerName")?.to_owned(),
        customer_email: text(item, "customerEmail")?.to_owned(),
        start_time: text(item, "startTime")?.to_owned(),
        end_time: text(item, "endTime")?.to_owned(),
        service_id: optional_text(item, "serviceId"),
        notes: optional_text(item, "notes"),
        // Bookings stored before they had a status or a change time were confirmed, and
        // unchanged since their creation.
        status: match optional_text(item, "status") {
            None => BookingStatus::Confirmed,
            Some(status) => {
                BookingStatus::parse(&status).ok_or_else(|| corrupt("unknown booking status"))?
            }
        },
        updated_at: optional_text(item, "updatedAt").unwrap_or_else(|| created_at.clone()),
        created_at,
        cancelled_at: optional_text(item, "cancelledAt"),
        reason: optional_text(item, "reason"),
    })
}

fn idempotency_key(org: &OrgId, key_id: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        ("SK".to_owned(), s(format!("{IDEMPOTENCY_PREFIX}{key_id}"))),
    ])
}

fn idempotency_item(org: &OrgId, record: &IdempotencyRecord) -> Item {
    let mut item = idempotency_key(org, &record.key_id);
    item.extend([
        ("kind".to_owned(), s("idempotency")),
        ("keyId".to_owned(), s(&record.key_id)),
        ("fingerprint".to_owned(), s(&record.fingerprint)),
        ("expiresAt".to_owned(), n(record.expires_at)),
    ]);
    match &record.state {
        KeyState::Claimed { token, lease_until } => item.extend([
            ("state".to_owned(), s("claimed")),
            ("claimToken".to_owned(), s(token)),
            ("leaseUntil".to_owned(), n(lease_until)),
        ]),
        KeyState::Completed(response) => item.extend([
            ("state".to_owned(), s("completed")),
            ("responseStatus".to_owned(), n(response.status)),
            ("responseBody".to_owned(), s(&response.body)),
        ]),
    }
    item
}

fn idempotency_from_item(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let state = match text(item, "state")? {
        "claimed" => KeyState::Claimed {
            token: text(item, "claimToken")?.to_owned(),
            lease_until: number(item, "leaseUntil")
                .ok_or_else(|| corrupt("leaseUntil is missing"))?,
        },
        "completed" => KeyState::Completed(StoredResponse {
            status: number(item, "responseStatus")
                .ok_or_else(|| corrupt("responseStatus is missing"))?,
            body: text(item, "responseBody")?.to_owned(),
        }),
        _ => return Err(corrupt("unknown idempotency state")),
    };
    Ok(IdempotencyRecord {
        key_id: text(item, "keyId")?.to_owned(),
        fingerprint: text(item, "fingerprint")?.to_owned(),
        state,
        expires_at: number(item, "expiresAt").ok_or_else(|| corrupt("expiresAt is missing"))?,
    })
}

fn event_key(org: &OrgId, id: &EventId) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        ("SK".to_owned(), s(format!("{EVENT_PREFIX}{id}"))),
    ])
}

fn event_item(org: &OrgId, event: &Event) -> Result<Item, StoreError> {
    let data =
        serde_json::to_string(&event.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut item = event_key(org, &event.id);
    item.extend([
        ("kind".to_owned(), s("event")),
        ("id".to_owned(), s(event.id.as_str())),
        ("orgId".to_owned(), s(org.as_str())),
        ("type".to_owned(), s(event.event_type.as_str())),
        ("timestamp".to_owned(), s(&event.timestamp)),
        ("data".to_owned(), s(data)),
        (
            "outbox".to_owned(),
            s(outbox_shard_key(outbox_shard(&event.id))),
        ),
        // The outbox index's sort key: when the event is due for the relay. Its creation
        // first; a failed relay moves it later (`set_aside_event`).
        (
            "pendingSince".to_owned(),
            AttributeValue::N(event.id.created_millis().to_string()),
        ),
        (
            "expiresAt".to_owned(),
            AttributeValue::N((unix_seconds_now() + OUTBOX_TTL_SECS).to_string()),
        ),
    ]);
    put_trace(&mut item, event.trace.as_ref());
    Ok(item)
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

/// A pending event and when it is due.
fn pending_from_item(item: &Item) -> Result<(u64, PendingEvent), StoreError> {
    let (org, event) = event_from_item(item)?;
    let due = number(item, "pendingSince")
        .ok_or_else(|| StoreError::Corrupt("attribute pendingSince is missing".into()))?;
    Ok((
        due,
        PendingEvent {
            org,
            event,
            relay_failures: number(item, "relayFailures").unwrap_or(0),
        },
    ))
}

fn event_from_item(item: &Item) -> Result<(OrgId, Event), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let org = OrgId::parse(text(item, "orgId")?).ok_or_else(|| corrupt("malformed org id"))?;
    let event = Event {
        id: EventId::parse(text(item, "id")?).ok_or_else(|| corrupt("malformed event id"))?,
        event_type: text(item, "type")?
            .parse()
            .map_err(|_| corrupt("unknown event type"))?,
        timestamp: text(item, "timestamp")?.to_owned(),
        data: serde_json::from_str(text(item, "data")?).map_err(|e| corrupt(&e.to_string()))?,
        trace: trace_from(item),
    };
    Ok((org, event))
}

impl BookingStore for DynamoStore {
    async fn insert_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        event: &Event,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let result = self
            .client
            .transact_write_items()
            // Makes the SDK's own retry of a transaction that did commit a success, not a
            // failed condition (DynamoDB remembers the token for 10 minutes).
            .client_request_token(event.id.as_str())
            .transact_items(put(booking_item(org, booking))?)
            .transact_items(put(event_item(org, event)?)?)
            .transact_item_if_some(self.completion_item(org, completion)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if !failed_conditions(&e).is_empty() => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get_booking(
        &self,
        org: &OrgId,
        id: &BookingId,
    ) -> Result<Option<Booking>, StoreError> {
        self.read_item(booking_key(org, id))
            .await?
            .as_ref()
            .map(booking_from_item)
            .transpose()
    }

    async fn replace_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        read_updated_at: &str,
        event: &Event,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), StoreError> {
        let replace = Put::builder()
            .table_name(&self.table)
            .set_item(Some(booking_item(org, booking)))
            // A booking stored before it had a status is confirmed, and its updatedAt is its
            // createdAt.
            .condition_expression("attribute_exists(PK) AND (#status = :confirmed OR attribute_not_exists(#status)) AND (updatedAt = :seen OR (attribute_not_exists(updatedAt) AND createdAt = :seen))")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":confirmed", s(BookingStatus::Confirmed.as_str()))
            .expression_attribute_values(":seen", s(read_updated_at))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_item(org, event)?))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            .client_request_token(request_token()?)
            .transact_items(TransactWriteItem::builder().put(replace).build())
            .transact_items(TransactWriteItem::builder().put(event).build())
            .transact_item_if_some(self.completion_item(org, completion)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if !failed_conditions(&e).is_empty() => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl DynamoStore {
    /// One item by its key, read consistently (a write that was answered is seen).
    async fn read_item(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    /// The transaction item that stores an idempotency key's answer, if its claim is still
    /// the request's; none without a completion.
    fn completion_item(
        &self,
        org: &OrgId,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<Option<TransactWriteItem>, StoreError> {
        let Some(completion) = completion else {
            return Ok(None);
        };
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(idempotency_key(org, &completion.key_id)))
            .update_expression(COMPLETE_KEY)
            .condition_expression(CLAIM_IS_OURS)
            .expression_attribute_names("#state", "state")
            .set_expression_attribute_values(Some(completion_values(completion)))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(TransactWriteItem::builder().update(update).build()))
    }
}

/// Adds an item to a transaction only when there is one (the SDK's `set_transact_items`
/// would replace the items already added).
trait TransactItemIfSome {
    fn transact_item_if_some(self, item: Option<TransactWriteItem>) -> Self;
}

impl TransactItemIfSome for TransactWriteItemsFluentBuilder {
    fn transact_item_if_some(self, item: Option<TransactWriteItem>) -> Self {
        match item {
            Some(item) => self.transact_items(item),
            None => self,
        }
    }
}

const COMPLETE_KEY: &str =
    "SET #state = :completed, responseStatus = :status, responseBody = :body REMOVE claimToken, leaseUntil";
const CLAIM_IS_OURS: &str = "claimToken = :token";

/// The values of [`COMPLETE_KEY`] and [`CLAIM_IS_OURS`] for one completion.
fn completion_values(completion: &IdempotencyCompletion) -> Item {
    HashMap::from([
        (":completed".to_owned(), s("completed")),
        (":status".to_owned(), n(completion.response.status)),
        (":body".to_owned(), s(&completion.response.body)),
        (":token".to_owned(), s(&completion.token)),
    ])
}

impl IdempotencyStore for DynamoStore {
    async fn claim_idempotency_key(
        &self,
        org: &OrgId,
        claim: &IdempotencyRecord,
        now_millis: u64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        // Twice at most: a record deleted (released) between the condition and its answer leaves
        // nothing to report, and the key is then free for a second try.
        for _ in 0..2 {
            let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(idempotency_item(org, claim)))
            .condition_expression("attribute_not_exists(PK) OR expiresAt <= :now_secs OR (#state = :claimed AND leaseUntil <= :now_millis)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":now_secs", n(now_millis / 1000))
            .expression_attribute_values(":now_millis", n(now_millis))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
            match result {
            Ok(_) => return Ok(None),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    if let Some(item) = failed.item() {
                        return idempotency_from_item(item).map(Some);
                    }
                }
                _ => return Err(unavailable(e)),
            },
        }
        }
        Err(StoreError::Unavailable(
            "the idempotency record kept changing while it was claimed".into(),
        ))
    }

    async fn idempotency_record(
        &self,
        org: &OrgId,
        key_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item = self.read_item(idempotency_key(org, key_id)).await?;
        let record = item.as_ref().map(idempotency_from_item).transpose()?;
        Ok(record.filter(|r| r.expires_at > unix_seconds_now()))
    }

    async fn complete_idempotency_key(
        &self,
        org: &OrgId,
        completion: &IdempotencyCompletion,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(idempotency_key(org, &completion.key_id)))
            .update_expression(COMPLETE_KEY)
            .condition_expression(CLAIM_IS_OURS)
            .expression_attribute_names("#state", "state")
            .set_expression_attribute_values(Some(completion_values(completion)))
            .send()
            .await;
        match applied(result)? {
            Some(_) => Ok(()),
            None => Err(StoreError::Conflict),
        }
    }

    async fn release_idempotency_key(
        &self,
        org: &OrgId,
        key_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(idempotency_key(org, key_id)))
            .condition_expression(CLAIM_IS_OURS)
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl EventOutbox for DynamoStore {
    async fn pending_events(
        &self,
        due_before_millis: u64,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        let limit = limit.max(1);
        // Each shard yields twice its share, not the whole limit: a read costs about 2 x limit
        // items instead of 8 x. Order across shards is then exact only up to that share, which
        // is enough for a relay that takes everything due, read after read.
        let per_shard = limit.div_ceil(OUTBOX_SHARDS) * 2;
        let queries = (0..OUTBOX_SHARDS).map(|shard| {
            self.client
                .query()
                .table_name(&self.table)
                .index_name(PENDING_EVENTS_INDEX)
                .key_condition_expression("outbox = :shard AND pendingSince < :cutoff")
                .expression_attribute_values(":shard", s(outbox_shard_key(shard)))
                .expression_attribute_values(
                    ":cutoff",
                    AttributeValue::N(due_before_millis.to_string()),
                )
                .limit(i32::try_from(per_shard).unwrap_or(i32::MAX))
                .send()
        });
        let mut pending = Vec::new();
        for output in join_all(queries).await {
            for item in output.map_err(unavailable)?.items() {
                // One unreadable item must not stall the relay for every tenant.
                match pending_from_item(item) {
                    Ok(event) => pending.push(event),
                    Err(error) => tracing::error!(%error, "skipping an unreadable outbox item"),
                }
            }
        }
        // Earliest due first across shards.
        pending.sort_by(|(a_due, a), (b_due, b)| (a_due, &a.event.id).cmp(&(b_due, &b.event.id)));
        pending.truncate(limit);
        Ok(pending.into_iter().map(|(_, event)| event).collect())
    }

    async fn set_aside_event(
        &self,
        org: &OrgId,
        id: &EventId,
        relay_failures: u32,
        due_at_millis: u64,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(event_key(org, id)))
            .update_expression("SET pendingSince = :due, relayFailures = :failures")
            // A cleared event must stay cleared, not come back as a stub.
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":due", AttributeValue::N(due_at_millis.to_string()))
            .expression_attribute_values(":failures", AttributeValue::N(relay_failures.to_string()))
            .send()
            .await;
        applied(result).map(|_| ())
    }

    async fn add_event(&self, org: &OrgId, event: &Event) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(org, event)?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn clear_event(&self, org: &OrgId, id: &EventId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(event_key(org, id)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn message_key(org: &OrgId, endpoint: &EndpointId, message: &MessageId) -> Item {
    HashMap::from([
        ("PK".to_owned(), partition(org)),
        (
            "SK".to_owned(),
            s(format!("{MESSAGE_PREFIX}{endpoint}#{message}")),
        ),
    ])
}

/// The attempts of a message sort by number (zero-padded) after its prefix.
fn attempts_prefix(endpoint: &EndpointId, message: &MessageId) -> String {
    format!("{ATTEMPT_PREFIX}{endpoint}#{message}#")
}

fn optional(item: &mut Item, name: &str, value: Option<AttributeValue>) {
    if let Some(value) = value {
        item.insert(name.to_owned(), value);
    }
}

fn attempt_item(record: &AttemptRecord) -> Item {
    let mut item = HashMap::from([
        ("PK".to_owned(), partition(&record.org)),
        (
            "SK".to_owned(),
            s(format!(
                "{ATTEMPT_PREFIX}{}#{}",
                record.endpoint_id,
                record.sort_key()
            )),
        ),
        ("kind".to_owned(), s("attempt")),
        ("endpointId".to_owned(), s(record.endpoint_id.as_str())),
        ("messageId".to_owned(), s(record.message_id.as_str())),
        ("attempt".to_owned(), n(record.attempt)),
        ("at".to_owned(), s(&record.at)),
        ("outcome".to_owned(), s(record.outcome.as_str())),
        ("latencyMs".to_owned(), n(record.latency_ms)),
        ("trigger".to_owned(), s(record.trigger.as_str())),
        ("expiresAt".to_owned(), n(record.expires_at)),
    ]);
    optional(&mut item, "statusCode", record.status_code.map(n));
    optional(
        &mut item,
        "errorClass",
        record.error_class.map(|c| s(c.as_str())),
    );
    optional(&mut item, "error", record.error.clone().map(s));
    optional(
        &mut item,
        "responseBody",
        record.response_body.clone().map(s),
    );
    item
}

fn attempt_from_item(org: &OrgId, item: &Item) -> Result<AttemptRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("attempt record: {what}"));
    Ok(AttemptRecord {
        org: org.clone(),
        endpoint_id: EndpointId::parse(text(item, "endpointId")?)
            .ok_or_else(|| corrupt("endpointId"))?,
        message_id: MessageId::parse(text(item, "messageId")?)
            .ok_or_else(|| corrupt("messageId"))?,
        attempt: number(item, "attempt").ok_or_else(|| corrupt("attempt"))?,
        at: text(item, "at")?.to_owned(),
        outcome: text(item, "outcome")?
            .parse()
            .map_err(|e: String| corrupt(&e))?,
        status_code: number(item, "statusCode"),
        error_class: optional_text(item, "errorClass").and_then(|c| c.parse().ok()),
        error: optional_text(item, "error"),
        latency_ms: number(item, "latencyMs").unwrap_or(0),
        response_body: optional_text(item, "responseBody"),
        trigger: optional_text(item, "trigger")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        expires_at: number(item, "expiresAt").unwrap_or(0),
    })
}

fn message_item(record: &MessageRecord) -> Result<Item, StoreError> {
    let data =
        serde_json::to_string(&record.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut item = message_key(&record.org, &record.endpoint_id, &record.message_id);
    item.extend([
        ("kind".to_owned(), s("message")),
        ("endpointId".to_owned(), s(record.endpoint_id.as_str())),
        ("id".to_owned(), s(record.message_id.as_str())),
        ("type".to_owned(), s(&record.event_type)),
        ("timestamp".to_owned(), s(&record.timestamp)),
        ("data".to_owned(), s(data)),
        ("state".to_owned(), s(record.state.as_str())),
        ("attempts".to_owned(), n(record.attempts)),
        ("updatedAt".to_owned(), s(&record.updated_at)),
        ("expiresAt".to_owned(), n(record.expires_at)),
    ]);
    optional(
        &mut item,
        "eventId",
        record.event_id.as_ref().map(|id| s(id.as_str())),
    );
    optional(
        &mut item,
        "nextAttemptAt",
        record.next_attempt_at.clone().map(s),
    );
    optional(&mut item, "lastStatus", record.last_status.map(n));
    optional(&mut item, "lastError", record.last_error.clone().map(s));
    put_trace(&mut item, record.trace.as_ref());
    Ok(item)
}

/// The W3C trace context of an event or message, as `traceparent` and `tracestate`.
fn put_trace(item: &mut Item, trace: Option<&TraceContext>) {
    if let Some(trace) = trace {
        item.insert("traceparent".to_owned(), s(&trace.traceparent));
        optional(item, "tracestate", trace.tracestate.clone().map(s));
    }
}

fn trace_from(item: &Item) -> Option<TraceContext> {
    let traceparent = item.get("traceparent").and_then(|v| v.as_s().ok())?;
    let tracestate = item.get("tracestate").and_then(|v| v.as_s().ok());
    TraceContext::parse(traceparent, tracestate.map(String::as_str))
}

fn message_from_item(org: &OrgId, item: &Item) -> Result<MessageRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("message record: {what}"));
    Ok(MessageRecord {
        org: org.clone(),
        endpoint_id: EndpointId::parse(text(item, "endpointId")?)
            .ok_or_else(|| corrupt("endpointId"))?,
        message_id: MessageId::parse(text(item, "id")?).ok_or_else(|| corrupt("id"))?,
        event_id: optional_text(item, "eventId").and_then(|id| EventId::parse(&id)),
        event_type: text(item, "type")?.to_owned(),
        timestamp: text(item, "timestamp")?.to_owned(),
        data: serde_json::from_str(text(item, "data")?).map_err(|e| corrupt(&e.to_string()))?,
        state: text(item, "state")?
            .parse()
            .map_err(|e: String| corrupt(&e))?,
        attempts: number(item, "attempts").unwrap_or(0),
        next_attempt_at: optional_text(item, "nextAttemptAt"),
        last_status: number(item, "lastStatus"),
        last_error: optional_text(item, "lastError"),
        updated_at: text(item, "updatedAt")?.to_owned(),
        expires_at: number(item, "expiresAt").unwrap_or(0),
        trace: trace_from(item),
    })
}

/// A page of message records from up to `limit + 1` items: the extra one tells that another
/// page follows.
fn message_page(
    org: &OrgId,
    endpoint_id: &EndpointId,
    (items, resume): (Vec<Item>, Option<Item>),
    limit: usize,
) -> Result<MessagePage, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let mut messages = items
        .iter()
        .map(|item| message_from_item(org, item))
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(|m| m.message_id.clone())
    } else {
        let prefix = format!("{MESSAGE_PREFIX}{endpoint_id}#");
        resume
            .and_then(|key| key_suffix(&key, &prefix))
            .and_then(|id| MessageId::parse(&id))
    };
    Ok(MessagePage {
        messages,
        next_after,
    })
}

/// DynamoDB calls one filtered page may take before it ends short.
const MAX_QUERY_CALLS: usize = 10;

/// The id part of a sort key `<prefix><id>`.
fn key_suffix(key: &Item, prefix: &str) -> Option<String> {
    key.get("SK")
        .and_then(|v| v.as_s().ok())
        .and_then(|sk| sk.strip_prefix(prefix))
        .map(str::to_owned)
}

/// Most items one `BatchWriteItem` takes.
const MAX_BATCH_WRITE: usize = 25;
/// Rounds of re-sending what DynamoDB left unprocessed (throttling) before giving up.
const UNPROCESSED_ROUNDS: u32 = 4;

impl DynamoStore {
    /// Up to `limit + 1` items of a query, read on from `LastEvaluatedKey` while a filter or
    /// DynamoDB's 1 MB per call leaves a page short, for at most [`MAX_QUERY_CALLS`] calls:
    /// past them, the page ends short (even empty) with the key to go on from, so a filter that
    /// matches little in a large partition costs bounded time per request. `build` sets
    /// everything but the table, the start key and the limit.
    async fn query_page(
        &self,
        limit: usize,
        mut start: Option<Item>,
        build: impl Fn(
            aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let wanted = limit.clamp(1, MAX_PAGE_SIZE) + 1;
        let mut items = Vec::with_capacity(wanted);
        for _ in 0..MAX_QUERY_CALLS {
            let page = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .limit(page.min(self.scan_page_size))
                .consistent_read(true);
            let output = build(query).send().await.map_err(unavailable)?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && items.len() < wanted => start = Some(key),
                _ => return Ok((items, None)),
            }
        }
        Ok((items, start))
    }

    /// Puts items, 25 to a `BatchWriteItem`, re-sending what comes back unprocessed a few
    /// times with a short backoff.
    async fn put_all(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut requests = Vec::with_capacity(MAX_BATCH_WRITE);
            for item in items.by_ref().take(MAX_BATCH_WRITE) {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut round = 0;
            while !requests.is_empty() {
                if round == UNPROCESSED_ROUNDS {
                    return Err(StoreError::Unavailable(format!(
                        "{} items still unprocessed after {UNPROCESSED_ROUNDS} rounds",
                        requests.len()
                    )));
                }
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << round)).await;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(unavailable)?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut items| items.remove(&self.table))
                    .unwrap_or_default();
                round += 1;
            }
        }
        Ok(())
    }
}

impl DeliveryLog for DynamoStore {
    async fn record(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        // One batch may not name an item twice; the later write of a key wins.
        let mut items: Vec<Item> = Vec::with_capacity(entries.len() * 2);
        for LogEntry { attempt, message } in entries {
            let message = message.as_ref().map(message_item).transpose()?;
            for item in std::iter::once(attempt_item(attempt)).chain(message) {
                items.retain(|old| {
                    old.get("PK") != item.get("PK") || old.get("SK") != item.get("SK")
                });
                items.push(item);
            }
        }
        self.put_all(items).await
    }

    async fn note_manual_delivery(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
        status: u16,
        at: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(message_key(org, endpoint_id, message_id)))
            .update_expression("SET #state = :delivered, lastStatus = :status, updatedAt = :at REMOVE lastError, nextAttemptAt")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":delivered", s(MessageState::Delivered.as_str()))
            .expression_attribute_values(":status", n(status))
            .expression_attribute_values(":at", s(at))
            .send()
            .await;
        applied(result).map(|_| ())
    }

    async fn claim_for_recovery(
        &self,
        record: &MessageRecord,
        at: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(message_key(
                &record.org,
                &record.endpoint_id,
                &record.message_id,
            )))
            .update_expression("SET #state = :pending, nextAttemptAt = :at, updatedAt = :at")
            .condition_expression("#state = :was AND attempts = :attempts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(MessageState::Pending.as_str()))
            .expression_attribute_values(":was", s(record.state.as_str()))
            .expression_attribute_values(":attempts", n(record.attempts))
            .expression_attribute_values(":at", s(at))
            .send()
            .await;
        Ok(applied(result)?.is_some())
    }

    async fn release_recovery(&self, record: &MessageRecord) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(message_key(
                &record.org,
                &record.endpoint_id,
                &record.message_id,
            )))
            .update_expression("SET #state = :was REMOVE nextAttemptAt")
            .condition_expression("#state = :pending AND attempts = :attempts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(MessageState::Pending.as_str()))
            .expression_attribute_values(":was", s(record.state.as_str()))
            .expression_attribute_values(":attempts", n(record.attempts))
            .send()
            .await;
        applied(result).map(|_| ())
    }

    async fn record_messages(&self, records: &[MessageRecord]) -> Result<(), StoreError> {
        let items = records
            .iter()
            .map(message_item)
            .collect::<Result<Vec<_>, _>>()?;
        self.put_all(items).await
    }

    async fn list_messages(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        state: Option<MessageState>,
        limit: usize,
        after: Option<&MessageId>,
    ) -> Result<MessagePage, StoreError> {
        let prefix = format!("{MESSAGE_PREFIX}{endpoint_id}#");
        let start = after.map(|id| message_key(org, endpoint_id, id));
        let items = self
            .query_page(limit, start, |query| {
                let query = query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                    .expression_attribute_values(":pk", partition(org))
                    .expression_attribute_values(":prefix", s(&prefix))
                    .scan_index_forward(false);
                match state {
                    Some(state) => query
                        .filter_expression("#state = :state AND expiresAt > :now")
                        .expression_attribute_names("#state", "state")
                        .expression_attribute_values(":state", s(state.as_str()))
                        .expression_attribute_values(":now", n(unix_seconds_now())),
                    None => query
                        .filter_expression("expiresAt > :now")
                        .expression_attribute_values(":now", n(unix_seconds_now())),
                }
            })
            .await?;
        message_page(org, endpoint_id, items, limit)
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
        let prefix = match message_id {
            Some(message) => attempts_prefix(endpoint_id, message),
            None => format!("{ATTEMPT_PREFIX}{endpoint_id}#"),
        };
        let start = after.map(|key| {
            HashMap::from([
                ("PK".to_owned(), partition(org)),
                (
                    "SK".to_owned(),
                    s(format!("{ATTEMPT_PREFIX}{endpoint_id}#{key}")),
                ),
            ])
        });
        let items = self
            .query_page(limit, start, |query| {
                let query = query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                    .expression_attribute_values(":pk", partition(org))
                    .expression_attribute_values(":prefix", s(&prefix))
                    .expression_attribute_values(":now", n(unix_seconds_now()))
                    .scan_index_forward(false);
                match outcome {
                    Some(outcome) => query
                        .filter_expression("#outcome = :outcome AND expiresAt > :now")
                        .expression_attribute_names("#outcome", "outcome")
                        .expression_attribute_values(":outcome", s(outcome.as_str())),
                    None => query.filter_expression("expiresAt > :now"),
                }
            })
            .await?;
        let (items, resume) = items;
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let mut attempts = items
            .iter()
            .map(|item| attempt_from_item(org, item))
            .collect::<Result<Vec<_>, _>>()?;
        let next_after = if attempts.len() > limit {
            attempts.truncate(limit);
            attempts.last().map(AttemptRecord::sort_key)
        } else {
            resume.and_then(|key| key_suffix(&key, &format!("{ATTEMPT_PREFIX}{endpoint_id}#")))
        };
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
        let low = format!(
            "{MESSAGE_PREFIX}{endpoint_id}#{}",
            MessageId::lower_bound(since_millis)
        );
        let high = format!(
            "{MESSAGE_PREFIX}{endpoint_id}#{}",
            MessageId::lower_bound(until_millis)
        );
        let start = after.map(|id| message_key(org, endpoint_id, id));
        let items = self
            .query_page(limit, start, |query| {
                query
                    .key_condition_expression("PK = :pk AND SK BETWEEN :low AND :high")
                    .filter_expression("#state IN (:failed, :dead) AND expiresAt > :now")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":pk", partition(org))
                    .expression_attribute_values(":low", s(&low))
                    .expression_attribute_values(":high", s(&high))
                    .expression_attribute_values(":failed", s(MessageState::Failed.as_str()))
                    .expression_attribute_values(":dead", s(MessageState::Dead.as_str()))
                    .expression_attribute_values(":now", n(unix_seconds_now()))
            })
            .await?;
        message_page(org, endpoint_id, items, limit)
    }

    async fn attempts_of(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                // Expired but not yet removed (DynamoDB's TTL deletes within days) is gone.
                .filter_expression("expiresAt > :now")
                .expression_attribute_values(":pk", partition(org))
                .expression_attribute_values(":prefix", s(attempts_prefix(endpoint_id, message_id)))
                .expression_attribute_values(":now", n(unix_seconds_now()))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                records.push(attempt_from_item(org, item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(records),
            }
        }
    }

    async fn message_record(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let item = self
            .read_item(message_key(org, endpoint_id, message_id))
            .await?;
        let record = item
            .as_ref()
            .map(|item| message_from_item(org, item))
            .transpose()?;
        // Expired but not yet removed by the TTL is gone.
        Ok(record.filter(|record| record.expires_at > unix_seconds_now()))
    }
}

/// Writes outbox events without their bookings, 25 to a `BatchWriteItem` (benchmarks: a
/// backlog as a queue outage leaves it, seeded faster than one transaction per booking).
#[cfg(feature = "test-support")]
impl DynamoStore {
    pub async fn seed_pending_events(&self, events: &[(OrgId, Event)]) -> Result<(), StoreError> {
        let items = events
            .iter()
            .map(|(org, event)| event_item(org, event))
            .collect::<Result<Vec<_>, _>>()?;
        self.put_all(items).await
    }
}
