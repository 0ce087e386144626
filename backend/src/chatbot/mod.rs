//! Chatbot flows: small state machines of bot messages and reply options, stored per account.
//!
//! A flow has `keywords` (an inbound text matching one starts the flow for a contact not in a
//! flow), a `start` step and `steps`. Entering a step applies its `actions` (set a tag or an
//! attribute on the contact), sends its `message` (text, or text with up to three reply buttons)
//! and then either waits for a reply, or ends: `"end": "complete"` (the contact leaves the flow)
//! or `"end": "handover"` (a human takes over: the contact's bot is paused and
//! `chatbot.handover` is emitted). A reply moves the contact along the first transition that
//! matches it (a button id or title, or a keyword), else to the step's `fallback`, else the
//! step's message is sent again. While paused the bot stays silent. The contact's place is in
//! `chatbot_runs` (with the trigger's variables) and mirrored into `contacts.chatbot`.

#[cfg(test)]
mod api_tests;
pub mod engine;
pub mod error;
pub mod service;
pub mod store;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{clock::rfc3339, messages::ReplyButton, refusal::Refusal, templates};

pub use error::ChatbotError;

pub const MAX_STEPS: usize = 50;
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;
pub const MAX_TEXT_CHARS: usize = 1024;
pub const MAX_KEYWORDS: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotMessage {
    /// 1 to 1024 characters; `{{variables}}` come from the trigger's variables, then `reply`
    /// (the last inbound text), `name`, `phone` and the contact's attributes (unknown: empty).
    #[schema(example = "Hi {{name}}! How can we help?")]
    pub text: String,
    /// Up to three reply buttons (`title` up to 20 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ReplyButton>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Adds a tag to the contact.
    SetTag { tag: String },
    /// Sets a contact attribute; `value` may use `{{reply}}` and the other variables.
    SetAttribute { key: String, value: String },
}

/// Where a reply leads: exactly one of `button` (a button id of this step) or `keyword`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<String>,
    /// Matches a reply equal to it or containing it as a word (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    pub next: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// The flow is done; the contact leaves it.
    Complete,
    /// A human takes over: the contact's bot is paused, `chatbot.handover` is emitted.
    Handover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// 1 to 64 letters, digits, `_` or `-`; unique in the flow.
    #[schema(example = "welcome")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<BotMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// The step a reply that matches no transition leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Set on a final step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
}

/// What a flow is made of (stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Definition {
    pub keywords: Vec<String>,
    pub start: String,
    pub steps: Vec<Step>,
}

impl Definition {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub definition: Definition,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowView {
    #[schema(example = "flw_01jd7k2v8m3q4r5s6t7u8v9w0x")]
    pub id: String,
    pub name: String,
    pub keywords: Vec<String>,
    pub start: String,
    pub steps: Vec<Step>,
    pub created_at: String,
    pub updated_at: String,
}

// A page of flows as `/v1/chatbot/flows` and `/admin/flows` list them. (A doc comment would
// become the schema's description in the OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowList {
    pub data: Vec<FlowView>,
    pub next_cursor: Option<String>,
}

impl FlowList {
    /// One page of flows as the lists show it.
    pub fn new(flows: &[Flow], next_cursor: Option<String>) -> Self {
        FlowList {
            data: flows.iter().map(Flow::view).collect(),
            next_cursor,
        }
    }
}

