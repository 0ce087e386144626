//! Message templates: per-account `{"name","language","body"}` with `{{variable}}` placeholders.
//! A body is compiled once into literal and variable segments, so rendering 10,000 bulk
//! recipients is string concatenation. Rendering is strict: every placeholder needs a value and
//! every value a placeholder (422 `missing_variables` / `unexpected_variables`, naming them).

#[cfg(test)]
mod api_tests;
pub mod service;
pub mod store;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{clock::rfc3339, refusal::Refusal};

pub const MAX_BODY_CHARS: usize = 1024;
pub const MAX_NAME_CHARS: usize = 512;
pub const MAX_VARIABLES: usize = 30;
pub const MAX_VARIABLE_CHARS: usize = 1024;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Template {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub language: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    #[schema(example = "tpl_01jd7k2v8m3q4r5s6t7u8v9w0x")]
    pub id: String,
    #[schema(example = "order_update")]
    pub name: String,
    #[schema(example = "en")]
    pub language: String,
    #[schema(example = "Hi {{name}}, order {{order}} has shipped")]
    pub body: String,
    /// The placeholders of `body`, in order of first appearance.
    pub variables: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

// A page of templates as `/v1/templates` and `/admin/templates` list them. (A doc comment would
// become the schema's description in the OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub data: Vec<TemplateView>,
    pub next_cursor: Option<String>,
}

impl TemplateList {
    /// One page of templates as the lists show it.
    pub fn new(templates: &[Template], next_cursor: Option<String>) -> Self {
        TemplateList {
            data: templates.iter().map(Template::view).collect(),
            next_cursor,
        }
    }
}

impl Template {
    pub fn view(&self) -> TemplateView {
        TemplateView {
            id: self.id.clone(),
            name: self.name.clone(),
            language: self.language.clone(),
            body: self.body.clone(),
            variables: compile(&self.body).map(|c| c.variables).unwrap_or_default(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Variable(String),
}

/// A body split into literals and `{{variable}}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    segments: Vec<Segment>,
    /// Distinct placeholder names, in order of first appearance.
    pub variables: Vec<String>,
}

fn valid_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Splits a body into segments. `{{ name }}` (spaces allowed) is a placeholder; names are
/// letters, digits and `_`. An unclosed `{{` or a bad name is an error naming the problem.
pub fn compile(body: &str) -> Result<Compiled, String> {
    let mut segments = Vec::new();
    let mut variables: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            segments.push(Segment::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "an opening {{ has no closing }}".to_string())?;
        let name = after[..end].trim();
        if !valid_variable_name(name) {
            return Err(format!(
                "{{{{{name}}}}}: variable names are 1 to 64 letters, digits or _"
            ));
        }
        if !variables.iter().any(|v| v == name) {
            variables.push(name.to_string());
        }
        segments.push(Segment::Variable(name.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_string()));
    }
    if variables.len() > MAX_VARIABLES {
        return Err(format!("at most {MAX_VARIABLES} distinct variables"));
    }
    Ok(Compiled {
        segments,
        variables,
    })
}

/// A variable's value as text: strings as they are, numbers and booleans written out.
pub fn variable_text(name: &str, value: &Value) -> Result<String, Refusal> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(Refusal::unacceptable(
                "invalid_variables",
                format!("variables.{name}: must be a string, number or boolean"),
            ))
        }
    };
    if text.chars().count() > MAX_VARIABLE_CHARS {
        return Err(Refusal::unacceptable(
            "invalid_variables",
            format!("variables.{name}: at most {MAX_VARIABLE_CHARS} characters"),
        ));
    }
    Ok(text)
}

