//! Contacts (SPEC §7): an account's address book, keyed by E.164 phone number. This module holds
//! the types and the field checks; `service` the rules of each operation, `store` the SQL. Other
//! modules (messaging, chatbot) use the functions re-exported here.

#[cfg(test)]
mod api_tests;
pub mod error;
pub mod service;
pub mod store;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{clock::rfc3339, refusal::Refusal};

pub use error::ContactError;
pub use service::{find_or_create, update};
pub use store::{find_by_phone, get, set_chatbot};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_ATTRIBUTES: usize = 50;
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 64;
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub account_id: String,
    pub phone: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
    pub opted_in: bool,
    pub chatbot: Option<ChatbotState>,
    /// Unix milliseconds, like every stored time.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A contact's `chatbot` field: where it stands in a flow (`null` when in none).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct ChatbotState {
    pub flow_id: String,
    pub step: String,
    /// A human has the conversation; the bot stays silent.
    pub paused: bool,
}

/// A partial update. `None` leaves a field alone; `name: Some(None)` clears the name;
/// `attributes` are merged into the existing ones, a `null` value removing that attribute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactPatch {
    pub name: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub attributes: Option<Map<String, Value>>,
    pub opted_in: Option<bool>,
}

/// A contact as the API shows it (`contacts::Contact` serializes to this).
// No account id; times in RFC 3339.
#[derive(Serialize, ToSchema)]
#[schema(as = Contact)]
pub struct ContactView<'a> {
    /// `con_...`
    id: &'a str,
    /// E.164, unique per account.
    #[schema(example = "+14155550101")]
    phone: &'a str,
    name: &'a Option<String>,
    tags: &'a [String],
    /// Flat object of string, number and boolean values.
    #[schema(value_type = Object)]
    attributes: &'a Map<String, Value>,
    opted_in: bool,
    /// Where the contact stands in a chatbot flow, `null` outside one.
    chatbot: &'a Option<ChatbotState>,
    /// RFC 3339
    created_at: String,
    updated_at: String,
}

