//! The constraints the server enforces, written into the request schemas (issue 13), so a
//! client generated from the document, or a schema-driven fuzzer, sends what the server takes.
//!
//! utoipa derives the shapes from the Rust types; what it cannot say from a type (patterns,
//! lengths, ranges, "exactly one of these bodies", "`to` or `contact_id`") is added here, by
//! schema and property name, with the numbers taken from the validators' own constants. The
//! schemathesis run in the test command (tests/contract/check.py) is what keeps this table and the
//! validators in agreement; `every_constraint_names_a_real_property` keeps it from going stale.

use serde_json::{json, Map, Value};

use crate::{contacts, events::EVENT_TYPES, keys, templates};

/// `+` then 8 to 15 digits, the first not zero (`contacts::validate_phone`).
pub const E164: &str = r"^\+[1-9][0-9]{7,14}$";
const TEMPLATE_NAME: &str = "^[a-z0-9_]+$";
const LANGUAGE: &str = "^[a-z]{2,3}(_[A-Z]{2})?$";
const IPV4_CIDR: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$";

fn id(prefix: &str) -> Value {
    json!({"type": "string", "pattern": format!("^{prefix}_[0-9a-z]{{26}}$")})
}

fn phone() -> Value {
    json!({"type": "string", "pattern": E164, "example": "+14155550101"})
}

fn text(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max})
}

/// A flat object of strings, numbers and booleans (variables, attributes).
fn scalars() -> Value {
    json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}})
}

fn meta_id() -> Value {
    json!({"type": ["string", "null"], "pattern": "^[0-9]{1,32}$", "example": "106540352242922"})
}

fn credential(max: usize) -> Value {
    json!({"type": ["string", "null"], "pattern": format!("^[!-~]{{8,{max}}}$")})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn template_name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": templates::MAX_NAME_CHARS, "pattern": TEMPLATE_NAME, "example": "order_update"})
}

fn language() -> Value {
    json!({"type": "string", "pattern": LANGUAGE, "example": "en"})
}

fn ip_entries() -> Value {
    json!({
        "type": "array",
        "maxItems": keys::MAX_WHITELIST_ENTRIES,
        "items": {"anyOf": [
            {"type": "string", "format": "ipv4"},
            {"type": "string", "format": "ipv6"},
            {"type": "string", "pattern": IPV4_CIDR},
        ]},
    })
}

/// `["*"]` alone, or a list of event types.
fn events() -> Value {
    json!({"oneOf": [
        {"type": "array", "minItems": 1, "uniqueItems": true, "items": {"type": "string", "enum": EVENT_TYPES}},
        {"type": "array", "minItems": 1, "maxItems": 1, "items": {"const": "*"}},
    ]})
}

/// One variant of a body whose `type` selects its content: `base` properties plus `type` fixed to
/// `kind` and the `kind` object required; no other content object allowed.
fn variant(base: &[(&str, Value)], kind: &str, content: &str, extra_required: &[&str]) -> Value {
    let mut properties = Map::new();
    for (name, schema) in base {
        properties.insert((*name).into(), schema.clone());
    }
    properties.insert("type".into(), json!({"type": "string", "const": kind}));
    properties.insert(kind.into(), schema_ref(content));
    let mut required = vec![json!("type"), json!(kind)];
    required.extend(extra_required.iter().map(|r| json!(r)));
    json!({"type": "object", "additionalProperties": false, "properties": properties, "required": required})
}

fn webhook_url() -> Value {
    json!({"type": "string", "format": "uri", "pattern": "^https?://[a-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", "maxLength": 2048, "example": "https://crm.example.com/hooks/wiz"})
}

/// Exactly one of `to` and `contact_id`.
fn one_recipient() -> Value {
    json!({"oneOf": [{"required": ["to"]}, {"required": ["contact_id"]}]})
}

