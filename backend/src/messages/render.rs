//! Template → message content, for single sends and bulk recipients alike: the stored template
//! compiled once, then rendered with each recipient's variables and checked as a message body.

use serde_json::{Map, Value};

use super::{validate_text, MessageError, TemplateContent};
use crate::{
    refusal::Refusal,
    templates::{self, Compiled, Template},
};

/// A stored template, compiled, ready to render for any number of recipients.
pub struct TemplateSource {
    name: String,
    language: String,
    compiled: Compiled,
}

impl TemplateSource {
    pub fn new(template: Template) -> Result<Self, MessageError> {
        // Stored bodies were validated when saved; one that no longer compiles is our fault.
        let compiled = templates::compile(&template.body).map_err(MessageError::BrokenTemplate)?;
        Ok(Self {
            name: template.name,
            language: template.language,
            compiled,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    /// The content of one recipient's message: the body rendered (a value for every variable,
    /// no more), checked as a text body, and the variables as sent.
    pub fn render(&self, variables: &Map<String, Value>) -> Result<TemplateContent, Refusal> {
        let body = self.compiled.render(variables)?;
        validate_text("template body (rendered)", &body)?;
        let variables = variables
            .iter()
            .map(|(k, v)| Ok((k.clone(), templates::variable_text(k, v)?)))
            .collect::<Result<_, Refusal>>()?;
        Ok(TemplateContent {
            name: self.name.clone(),
            language: self.language.clone(),
            variables,
            body,
        })
    }
}