impl Contact {
    pub fn view(&self) -> ContactView<'_> {
        ContactView {
            id: &self.id,
            phone: &self.phone,
            name: &self.name,
            tags: &self.tags,
            attributes: &self.attributes,
            opted_in: self.opted_in,
            chatbot: &self.chatbot,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

impl Serialize for Contact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

// A page of contacts as `GET /v1/contacts` lists them. (A doc comment would become the schema's
// description in the OpenAPI document.)
#[derive(Serialize, ToSchema)]
pub struct ContactList {
    #[schema(value_type = Vec<ContactView>)]
    pub data: Vec<Contact>,
    pub next_cursor: Option<String>,
}

impl Contact {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a contact always serializes")
    }
}

/// E.164: `+`, then 8 to 15 digits, the first not zero. Errors name the field `phone`.
pub fn validate_phone(phone: &str) -> Result<(), Refusal> {
    validate_phone_field("phone", phone)
}

/// Like `validate_phone`, for a field with another name (`to`, `from`, `recipients[3].to`).
pub fn validate_phone_field(field: &str, phone: &str) -> Result<(), Refusal> {
    if is_e164(phone) {
        Ok(())
    } else {
        Err(Refusal::unacceptable(
            "invalid_phone",
            format!(
                "{field}: must be an E.164 phone number: '+' then 8 to 15 digits, \
                 the first not zero (e.g. +14155550101)"
            ),
        ))
    }
}

fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A name of at most 200 characters; an empty or blank name means "no name".
pub fn validate_name(name: Option<String>) -> Result<Option<String>, Refusal> {
    match name {
        Some(name) if name.trim().is_empty() => Ok(None),
        Some(name) if name.chars().count() > MAX_NAME_CHARS => Err(Refusal::unacceptable(
            "invalid_name",
            format!("name: at most {MAX_NAME_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

/// At most 50 non-empty tags of at most 64 characters; duplicates are dropped, order kept.
pub fn validate_tags(tags: Vec<String>) -> Result<Vec<String>, Refusal> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let len = tag.chars().count();
        if len == 0 || len > MAX_TAG_CHARS {
            return Err(Refusal::unacceptable(
                "invalid_tags",
                format!("tags[{i}]: a tag has 1 to {MAX_TAG_CHARS} characters"),
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Refusal::unacceptable(
            "invalid_tags",
            format!("tags: at most {MAX_TAGS} tags"),
        ));
    }
    Ok(out)
}

/// A flat object of string, number and boolean values, at most 50 of them. With `allow_null`
/// (a patch), `null` values are accepted: they mean "remove this attribute".
pub fn validate_attributes(
    attributes: &Map<String, Value>,
    allow_null: bool,
) -> Result<(), Refusal> {
    let invalid = |message: String| Refusal::unacceptable("invalid_attributes", message);
    for (key, value) in attributes {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_ATTRIBUTE_KEY_CHARS {
            return Err(invalid(format!(
                "attributes: a name has 1 to {MAX_ATTRIBUTE_KEY_CHARS} characters"
            )));
        }
        match value {
            Value::Bool(_) | Value::Number(_) => {}
            Value::String(s) if s.chars().count() <= MAX_ATTRIBUTE_VALUE_CHARS => {}
            Value::String(_) => {
                return Err(invalid(format!(
                    "attributes.{key}: at most {MAX_ATTRIBUTE_VALUE_CHARS} characters"
                )))
            }
            Value::Null if allow_null => {}
            _ => {
                return Err(invalid(format!(
                    "attributes.{key}: values are strings, numbers or booleans"
                )))
            }
        }
    }
    let counted = attributes.values().filter(|v| !v.is_null()).count();
    if counted > MAX_ATTRIBUTES {
        return Err(invalid(format!(
            "attributes: at most {MAX_ATTRIBUTES} attributes"
        )));
    }
    Ok(())
}

/// Applies a patch's attributes to the current ones (null removes) and checks the result.
pub fn merge_attributes(
    current: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, Refusal> {
    validate_attributes(patch, true)?;
    let mut merged = current.clone();
    for (key, value) in patch {
        if value.is_null() {
            merged.remove(key);
        } else {
            merged.insert(key.clone(), value.clone());
        }
    }
    if merged.len() > MAX_ATTRIBUTES {
        return Err(Refusal::unacceptable(
            "invalid_attributes",
            format!("attributes: at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn e164() {
        for ok in [
            "+14155550101",
            "+4930123456",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(validate_phone(ok).is_ok(), "{ok}");
        }
        for bad in [
            "14155550101",
            "+04155550101",
            "+1234567",
            "+1234567890123456",
            "+1415555010a",
            "+1 415 555 0101",
            "",
            "+",
        ] {
            let err = validate_phone(bad).unwrap_err();
            assert_eq!(err.code, "invalid_phone", "{bad}");
            assert!(err.to_string().starts_with("phone:"));
        }
        assert!(validate_phone_field("to", "x")
            .unwrap_err()
            .to_string()
            .starts_with("to:"));
    }

    #[test]
    fn tags_and_names() {
        assert_eq!(
            validate_tags(vec!["a".into(), "b".into(), "a".into()]).unwrap(),
            vec!["a", "b"]
        );
        assert!(validate_tags(vec!["x".repeat(65)]).is_err());
        assert!(validate_tags(vec![String::new()]).is_err());
        assert!(validate_tags((0..51).map(|i| i.to_string()).collect()).is_err());
        assert_eq!(validate_name(Some("  ".into())).unwrap(), None);
        assert!(validate_name(Some("n".repeat(201))).is_err());
    }

    #[test]
    fn attributes_are_flat_and_merge() {
        let ok = json!({"tier": "gold", "n": 3, "vip": true});
        assert!(validate_attributes(ok.as_object().unwrap(), false).is_ok());
        let nested = json!({"a": {"b": 1}});
        assert_eq!(
            validate_attributes(nested.as_object().unwrap(), false)
                .unwrap_err()
                .code,
            "invalid_attributes"
        );
        let null = json!({"a": null});
        assert!(validate_attributes(null.as_object().unwrap(), false).is_err());
        let current = json!({"a": 1, "b": 2});
        let patch = json!({"a": null, "c": "x"});
        let merged =
            merge_attributes(current.as_object().unwrap(), patch.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(merged), json!({"b": 2, "c": "x"}));
    }

    #[test]
    fn json_shape() {
        let contact = Contact {
            id: "con_1".into(),
            account_id: "acc_1".into(),
            phone: "+14155550101".into(),
            name: None,
            tags: vec![],
            attributes: Map::new(),
            opted_in: true,
            chatbot: None,
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(
            contact.to_json(),
            json!({"id": "con_1", "phone": "+14155550101", "name": null, "tags": [],
                   "attributes": {}, "opted_in": true, "chatbot": null,
                   "created_at": "1970-01-01T00:00:00.000Z", "updated_at": "1970-01-01T00:00:00.000Z"})
        );
    }
}