/// (schema, property, replacement schema). `None` as property: extra keywords for the schema
/// itself, merged in.
fn table() -> Vec<(&'static str, Option<&'static str>, Value)> {
    let limit = |max: i64| json!({"type": "integer", "minimum": 1, "maximum": max});
    vec![
        ("SendMessage", None, send_message()),
        ("TextContent", Some("body"), text(1, 4096)),
        ("TemplateRequest", Some("name"), template_name()),
        ("TemplateRequest", Some("language"), language()),
        ("TemplateRequest", Some("variables"), scalars()),
        ("MediaContent", Some("url"), webhook_url()),
        ("MediaContent", Some("caption"), text(0, 1024)),
        (
            "MediaContent",
            None,
            json!({"if": {"properties": {"kind": {"const": "audio"}}}, "then": {"not": {"required": ["caption"]}}}),
        ),
        ("BulkRequest", None, bulk_request()),
        ("BulkText", Some("body"), text(1, 4096)),
        ("BulkTemplate", Some("name"), template_name()),
        ("BulkTemplate", Some("language"), language()),
        ("Recipient", Some("to"), phone()),
        ("Recipient", Some("reference"), text(1, 128)),
        ("Recipient", Some("variables"), scalars()),
        ("TriggerRequest", Some("to"), phone()),
        ("TriggerRequest", Some("contact_id"), id("con")),
        ("TriggerRequest", Some("variables"), scalars()),
        ("TriggerRequest", None, one_recipient()),
        ("InboundRequest", Some("from"), phone()),
        ("InboundRequest", Some("text"), text(1, 4096)),
        ("InboundRequest", Some("button"), schema_ref("ButtonReply")),
        // Shared with the answer (a stored inbound tap, whose other field went unchecked), so the
        // fields stay unbounded and the rule "one of them, 1 to 256 characters" sits on the object.
        ("ButtonReply", Some("id"), json!({"type": "string"})),
        ("ButtonReply", Some("text"), json!({"type": "string"})),
        (
            "ButtonReply",
            None,
            json!({"anyOf": [
                {"required": ["id"], "properties": {"id": {"minLength": 1, "maxLength": 256}}},
                {"required": ["text"], "properties": {"text": {"minLength": 1, "maxLength": 256, "pattern": "\\S"}}},
            ]}),
        ),
        ("FlowInput", Some("name"), text(1, 200)),
        ("FlowPatch", Some("name"), text(1, 200)),
        ("FlowInput", Some("keywords"), keywords()),
        ("FlowPatch", Some("keywords"), keywords()),
        ("Action", None, action()),
        (
            "Step",
            Some("id"),
            json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "example": "welcome"}),
        ),
        (
            "FlowInput",
            Some("steps"),
            json!({"type": "array", "minItems": 1, "maxItems": crate::chatbot::MAX_STEPS, "items": schema_ref("Step")}),
        ),
        (
            "FlowPatch",
            Some("steps"),
            json!({"type": "array", "minItems": 1, "maxItems": crate::chatbot::MAX_STEPS, "items": schema_ref("Step")}),
        ),
        (
            "InboundRequest",
            None,
            json!({"oneOf": [{"required": ["text"]}, {"required": ["button"]}]}),
        ),
        ("ContactCreate", Some("phone"), phone()),
        (
            "ContactCreate",
            Some("name"),
            text(0, contacts::MAX_NAME_CHARS),
        ),
        (
            "ContactCreate",
            Some("tags"),
            json!({"type": "array", "maxItems": contacts::MAX_TAGS, "items": text(1, contacts::MAX_TAG_CHARS)}),
        ),
        ("ContactCreate", Some("attributes"), attributes(false)),
        (
            "ContactCreate",
            Some("opted_in"),
            json!({"type": "boolean"}),
        ),
        ("ContactPatch", Some("phone"), phone()),
        (
            "ContactPatch",
            Some("name"),
            json!({"type": ["string", "null"], "maxLength": contacts::MAX_NAME_CHARS}),
        ),
        (
            "ContactPatch",
            Some("tags"),
            json!({"type": "array", "maxItems": contacts::MAX_TAGS, "items": text(1, contacts::MAX_TAG_CHARS)}),
        ),
        ("ContactPatch", Some("attributes"), attributes(true)),
        ("ContactPatch", Some("opted_in"), json!({"type": "boolean"})),
        // channel::settings::{check_id, check_credential}: Meta's ids are digits, credentials
        // printable ASCII without spaces (they go into a header or an HMAC key).
        ("ChannelInput", Some("phone_number_id"), meta_id()),
        ("ChannelInput", Some("waba_id"), meta_id()),
        ("ChannelInput", Some("access_token"), credential(4096)),
        ("ChannelInput", Some("app_secret"), credential(256)),
        ("ChannelInput", Some("verify_token"), credential(128)),
        ("ApiKeyCreate", Some("name"), key_name()),
        (
            "ApiKeyCreate",
            Some("rate_limit_per_minute"),
            limit(keys::MAX_RATE_LIMIT_PER_MINUTE),
        ),
        (
            "ApiKeyCreate",
            Some("daily_limit"),
            limit(keys::MAX_DAILY_LIMIT),
        ),
        ("ApiKeyCreate", Some("ip_whitelist"), ip_entries()),
        (
            "ApiKeyCreate",
            Some("expires_at"),
            json!({"type": "string", "format": "date-time", "description": "RFC 3339, in the future (`invalid_expires_at` otherwise); the key stops working then."}),
        ),
        ("ApiKeyPatch", Some("name"), key_name()),
        (
            "ApiKeyPatch",
            Some("rate_limit_per_minute"),
            limit(keys::MAX_RATE_LIMIT_PER_MINUTE),
        ),
        (
            "ApiKeyPatch",
            Some("daily_limit"),
            limit(keys::MAX_DAILY_LIMIT),
        ),
        ("ApiKeyPatch", Some("ip_whitelist"), ip_entries()),
        (
            "ApiKeyPatch",
            Some("expires_at"),
            json!({"type": ["string", "null"], "format": "date-time", "description": "RFC 3339, in the future; `null` removes the expiry."}),
        ),
        (
            "RotateBody",
            Some("grace_seconds"),
            json!({"type": "integer", "minimum": 0, "maximum": keys::MAX_GRACE_SECONDS}),
        ),
        ("TemplateInput", Some("name"), template_name()),
        ("TemplateInput", Some("language"), language()),
        (
            "TemplateInput",
            Some("body"),
            text(1, templates::MAX_BODY_CHARS),
        ),
        ("TemplatePatch", Some("name"), template_name()),
        ("TemplatePatch", Some("language"), language()),
        (
            "TemplatePatch",
            Some("body"),
            text(1, templates::MAX_BODY_CHARS),
        ),
        (
            "LoginBody",
            Some("email"),
            json!({"type": "string", "maxLength": crate::routes::admin::session::MAX_EMAIL_BYTES, "description": "At most 254 bytes of UTF-8 (`invalid_email` otherwise)."}),
        ),
        (
            "LoginBody",
            Some("password"),
            json!({"type": "string", "maxLength": crate::auth::password::MAX_PASSWORD_BYTES, "description": "At most 1,024 bytes of UTF-8 (`invalid_password` otherwise)."}),
        ),
        ("CreateWebhook", Some("url"), webhook_url()),
        ("CreateWebhook", Some("events"), events()),
        ("CreateWebhook", Some("description"), text(0, 500)),
        ("UpdateWebhook", Some("url"), webhook_url()),
        ("UpdateWebhook", Some("events"), events()),
        ("UpdateWebhook", Some("description"), text(0, 500)),
        ("UpdateWebhook", Some("enabled"), json!({"type": "boolean"})),
    ]
}

