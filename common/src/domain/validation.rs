//! Reading a JSON request body field by field, collecting every problem instead of the first.

use serde::Serialize;
use serde_json::{Map, Value};

/// One problem with one field of the input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The fields of a JSON object body, with the errors found so far.
pub struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Parses `body` as a JSON object that holds only `allowed` keys. A body that is not one
    /// is refused in plain words that say what was expected.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, Vec<FieldError>> {
        // Built only when a body is refused.
        let expected = || format!("a JSON object with fields among {}", allowed.join(", "));
        let refuse = |what: String| vec![FieldError::new("body", what)];
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(refuse(format!("is empty: expected {}", expected())));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            let problem = match e.classify() {
                serde_json::error::Category::Eof => "ends before the JSON is complete".to_owned(),
                _ => format!(
                    "is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            };
            refuse(format!("{problem}: expected {}", expected()))
        })?;
        let Value::Object(object) = value else {
            return Err(refuse(format!("must be {}", expected())));
        };
        let errors: Vec<FieldError> = object
            .keys()
            .filter(|key| !allowed.contains(&key.as_str()))
            .map(|key| FieldError::new(key.clone(), "is not a known field"))
            .collect();
        Ok(Self { object, errors })
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn is_present(&self, name: &str) -> bool {
        self.object.get(name).is_some_and(|v| !v.is_null())
    }

    /// A string field of at most `max_chars` characters; `None` when absent, null or invalid.
    pub fn string(&mut self, name: &str, required: bool, max_chars: usize) -> Option<String> {
        match self.object.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.error(name, "is required");
                }
                None
            }
            Some(Value::String(s)) if s.chars().count() > max_chars => {
                self.error(name, format!("must be at most {max_chars} characters"));
                None
            }
            Some(Value::String(s)) if required && s.trim().is_empty() => {
                self.error(name, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(name, "must be a boolean");
                None
            }
        }
    }

    /// A whole number in `min..=max`; `None` when absent, null or invalid.
    pub fn whole_number(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64().filter(|n| (min..=max).contains(n)) {
                Some(n) => Some(n),
                None => {
                    self.error(name, format!("must be a whole number from {min} to {max}"));
                    None
                }
            },
        }
    }

    /// A JSON object, taken out of the body; `None` when absent, null or not an object.
    pub fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(_) => {
                self.error(name, "must be an object");
                None
            }
        }
    }

    /// An array of strings; `None` when absent, null or invalid.
    pub fn string_array(&mut self, name: &str, required: bool) -> Option<Vec<String>> {
        match self.object.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.error(name, "is required");
                }
                None
            }
            Some(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                if strings.is_none() {
                    self.error(name, "must be an array of strings");
                }
                strings
            }
            Some(_) => {
                self.error(name, "must be an array of strings");
                None
            }
        }
    }

    /// Every error found, or `Ok` when there were none.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem() {
        let mut fields =
            Fields::parse(br#"{"a": 1, "b": "x", "extra": true}"#, &["a", "b", "c"]).unwrap();
        assert!(fields.string("a", true, 10).is_none());
        assert!(fields.string("c", true, 10).is_none());
        assert_eq!(fields.string("b", true, 10).as_deref(), Some("x"));
        let errors = fields.finish().unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, vec!["extra", "a", "c"]);
    }

    #[test]
    fn malformed_bodies_are_refused_in_plain_words() {
        let message = |body: &[u8]| {
            Fields::parse(body, &["url", "events"]).err().unwrap()[0]
                .message
                .clone()
        };
        assert_eq!(
            message(b"[1]"),
            "must be a JSON object with fields among url, events"
        );
        assert_eq!(
            message(b" \n"),
            "is empty: expected a JSON object with fields among url, events"
        );
        assert_eq!(
            message(b"{\"url\": "),
            "ends before the JSON is complete: expected a JSON object with fields among url, events"
        );
        assert_eq!(
            message(b"{url}"),
            "is not valid JSON (line 1, column 2): expected a JSON object with fields among url, events"
        );
        assert_eq!(Fields::parse(b"{", &[]).err().unwrap()[0].field, "body");
    }

    #[test]
    fn string_length_counts_characters() {
        let mut fields = Fields::parse("{\"d\": \"ééé\"}".as_bytes(), &["d"]).unwrap();
        assert!(fields.string("d", false, 3).is_some());
        assert!(fields.string("d", false, 2).is_none());
    }
}
