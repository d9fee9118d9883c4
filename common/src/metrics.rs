//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: a function prints one JSON
//! line per batch or invocation and CloudWatch Logs extracts the metrics from it, so there is
//! no CloudWatch client, no API call and nothing at init. Spec:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//!
//! Metrics carry no org or endpoint dimension (each dimension value is a metric of its own,
//! billed); org and endpoint travel as properties of the line, for Logs Insights. The local
//! runner keeps the same metrics as running totals (`GET /local/metrics`) instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Map, Value};

/// The namespace when `WEBHOOKS_METRICS_NAMESPACE` names none.
pub const DEFAULT_NAMESPACE: &str = "Webhooks";
/// Most values one metric may carry in one EMF document (the spec's limit).
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// Lines an in-memory sink keeps (the newest), for tests to read back.
const KEPT_LINES: usize = 1_000;

/// EMF units used here (the spec lists CloudWatch's `StandardUnit` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

/// The metrics of one batch or invocation: counts split by one dimension (`Outcome`), plain
/// metrics with their values (several values make a distribution: percentiles), and
/// properties that are logged but not metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricSet {
    dimension: Option<(&'static str, String)>,
    by_dimension: Vec<(&'static str, Unit, Vec<f64>)>,
    plain: Vec<(&'static str, Unit, Vec<f64>)>,
    properties: Map<String, Value>,
}

fn push(
    list: &mut Vec<(&'static str, Unit, Vec<f64>)>,
    name: &'static str,
    unit: Unit,
    value: f64,
) {
    match list.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, _, values)) if unit == Unit::Count => {
            // A count is one value: the sum.
            if let Some(total) = values.first_mut() {
                *total += value;
            }
        }
        Some((_, _, values)) => values.push(value),
        None => list.push((name, unit, vec![value])),
    }
}

impl MetricSet {
    /// Splits the set's dimensioned metrics by `name` = `value` (at most one dimension).
    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimension = Some((name, value.into()));
        self
    }

    /// Adds to a metric reported under the set's dimension.
    pub fn add_by_dimension(&mut self, name: &'static str, unit: Unit, value: f64) {
        push(&mut self.by_dimension, name, unit, value);
    }

    /// Adds to a metric reported without dimensions: a count sums, any other unit collects
    /// values (at most [`MAX_VALUES_PER_METRIC`]; more are dropped).
    pub fn add(&mut self, name: &'static str, unit: Unit, value: f64) {
        push(&mut self.plain, name, unit, value);
    }

    pub fn property(&mut self, name: &str, value: impl Into<Value>) {
        self.properties.insert(name.to_owned(), value.into());
    }

    pub fn is_empty(&self) -> bool {
        self.by_dimension.is_empty() && self.plain.is_empty()
    }

    /// The EMF document: one `CloudWatchMetrics` directive for the dimensioned metrics
    /// (dimension set `[[<dimension>]]`), one for the rest (`[[]]`: no dimension).
    pub fn to_emf(&self, namespace: &str, timestamp_millis: u64) -> Value {
        let mut root = self.properties.clone();
        let mut directives = Vec::new();
        let mut directive = |dimensions: Value,
                             metrics: &[(&'static str, Unit, Vec<f64>)],
                             root: &mut Map<String, Value>| {
            if metrics.is_empty() {
                return;
            }
            let definitions: Vec<Value> = metrics
                .iter()
                .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit }))
                .collect();
            for (name, _, values) in metrics {
                let values = &values[..values.len().min(MAX_VALUES_PER_METRIC)];
                let value = match values {
                    [one] => json!(one),
                    many => json!(many),
                };
                root.insert((*name).to_owned(), value);
            }
            directives.push(
                json!({ "Namespace": namespace, "Dimensions": dimensions, "Metrics": definitions }),
            );
        };
        match &self.dimension {
            Some((name, value)) => {
                root.insert((*name).to_owned(), json!(value));
                directive(json!([[name]]), &self.by_dimension, &mut root);
            }
            None => directive(json!([[]]), &self.by_dimension, &mut root),
        }
        directive(json!([[]]), &self.plain, &mut root);
        root.insert(
            "_aws".to_owned(),
            json!({ "Timestamp": timestamp_millis, "CloudWatchMetrics": directives }),
        );
        Value::Object(root)
    }
}

/// Running totals of what was emitted, as `GET /local/metrics` shows them.
#[derive(Debug, Default)]
struct Totals {
    /// Counts, by metric and dimension value (`""` without one).
    counts: BTreeMap<String, BTreeMap<String, f64>>,
    /// Distributions: every value seen (the local runner's volumes are small).
    values: BTreeMap<String, Vec<f64>>,
    lines: VecDeque<String>,
}

#[derive(Clone, Debug)]
enum Sink {
    /// One line on standard output per set: what Lambda sends to CloudWatch Logs.
    Stdout,
    /// Kept in memory (the local runner, tests).
    Memory(Arc<Mutex<Totals>>),
}

/// Where metric sets go, and under which namespace.
#[derive(Clone, Debug)]
pub struct Metrics {
    namespace: String,
    sink: Sink,
}

