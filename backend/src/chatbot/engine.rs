//! Moving contacts through flows. Every function works in the caller's unit of work: the run, the
//! contact's mirrored state, the bot's queued messages, contact changes from actions and the
//! events all commit together (and the commit wakes the dispatcher and the event sender).

use serde_json::{json, Map, Value};

use super::{
    store::{self, Run},
    Action, BotMessage, End, Flow, Step,
};
use crate::{
    clock::now_ms,
    contacts::{self, ChatbotState, Contact, ContactError, ContactPatch},
    events,
    ids::new_id,
    messages::{
        self,
        store::{insert, NewMessage},
        ButtonReply, Content, Direction, InteractiveContent, TextContent,
    },
    refusal::Refusal,
    templates,
    unit_of_work::UnitOfWork,
};

use super::ChatbotError;

/// Who the bot acts for and through which channel its messages go.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub account_id: &'a str,
    pub channel: &'static str,
}

/// What happened, for the HTTP answer, the dispatcher and the metrics.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bot messages queued.
    pub messages: Vec<String>,
    /// The contact's state afterwards (`None`: not in a flow).
    pub state: Option<ChatbotState>,
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A flow text's variables: the trigger's variables first, then `reply`, `name`, `phone`, then
/// the contact's attributes; unknown ones render empty.
fn render(text: &str, run: &Run, contact: &Contact, reply: Option<&str>) -> String {
    let Ok(compiled) = templates::compile(text) else {
        return text.to_string();
    };
    compiled.render_lenient(|name| {
        if let Some(value) = run.variables.get(name).and_then(value_text) {
            return Some(value);
        }
        match name {
            "reply" => reply.map(str::to_string),
            "name" => contact.name.clone(),
            "phone" => Some(contact.phone.clone()),
            _ => contact.attributes.get(name).and_then(value_text),
        }
    })
}

/// Starts `flow` for the contact (replacing any run it was in); 409 `chatbot_paused` while a
/// human has the conversation.
pub async fn trigger(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    mut contact: Contact,
    flow: &Flow,
    variables: Map<String, Value>,
) -> Result<Outcome, ChatbotError> {
    if let Some(run) = store::get_run(conn, ctx.account_id, &contact.id).await? {
        if run.paused {
            return Err(Refusal::conflict(
                "chatbot_paused",
                "the contact's chatbot is paused (a human has the conversation); resume it first",
            )
            .into());
        }
    }
    if !contact.opted_in {
        return Err(Refusal::unacceptable(
            "contact_opted_out",
            "the contact opted out of messages",
        )
        .into());
    }
    let mut out = Outcome::default();
    start(conn, ctx, &mut contact, flow, variables, None, &mut out).await?;
    Ok(out)
}

async fn start(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact: &mut Contact,
    flow: &Flow,
    variables: Map<String, Value>,
    reply: Option<&str>,
    out: &mut Outcome,
) -> Result<(), ChatbotError> {
    let mut run = Run {
        contact_id: contact.id.clone(),
        flow_id: flow.id.clone(),
        step: flow.definition.start.clone(),
        paused: false,
        variables,
        started_at: now_ms(),
    };
    conn.chatbot_happened("started");
    let start = flow.definition.start.clone();
    enter(conn, ctx, flow, &mut run, contact, &start, reply, out).await
}

/// Feeds an inbound message to the bot: moves the contact along its flow, or starts a flow
/// whose keyword the text matches. Silent while paused.
pub async fn on_inbound(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    mut contact: Contact,
    text: Option<&str>,
    button: Option<&ButtonReply>,
) -> Result<Outcome, ChatbotError> {
    let mut out = Outcome::default();
    let reply = button.and_then(|b| b.text.as_deref()).or(text);
    let Some(mut run) = store::get_run(conn, ctx.account_id, &contact.id).await? else {
        if let Some(reply) = reply {
            if let Some(flow) = flow_for_keyword(conn, ctx.account_id, reply).await? {
                start(
                    conn,
                    ctx,
                    &mut contact,
                    &flow,
                    Map::new(),
                    Some(reply),
                    &mut out,
                )
                .await?;
            }
        }
        return Ok(out);
    };
    out.state = Some(run.state());
    if run.paused {
        return Ok(out);
    }
    let Some(flow) = store::get(conn, ctx.account_id, &run.flow_id).await? else {
        end_run(conn, ctx, &contact.id, &mut out).await?;
        return Ok(out);
    };
    let Some(step) = flow.definition.step(&run.step).cloned() else {
        end_run(conn, ctx, &contact.id, &mut out).await?;
        return Ok(out);
    };
    match next_step(&step, text, button) {
        Some(next) => {
            conn.chatbot_happened("advanced");
            enter(
                conn,
                ctx,
                &flow,
                &mut run,
                &mut contact,
                &next,
                reply,
                &mut out,
            )
            .await?;
        }
        // Nothing matched and no fallback: ask again.
        None => {
            if let Some(message) = &step.message {
                send(conn, ctx, &flow, &run, &contact, message, reply, &mut out).await?;
            }
        }
    }
    Ok(out)
}