/// `POST /v1/messages`: one variant per `type`, each with `to` or `contact_id`.
fn send_message() -> Value {
    let base = [
        ("to", phone()),
        ("contact_id", id("con")),
        ("reference", text(1, 128)),
    ];
    let variants: Vec<Value> = [
        ("text", "TextContent"),
        ("template", "TemplateRequest"),
        ("media", "MediaContent"),
    ]
    .iter()
    .map(|(kind, content)| {
        let mut v = variant(&base, kind, content, &[]);
        v["oneOf"] = json!([{"required": ["to"]}, {"required": ["contact_id"]}]);
        v
    })
    .collect();
    json!({
        "description": "A recipient (`to` or `contact_id`), a `type` and that type's body, nothing else.",
        "oneOf": variants,
    })
}

/// `POST /v1/messages/bulk`: one variant per `type`.
fn bulk_request() -> Value {
    let base = [
        (
            "recipients",
            json!({"type": "array", "minItems": 1, "maxItems": crate::batches::MAX_RECIPIENTS, "items": schema_ref("Recipient")}),
        ),
        (
            "dry_run",
            json!({"type": "boolean", "description": "Validate only: nothing is stored or sent."}),
        ),
    ];
    json!({
        "description": "1 to 10,000 recipients and one body: a text with `{{variables}}`, or a template.",
        "oneOf": [
            variant(&base, "text", "BulkText", &["recipients"]),
            variant(&base, "template", "BulkTemplate", &["recipients"]),
        ],
    })
}

/// Trimmed before it is checked, so it needs a character that is not white space.
fn key_name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": keys::MAX_NAME_CHARS, "pattern": "^\\s*\\S", "example": "Production CRM"})
}

fn keywords() -> Value {
    json!({"type": "array", "maxItems": crate::chatbot::MAX_KEYWORDS, "items": text(1, 50)})
}

/// A flow step's action: exactly the fields of its `type`.
fn action() -> Value {
    json!({"oneOf": [
        {
            "description": "Adds a tag to the contact.",
            "type": "object", "additionalProperties": false, "required": ["type", "tag"],
            "properties": {"type": {"const": "set_tag"}, "tag": text(1, contacts::MAX_TAG_CHARS)},
        },
        {
            "description": "Sets a contact attribute; `value` may use `{{reply}}` and the other variables.",
            "type": "object", "additionalProperties": false, "required": ["type", "key", "value"],
            "properties": {
                "type": {"const": "set_attribute"},
                "key": text(1, contacts::MAX_ATTRIBUTE_KEY_CHARS),
                "value": text(0, contacts::MAX_ATTRIBUTE_VALUE_CHARS),
            },
        },
    ]})
}

