//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>), carried from the request that
//! produced an event to every delivery of it: the subscriber gets a `traceparent` whose trace
//! is the producer's and whose parent is a new span per attempt, so its tracing joins the
//! producer's trace.

use serde::{Deserialize, Serialize};

use super::id::{random_hex, RandomError};

/// Longest `tracestate` carried (the spec's 32 members of at most 256 characters would allow
/// more; 512 is what it asks implementations to propagate at least).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A producer's trace context: `traceparent` (version `00`) and, when sent, `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceContext {
    /// A `traceparent` header as the spec reads it: `00-<32 hex trace id>-<16 hex parent
    /// id>-<2 hex flags>`, lower case, neither id all zeros. A later version is read by its
    /// first four fields, as the spec asks; `ff` is invalid. A `tracestate` that is too long or
    /// not printable ASCII is dropped, not the trace.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let [version, trace_id, parent_id, flags, rest @ ..] = parts.as_slice() else {
            return None;
        };
        let valid = is_lower_hex(version, 2)
            && *version != "ff"
            && (*version != "00" || rest.is_empty())
            && is_lower_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_lower_hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && is_lower_hex(flags, 2);
        if !valid {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE_LEN)
            .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(str::to_owned);
        Some(Self {
            traceparent: format!("00-{trace_id}-{parent_id}-{flags}"),
            tracestate,
        })
    }

    /// API Gateway's `X-Amzn-Trace-Id` (`Root=1-<8 hex time>-<24 hex>;Parent=<16
    /// hex>;Sampled=<0|1>`) as a W3C context: the X-Ray trace id is the 32 hex digits of its
    /// root, the parent its `Parent` (a new id when there is none), sampled as it says.
    pub fn from_amzn_trace_id(header: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = false;
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value.to_owned()),
                Some(("Sampled", value)) => sampled = value == "1",
                _ => {}
            }
        }
        let mut parts = root?.split('-');
        let (Some("1"), Some(time), Some(unique), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let parent = match parent {
            Some(parent) => parent,
            None => random_hex(8).ok()?,
        };
        let flags = if sampled { "01" } else { "00" };
        Self::parse(&format!("00-{time}{unique}-{parent}-{flags}"), None)
    }

    /// A new trace, for an event whose request carried none: this system is its root.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self {
            // Not sampled: nothing here records the trace; a receiver decides for itself.
            traceparent: format!("00-{}-{}-00", random_hex(16)?, random_hex(8)?),
            tracestate: None,
        })
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The `traceparent` of one attempt: the same trace, a new span id as parent, and the
    /// sampled flag as received (version 00 defines no other bit, and an unknown one must be
    /// sent as zero).
    pub fn child(&self) -> Result<String, RandomError> {
        let sampled = self
            .traceparent
            .get(53..55)
            .and_then(|flags| u8::from_str_radix(flags, 16).ok())
            .map_or(0, |flags| flags & 0x01);
        Ok(format!(
            "00-{}-{}-{sampled:02x}",
            self.trace_id(),
            random_hex(8)?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_parses_and_children_keep_the_trace() {
        let context = TraceContext::parse(SPEC_EXAMPLE, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let (a, b) = (context.child().unwrap(), context.child().unwrap());
        assert!(a.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && a.ends_with("-01"));
        assert_ne!(a, b, "a new span per attempt");
        assert!(TraceContext::parse(&a, None).is_some());
        // Flag bits version 00 does not define are sent as zero.
        let odd = TraceContext::parse(&SPEC_EXAMPLE.replace("-01", "-03"), None).unwrap();
        assert!(odd.child().unwrap().ends_with("-01"));
        let unsampled = TraceContext::parse(&SPEC_EXAMPLE.replace("-01", "-00"), None).unwrap();
        assert!(unsampled.child().unwrap().ends_with("-00"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad, None).is_none(), "{bad}");
        }
        // A later version is read by its first fields.
        let future = format!("{}-more", SPEC_EXAMPLE.replacen("00", "01", 1));
        assert!(TraceContext::parse(&future, None).is_some());
        // A bad tracestate is dropped, the trace kept.
        let context = TraceContext::parse(SPEC_EXAMPLE, Some("a=\u{7f}")).unwrap();
        assert_eq!(context.tracestate, None);
    }

    #[test]
    fn an_x_ray_header_becomes_a_w3c_context() {
        let context = TraceContext::from_amzn_trace_id(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(
            context.traceparent,
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
        );
        let no_parent =
            TraceContext::from_amzn_trace_id("Root=1-5759e988-bd862e3fe1be46a994272793").unwrap();
        assert_eq!(no_parent.trace_id(), "5759e988bd862e3fe1be46a994272793");
        assert!(no_parent.traceparent.ends_with("-00"));
        assert!(TraceContext::from_amzn_trace_id("Self=1-abc").is_none());
    }
}