impl Flow {
    pub fn view(&self) -> FlowView {
        FlowView {
            id: self.id.clone(),
            name: self.name.clone(),
            keywords: self.definition.keywords.clone(),
            start: self.definition.start.clone(),
            steps: self.definition.steps.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

/// `POST /admin/flows`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowInput {
    #[schema(example = "Order support")]
    pub name: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub start: String,
    pub steps: Vec<Step>,
}

/// `PATCH /admin/flows/{id}`: any of the fields; the result is validated as a whole.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowPatch {
    pub name: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub start: Option<String>,
    pub steps: Option<Vec<Step>>,
}

fn invalid(message: String) -> Refusal {
    Refusal::unacceptable("invalid_flow", message)
}

fn valid_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn char_len_between(s: &str, min: usize, max: usize) -> bool {
    let n = s.chars().count();
    n >= min && n <= max && !s.trim().is_empty()
}

pub fn validate_name(name: &str) -> Result<(), Refusal> {
    if !char_len_between(name, 1, 200) {
        return Err(invalid("name: 1 to 200 characters".into()));
    }
    Ok(())
}

/// Checks a flow on save: the start step exists, every transition and fallback points to an
/// existing step, buttons and texts respect WhatsApp's limits, final steps have no way out and
/// the others have one. Errors name the step.
pub fn validate(definition: &Definition) -> Result<(), Refusal> {
    if definition.keywords.len() > MAX_KEYWORDS {
        return Err(invalid(format!("keywords: at most {MAX_KEYWORDS}")));
    }
    for (i, keyword) in definition.keywords.iter().enumerate() {
        if !char_len_between(keyword, 1, 50) {
            return Err(invalid(format!("keywords[{i}]: 1 to 50 characters")));
        }
    }
    if definition.steps.is_empty() || definition.steps.len() > MAX_STEPS {
        return Err(invalid(format!("steps: 1 to {MAX_STEPS} steps")));
    }
    let mut ids = HashSet::new();
    for (i, step) in definition.steps.iter().enumerate() {
        if !valid_step_id(&step.id) {
            return Err(invalid(format!(
                "steps[{i}].id: 1 to 64 letters, digits, _ or -"
            )));
        }
        if !ids.insert(step.id.as_str()) {
            return Err(invalid(format!(
                "steps[{i}].id: duplicate step id {:?}",
                step.id
            )));
        }
    }
    if !ids.contains(definition.start.as_str()) {
        return Err(invalid(format!(
            "start: no step with id {:?}",
            definition.start
        )));
    }
    for step in &definition.steps {
        validate_step(step, &ids)?;
    }
    Ok(())
}

fn validate_step(step: &Step, ids: &HashSet<&str>) -> Result<(), Refusal> {
    let at = |what: String| invalid(format!("step {:?}: {what}", step.id));
    let mut button_ids = HashSet::new();
    if let Some(message) = &step.message {
        if !char_len_between(&message.text, 1, MAX_TEXT_CHARS) {
            return Err(at(format!(
                "message.text: 1 to {MAX_TEXT_CHARS} characters"
            )));
        }
        templates::compile(&message.text).map_err(|e| at(format!("message.text: {e}")))?;
        if message.buttons.len() > MAX_BUTTONS {
            return Err(at(format!("message.buttons: at most {MAX_BUTTONS}")));
        }
        let mut titles = HashSet::new();
        for button in &message.buttons {
            if !char_len_between(&button.id, 1, 256) {
                return Err(at("a button id has 1 to 256 characters".into()));
            }
            if !char_len_between(&button.title, 1, MAX_BUTTON_TITLE_CHARS) {
                return Err(at(format!(
                    "button {:?}: title of 1 to {MAX_BUTTON_TITLE_CHARS} characters",
                    button.id
                )));
            }
            if !button_ids.insert(button.id.as_str()) {
                return Err(at(format!("duplicate button id {:?}", button.id)));
            }
            if !titles.insert(button.title.to_lowercase()) {
                return Err(at(format!("duplicate button title {:?}", button.title)));
            }
        }
    }
    for action in &step.actions {
        match action {
            Action::SetTag { tag } if !char_len_between(tag, 1, 64) => {
                return Err(at("set_tag: a tag has 1 to 64 characters".into()))
            }
            Action::SetAttribute { key, value } => {
                if !char_len_between(key, 1, 64) {
                    return Err(at("set_attribute: a key has 1 to 64 characters".into()));
                }
                if value.chars().count() > 1000 {
                    return Err(at(
                        "set_attribute: a value has at most 1000 characters".into()
                    ));
                }
                templates::compile(value).map_err(|e| at(format!("set_attribute value: {e}")))?;
            }
            Action::SetTag { .. } => {}
        }
    }
    for transition in &step.transitions {
        match (&transition.button, &transition.keyword) {
            (Some(button), None) => {
                if !button_ids.contains(button.as_str()) {
                    return Err(at(format!(
                        "transition on button {button:?}: the step has no such button"
                    )));
                }
            }
            (None, Some(keyword)) => {
                if !char_len_between(keyword, 1, 50) {
                    return Err(at("a transition keyword has 1 to 50 characters".into()));
                }
            }
            _ => {
                return Err(at(
                    "each transition has exactly one of `button` or `keyword`".into(),
                ))
            }
        }
        if !ids.contains(transition.next.as_str()) {
            return Err(at(format!(
                "transition to unknown step {:?}",
                transition.next
            )));
        }
    }
    if let Some(fallback) = &step.fallback {
        if !ids.contains(fallback.as_str()) {
            return Err(at(format!("fallback to unknown step {fallback:?}")));
        }
    }
    if step.end.is_some() {
        if !step.transitions.is_empty() || step.fallback.is_some() || !button_ids.is_empty() {
            return Err(at(
                "a final step (`end`) has no buttons, transitions or fallback".into(),
            ));
        }
    } else {
        if step.transitions.is_empty() && step.fallback.is_none() {
            return Err(at(
                "needs a transition or a fallback, or `end` (complete or handover)".into(),
            ));
        }
        if step.fallback.is_none() {
            for button in &button_ids {
                if !step
                    .transitions
                    .iter()
                    .any(|t| t.button.as_deref() == Some(*button))
                {
                    return Err(at(format!(
                        "button {button:?} leads nowhere: add a transition or a fallback"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: serde_json::Value) -> Definition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn demo_flow_is_valid() {
        validate(&crate::examples::demo_flow().1).unwrap();
    }

    #[test]
    fn rejects_dangling_references() {
        let ok = json!({"keywords": [], "start": "a", "steps": [
            {"id": "a", "message": {"text": "hi", "buttons": [{"id": "y", "title": "Yes"}]},
             "transitions": [{"button": "y", "next": "b"}]},
            {"id": "b", "message": {"text": "bye"}, "end": "complete"}
        ]});
        validate(&def(ok.clone())).unwrap();

        let mut bad = ok.clone();
        bad["start"] = json!("zz");
        assert!(validate(&def(bad))
            .unwrap_err()
            .to_string()
            .contains("start"));

        let mut bad = ok.clone();
        bad["steps"][0]["transitions"][0]["next"] = json!("nope");
        let err = validate(&def(bad)).unwrap_err();
        assert_eq!(err.code, "invalid_flow");
        assert!(err.to_string().contains("unknown step \"nope\""), "{err}");

        let mut bad = ok.clone();
        bad["steps"][0]["transitions"][0]["button"] = json!("n");
        assert!(validate(&def(bad)).is_err());

        let mut bad = ok.clone();
        bad["steps"][1]["end"] = json!(null);
        assert!(validate(&def(bad))
            .unwrap_err()
            .to_string()
            .contains("needs a transition"));

        let mut bad = ok;
        bad["steps"][1]["id"] = json!("a");
        assert!(validate(&def(bad))
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }
}