fn attributes(nullable_values: bool) -> Value {
    let mut value = vec!["string", "number", "boolean"];
    if nullable_values {
        value.push("null");
    }
    json!({
        "type": "object",
        "maxProperties": contacts::MAX_ATTRIBUTES,
        "propertyNames": {"minLength": 1, "maxLength": contacts::MAX_ATTRIBUTE_KEY_CHARS},
        "additionalProperties": {"type": value, "maxLength": contacts::MAX_ATTRIBUTE_VALUE_CHARS},
    })
}

/// Writes the table into `components.schemas`, and bounds every list's `limit` and `cursor`.
pub fn apply(doc: &mut Value) {
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    for (schema, property, constraint) in table() {
        let target = schemas
            .get_mut(schema)
            .unwrap_or_else(|| panic!("constraint for unknown schema {schema}"));
        match property {
            Some(property) => {
                let slot = target["properties"].get_mut(property).unwrap_or_else(|| {
                    panic!("constraint for unknown property {schema}.{property}")
                });
                let description = slot.get("description").cloned();
                *slot = constraint;
                if let (Some(d), Some(obj)) = (description, slot.as_object_mut()) {
                    obj.entry("description").or_insert(d);
                }
            }
            // A `oneOf` of whole variants replaces the derived shape; other keywords add to it.
            None if matches!(schema, "SendMessage" | "BulkRequest" | "Action") => {
                *target = constraint
            }
            None => merge(target, constraint),
        }
    }
    flatten_message_content(schemas);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for param in params {
                match param["name"].as_str() {
                    Some("limit") if param["in"] == "query" => {
                        param["schema"] = json!({"type": "integer", "minimum": 1, "maximum": crate::routes::pagination::MAX_LIMIT, "default": crate::routes::pagination::DEFAULT_LIMIT});
                    }
                    Some("status") if param["in"] == "query" => {
                        let statuses: &[&str] = if path.ends_with("/deliveries") {
                            &["pending", "succeeded", "failed"]
                        } else {
                            &["queued", "sent", "delivered", "read", "failed", "received"]
                        };
                        param["schema"] = json!({"type": "string", "enum": statuses});
                    }
                    Some("direction") if param["in"] == "query" => {
                        param["schema"] =
                            json!({"type": "string", "enum": ["outbound", "inbound"]});
                    }
                    Some("event_type") if param["in"] == "query" => {
                        param["schema"] = json!({"type": "string", "enum": EVENT_TYPES});
                    }
                    Some("contact_id") if param["in"] == "query" => param["schema"] = id("con"),
                    Some("batch_id") if param["in"] == "query" => param["schema"] = id("bat"),
                    Some("cursor") if param["in"] == "query" => {
                        let prefix = cursor_prefix(path);
                        param["schema"] = json!({"type": "string", "pattern": format!("^({prefix}_[0-9a-z]{{26}})?$")});
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A message is `allOf: [Content (a oneOf of one-key objects), {its fields}]` as derived; code
/// generators cannot take `allOf` of a non-object, so the content's keys become optional
/// properties of the message itself (exactly one of them is present on every message).
fn flatten_message_content(schemas: &mut Map<String, Value>) {
    let Some(variants) = schemas
        .get("Content")
        .and_then(|c| c["oneOf"].as_array())
        .cloned()
    else {
        return;
    };
    let Some(view) = schemas.get_mut("MessageView") else {
        return;
    };
    let Some(parts) = view.get("allOf").and_then(Value::as_array).cloned() else {
        return;
    };
    let Some(mut object) = parts.into_iter().find(|p| p.get("properties").is_some()) else {
        return;
    };
    for variant in variants {
        if let Some(props) = variant["properties"].as_object() {
            for (k, v) in props {
                object["properties"][k] = v.clone();
            }
        }
    }
    if let Some(description) = view.get("description").cloned() {
        object["description"] = description;
    }
    *view = object;
}

/// The id prefix of what a list pages through (`routes::pagination::page_cursor`).
fn cursor_prefix(path: &str) -> &'static str {
    match path {
        "/v1/contacts" => "con",
        "/v1/messages" | "/v1/batches/{id}/messages" => "msg",
        "/v1/templates" | "/admin/templates" => "tpl",
        "/v1/chatbot/flows" | "/admin/flows" => "flw",
        "/admin/webhooks" => "whk",
        "/admin/webhooks/{id}/deliveries" => "dlv",
        other => panic!("no cursor prefix known for {other}"),
    }
}

fn merge(target: &mut Value, extra: Value) {
    let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) else {
        return;
    };
    let extra: Map<String, Value> = extra;
    for (k, v) in extra {
        target.insert(k, v);
    }
}