/// The step a reply leads to: a button (by id, or by its title typed or tapped), then a
/// keyword, then the fallback.
fn next_step(step: &Step, text: Option<&str>, button: Option<&ButtonReply>) -> Option<String> {
    let buttons = step
        .message
        .as_ref()
        .map(|m| m.buttons.as_slice())
        .unwrap_or_default();
    let typed = button.and_then(|b| b.text.as_deref()).or(text);
    let button_id = button
        .and_then(|b| b.id.clone())
        .filter(|id| buttons.iter().any(|b| &b.id == id))
        .or_else(|| {
            let typed = typed?.trim();
            buttons
                .iter()
                .find(|b| b.title.trim().to_lowercase() == typed.to_lowercase())
                .map(|b| b.id.clone())
        });
    if let Some(id) = button_id {
        if let Some(t) = step
            .transitions
            .iter()
            .find(|t| t.button.as_deref() == Some(id.as_str()))
        {
            return Some(t.next.clone());
        }
    }
    if let Some(typed) = typed {
        if let Some(t) = step.transitions.iter().find(|t| {
            t.keyword
                .as_deref()
                .is_some_and(|k| keyword_matches(k, typed))
        }) {
            return Some(t.next.clone());
        }
    }
    step.fallback.clone()
}

/// A keyword matches a reply equal to it, or containing it as a word or phrase
/// (case-insensitive).
pub fn keyword_matches(keyword: &str, text: &str) -> bool {
    let keyword = keyword.trim().to_lowercase();
    let text = text.trim().to_lowercase();
    if keyword.is_empty() {
        return false;
    }
    if text == keyword {
        return true;
    }
    if keyword.contains(char::is_whitespace) {
        return text.contains(&keyword);
    }
    text.split(|c: char| !c.is_alphanumeric())
        .any(|word| word == keyword)
}

async fn flow_for_keyword(
    conn: &mut UnitOfWork,
    account_id: &str,
    text: &str,
) -> Result<Option<Flow>, sqlx::Error> {
    let (flows, _) = store::list(conn, account_id, None, 200).await?;
    Ok(flows.into_iter().find(|f| {
        f.definition
            .keywords
            .iter()
            .any(|k| keyword_matches(k, text))
    }))
}

#[allow(clippy::too_many_arguments)]
async fn enter(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    flow: &Flow,
    run: &mut Run,
    contact: &mut Contact,
    step_id: &str,
    reply: Option<&str>,
    out: &mut Outcome,
) -> Result<(), ChatbotError> {
    let Some(step) = flow.definition.step(step_id) else {
        end_run(conn, ctx, &contact.id, out).await?;
        return Ok(());
    };
    for action in &step.actions {
        apply(conn, ctx, run, contact, action, reply).await?;
    }
    if let Some(message) = &step.message {
        send(conn, ctx, flow, run, contact, message, reply, out).await?;
    }
    run.step = step.id.clone();
    match step.end {
        Some(End::Complete) => {
            end_run(conn, ctx, &contact.id, out).await?;
        }
        Some(End::Handover) => {
            run.paused = true;
            store::save_run(conn, ctx.account_id, run).await?;
            handover_event(conn, ctx, contact, run, "flow").await?;
            conn.chatbot_happened("handover");
            out.state = Some(run.state());
        }
        None => {
            store::save_run(conn, ctx.account_id, run).await?;
            out.state = Some(run.state());
        }
    }
    Ok(())
}

async fn end_run(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact_id: &str,
    out: &mut Outcome,
) -> Result<(), ChatbotError> {
    store::delete_run(conn, ctx.account_id, contact_id).await?;
    contacts::set_chatbot(conn, ctx.account_id, contact_id, None).await?;
    conn.chatbot_happened("completed");
    out.state = None;
    Ok(())
}

async fn handover_event(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact: &Contact,
    run: &Run,
    reason: &str,
) -> Result<(), ChatbotError> {
    let mut contact_json = contact.to_json();
    contact_json["chatbot"] = serde_json::to_value(run.state()).expect("state serializes");
    events::emit(
        conn,
        ctx.account_id,
        "chatbot.handover",
        json!({
            "contact": contact_json,
            "flow_id": run.flow_id,
            "step": run.step,
            "reason": reason,
        }),
    )
    .await?;
    Ok(())
}