impl Metrics {
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            sink: Sink::Stdout,
        }
    }

    pub fn in_memory(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            sink: Sink::Memory(Arc::default()),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Emits one set as one EMF line (nothing for an empty set).
    pub fn emit(&self, set: &MetricSet) {
        if set.is_empty() {
            return;
        }
        let line = set
            .to_emf(&self.namespace, crate::time::unix_millis_now())
            .to_string();
        match &self.sink {
            Sink::Stdout => println!("{line}"),
            Sink::Memory(totals) => {
                let Ok(mut totals) = totals.lock() else {
                    return;
                };
                let dimension_value = set.dimension.as_ref().map_or("", |(_, v)| v.as_str());
                let all = set
                    .by_dimension
                    .iter()
                    .map(|m| (m, dimension_value))
                    .chain(set.plain.iter().map(|m| (m, "")));
                for ((name, unit, values), dimension) in all {
                    if *unit == Unit::Count {
                        *totals
                            .counts
                            .entry((*name).to_owned())
                            .or_default()
                            .entry(dimension.to_owned())
                            .or_default() += values.iter().sum::<f64>();
                    } else {
                        totals
                            .values
                            .entry((*name).to_owned())
                            .or_default()
                            .extend(values);
                    }
                }
                if totals.lines.len() == KEPT_LINES {
                    totals.lines.pop_front();
                }
                totals.lines.push_back(line);
            }
        }
    }

    /// The EMF lines an in-memory sink kept, oldest first (none for standard output).
    pub fn lines(&self) -> Vec<String> {
        match &self.sink {
            Sink::Memory(totals) => totals
                .lock()
                .map(|t| t.lines.iter().cloned().collect())
                .unwrap_or_default(),
            Sink::Stdout => Vec::new(),
        }
    }

    /// The totals of an in-memory sink: `{"namespace", "counts": {metric: total or
    /// {dimension value: total}}, "distributions": {metric: {count, p50, p99, max}}}`.
    pub fn totals(&self) -> Value {
        let Sink::Memory(totals) = &self.sink else {
            return json!({ "namespace": self.namespace });
        };
        let Ok(totals) = totals.lock() else {
            return json!({ "namespace": self.namespace });
        };
        let counts: Map<String, Value> = totals
            .counts
            .iter()
            .map(|(name, by)| {
                let value = match by.get("") {
                    Some(total) if by.len() == 1 => json!(total),
                    _ => json!(by),
                };
                (name.clone(), value)
            })
            .collect();
        let distributions: Map<String, Value> = totals
            .values
            .iter()
            .map(|(name, values)| {
                let mut sorted = values.clone();
                sorted.sort_by(f64::total_cmp);
                let at = |q: f64| {
                    let index = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
                    sorted.get(index).copied()
                };
                (
                    name.clone(),
                    json!({ "count": sorted.len(), "p50": at(0.5), "p99": at(0.99), "max": sorted.last() }),
                )
            })
            .collect();
        json!({ "namespace": self.namespace, "counts": counts, "distributions": distributions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_becomes_one_emf_document_with_a_directive_per_dimension_set() {
        let mut set = MetricSet::default().dimension("Outcome", "delivered");
        set.add_by_dimension("Attempts", Unit::Count, 1.0);
        set.add_by_dimension("Attempts", Unit::Count, 2.0);
        set.add("AttemptLatency", Unit::Milliseconds, 12.0);
        set.add("AttemptLatency", Unit::Milliseconds, 30.0);
        set.property("orgId", "org_a");
        let emf = set.to_emf("Webhooks", 1_700_000_000_000);
        assert_eq!(emf["Outcome"], "delivered");
        assert_eq!(emf["Attempts"], 3.0);
        assert_eq!(emf["AttemptLatency"], json!([12.0, 30.0]));
        assert_eq!(emf["orgId"], "org_a");
        let directives = &emf["_aws"]["CloudWatchMetrics"];
        assert_eq!(directives[0]["Dimensions"], json!([["Outcome"]]));
        assert_eq!(
            directives[0]["Metrics"][0],
            json!({ "Name": "Attempts", "Unit": "Count" })
        );
        assert_eq!(directives[1]["Dimensions"], json!([[]]));
        assert_eq!(directives[1]["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(emf["_aws"]["Timestamp"], 1_700_000_000_000u64);
    }

    #[test]
    fn at_most_a_hundred_values_go_in_one_document() {
        let mut set = MetricSet::default();
        for n in 0..150 {
            set.add("AttemptLatency", Unit::Milliseconds, f64::from(n));
        }
        let emf = set.to_emf("Webhooks", 0);
        assert_eq!(
            emf["AttemptLatency"].as_array().unwrap().len(),
            MAX_VALUES_PER_METRIC
        );
    }

    #[test]
    fn memory_totals_add_up_by_dimension() {
        let metrics = Metrics::in_memory("Local");
        for outcome in ["delivered", "delivered", "failed"] {
            let mut set = MetricSet::default().dimension("Outcome", outcome);
            set.add_by_dimension("Attempts", Unit::Count, 1.0);
            set.add("DeadLetters", Unit::Count, 0.0);
            metrics.emit(&set);
        }
        let totals = metrics.totals();
        assert_eq!(
            totals["counts"]["Attempts"],
            json!({ "delivered": 2.0, "failed": 1.0 })
        );
        assert_eq!(totals["counts"]["DeadLetters"], 0.0);
        assert_eq!(metrics.lines().len(), 3);
    }
}