impl Compiled {
    /// Fills the placeholders. Missing and unexpected variables are 422s naming them all.
    pub fn render(&self, variables: &Map<String, Value>) -> Result<String, Refusal> {
        let missing: Vec<&str> = self
            .variables
            .iter()
            .filter(|v| !variables.contains_key(v.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Refusal::unacceptable(
                "missing_variables",
                format!("missing variables: {}", missing.join(", ")),
            ));
        }
        let unexpected: Vec<&str> = variables
            .keys()
            .filter(|k| !self.variables.iter().any(|v| v == *k))
            .map(String::as_str)
            .collect();
        if !unexpected.is_empty() {
            return Err(Refusal::unacceptable(
                "unexpected_variables",
                format!("unexpected variables: {}", unexpected.join(", ")),
            ));
        }
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(name) => out.push_str(&variable_text(name, &variables[name])?),
            }
        }
        Ok(out)
    }

    /// Fills the placeholders from a lookup, leaving unknown ones empty (the chatbot's lenient
    /// rendering: a flow's text may use contact attributes that a contact does not have).
    pub fn render_lenient(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(name) => out.push_str(&lookup(name).unwrap_or_default()),
            }
        }
        out
    }
}

fn invalid(message: String) -> Refusal {
    Refusal::unacceptable("invalid_template", message)
}

/// WhatsApp's template name rule: lowercase letters, digits and underscores.
pub fn validate_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(format!(
            "name: 1 to {MAX_NAME_CHARS} lowercase letters, digits or _ (e.g. order_update)"
        )));
    }
    Ok(())
}

/// A language code as WhatsApp spells them: `en`, `pt_BR`, `zh_HK`.
pub fn validate_language(language: &str) -> Result<(), Refusal> {
    let (base, region) = match language.split_once('_') {
        Some((base, region)) => (base, Some(region)),
        None => (language, None),
    };
    let base_ok = (2..=3).contains(&base.len()) && base.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok =
        region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()));
    if !base_ok || !region_ok {
        return Err(invalid(
            "language: a language code such as en, es or pt_BR".to_string(),
        ));
    }
    Ok(())
}

pub fn validate_body(body: &str) -> Result<Compiled, Refusal> {
    if body.trim().is_empty() || body.chars().count() > MAX_BODY_CHARS {
        return Err(invalid(format!("body: 1 to {MAX_BODY_CHARS} characters")));
    }
    compile(body).map_err(|e| invalid(format!("body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_and_names_variable_errors() {
        let c = compile("Hi {{name}}, order {{ order }} has shipped. Bye {{name}}").unwrap();
        assert_eq!(c.variables, ["name", "order"]);
        assert_eq!(
            c.render(&vars(json!({"name": "Ada", "order": 42})))
                .unwrap(),
            "Hi Ada, order 42 has shipped. Bye Ada"
        );
        let err = c.render(&vars(json!({"name": "Ada"}))).unwrap_err();
        assert_eq!(err.code, "missing_variables");
        assert_eq!(err.to_string(), "missing variables: order");
        let err = c
            .render(&vars(
                json!({"name": "Ada", "order": "1", "x": "1", "y": "2"}),
            ))
            .unwrap_err();
        assert_eq!(err.code, "unexpected_variables");
        assert_eq!(err.to_string(), "unexpected variables: x, y");
        let err = c
            .render(&vars(json!({"name": {"a": 1}, "order": "1"})))
            .unwrap_err();
        assert_eq!(err.code, "invalid_variables");
    }

    #[test]
    fn literal_braces_and_bad_placeholders() {
        assert_eq!(
            compile("a { b } c").unwrap().variables,
            Vec::<String>::new()
        );
        assert_eq!(
            compile("{{a}}")
                .unwrap()
                .render(&vars(json!({"a": "x"})))
                .unwrap(),
            "x"
        );
        assert!(compile("Hi {{name").is_err());
        assert!(compile("Hi {{na me}}").is_err());
        assert!(compile("Hi {{}}").is_err());
    }

    #[test]
    fn names_and_languages() {
        assert!(validate_name("order_update").is_ok());
        assert!(validate_name("Order").is_err());
        assert!(validate_name("").is_err());
        for ok in ["en", "pt_BR", "fil"] {
            assert!(validate_language(ok).is_ok(), "{ok}");
        }
        for bad in ["EN", "en-US", "e", "en_us", ""] {
            assert!(validate_language(bad).is_err(), "{bad}");
        }
        assert!(validate_body(&"x".repeat(1025)).is_err());
        assert!(validate_body("  ").is_err());
    }
}