async fn apply(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    run: &Run,
    contact: &mut Contact,
    action: &Action,
    reply: Option<&str>,
) -> Result<(), ChatbotError> {
    let patch = match action {
        Action::SetTag { tag } => {
            if contact.tags.contains(tag) {
                return Ok(());
            }
            let mut tags = contact.tags.clone();
            tags.push(tag.clone());
            ContactPatch {
                tags: Some(tags),
                ..ContactPatch::default()
            }
        }
        Action::SetAttribute { key, value } => {
            let value = render(value, run, contact, reply);
            let mut attributes = Map::new();
            attributes.insert(key.clone(), Value::String(value));
            ContactPatch {
                attributes: Some(attributes),
                ..ContactPatch::default()
            }
        }
    };
    match contacts::update(conn, ctx.account_id, &contact.id, patch).await {
        Ok(updated) => {
            *contact = updated;
        }
        // A flow's action must not break the conversation (e.g. the 51st tag): log and go on.
        // Only a fault (the database) stops it.
        Err(ContactError::Refused(refusal)) => {
            tracing::info!(code = refusal.code, "chatbot action skipped");
        }
        Err(ContactError::NotFound) => {
            tracing::info!(code = "not_found", "chatbot action skipped");
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn send(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    flow: &Flow,
    run: &Run,
    contact: &Contact,
    message: &BotMessage,
    reply: Option<&str>,
    out: &mut Outcome,
) -> Result<(), ChatbotError> {
    // The bot never writes to a contact who opted out.
    if !contact.opted_in {
        return Ok(());
    }
    let body: String = render(&message.text, run, contact, reply)
        .chars()
        .take(messages::MAX_TEXT_CHARS)
        .collect();
    let body = if body.trim().is_empty() {
        message.text.clone()
    } else {
        body
    };
    let content = if message.buttons.is_empty() {
        Content::Text(TextContent { body })
    } else {
        Content::Interactive(InteractiveContent {
            body,
            buttons: message.buttons.clone(),
        })
    };
    let msg = insert(
        conn,
        NewMessage {
            id: new_id("msg"),
            account_id: ctx.account_id.to_string(),
            direction: Direction::Outbound,
            contact_id: Some(contact.id.clone()),
            phone: contact.phone.clone(),
            content,
            reference: None,
            flow_id: Some(flow.id.clone()),
            channel: ctx.channel,
        },
    )
    .await?;
    out.messages.push(msg.id);
    Ok(())
}

/// Pauses the contact's bot (a human takes over) and emits `chatbot.handover`; 409
/// `chatbot_not_active` if the contact is in no flow. Pausing twice changes nothing.
pub async fn pause(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact: &Contact,
) -> Result<Outcome, ChatbotError> {
    let mut out = Outcome::default();
    let mut run = active_run(conn, ctx, contact).await?;
    if !run.paused {
        run.paused = true;
        store::save_run(conn, ctx.account_id, &run).await?;
        handover_event(conn, ctx, contact, &run, "paused").await?;
        conn.chatbot_happened("paused");
    }
    out.state = Some(run.state());
    Ok(out)
}

/// Gives the conversation back to the bot, which waits for the contact's next reply at the
/// step it was on. Resuming after a flow's handover step ends the flow (the handover was its
/// last step).
pub async fn resume(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact: &Contact,
) -> Result<Outcome, ChatbotError> {
    let mut out = Outcome::default();
    let mut run = active_run(conn, ctx, contact).await?;
    out.state = Some(run.state());
    if !run.paused {
        return Ok(out);
    }
    conn.chatbot_happened("resumed");
    let flow = store::get(conn, ctx.account_id, &run.flow_id).await?;
    let step = flow.as_ref().and_then(|f| f.definition.step(&run.step));
    if step.is_none_or(|s| s.end.is_some()) {
        end_run(conn, ctx, &contact.id, &mut out).await?;
        return Ok(out);
    }
    run.paused = false;
    store::save_run(conn, ctx.account_id, &run).await?;
    out.state = Some(run.state());
    Ok(out)
}

async fn active_run(
    conn: &mut UnitOfWork,
    ctx: Ctx<'_>,
    contact: &Contact,
) -> Result<Run, ChatbotError> {
    store::get_run(conn, ctx.account_id, &contact.id)
        .await?
        .ok_or_else(|| {
            Refusal::conflict(
                "chatbot_not_active",
                "the contact is not in a chatbot flow; trigger one first",
            )
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        assert!(keyword_matches("help", "HELP"));
        assert!(keyword_matches("help", "I need help!"));
        assert!(!keyword_matches("help", "helpful"));
        assert!(keyword_matches("talk to human", "please talk to human now"));
        assert!(!keyword_matches("", "x"));
    }

    #[test]
    fn replies_pick_transitions() {
        let step: Step = serde_json::from_value(serde_json::json!({
            "id": "a",
            "message": {"text": "?", "buttons": [{"id": "y", "title": "Yes"}, {"id": "n", "title": "No"}]},
            "transitions": [{"button": "y", "next": "yes"}, {"button": "n", "next": "no"},
                            {"keyword": "agent", "next": "human"}],
            "fallback": "again"
        }))
        .unwrap();
        let tap = |id: &str| ButtonReply {
            id: Some(id.into()),
            text: None,
        };
        assert_eq!(
            next_step(&step, None, Some(&tap("y"))).as_deref(),
            Some("yes")
        );
        assert_eq!(next_step(&step, Some("no"), None).as_deref(), Some("no"));
        assert_eq!(
            next_step(&step, Some("an agent please"), None).as_deref(),
            Some("human")
        );
        assert_eq!(
            next_step(&step, Some("whatever"), None).as_deref(),
            Some("again")
        );
        let titled = ButtonReply {
            id: None,
            text: Some("Yes".into()),
        };
        assert_eq!(
            next_step(&step, None, Some(&titled)).as_deref(),
            Some("yes")
        );
    }
}
