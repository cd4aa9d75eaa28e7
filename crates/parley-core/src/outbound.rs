//! What Parley sends, whatever carries it: the provider-neutral outbound model.
//!
//! The HTTP layer builds an [`Outbound`], the outbox stores it as JSON (`outbox.content`,
//! versioned by `v`), and the provider's module renders its own wire body from it at send
//! time. Nothing here knows a provider's format.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of [`Outbound`]'s stored form.
pub const VERSION: u8 = 1;

/// A queued send: to whom, in reply to which of the provider's messages, saying what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// The stored form's version ([`VERSION`]).
    pub v: u8,
    /// The recipient's address on the channel (E.164, a business-scoped id, …).
    pub to: String,
    /// The provider's id of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// What it says.
    pub content: Content,
}

impl Outbound {
    /// A send of `content` to `to`.
    pub fn new(to: &str, reply_to: Option<&str>, content: Content) -> Self {
        Self {
            v: VERSION,
            to: to.to_owned(),
            reply_to: reply_to.map(str::to_owned),
            content,
        }
    }
}

/// The content of an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        body: String,
    },
    /// Text with reply buttons.
    Buttons {
        /// The text.
        body: String,
        /// The buttons, in order.
        buttons: Vec<ReplyButton>,
    },
    /// An image from Parley's attachments.
    Image {
        /// The attachment.
        attachment_id: Uuid,
        /// A caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// A reaction to one of the contact's messages (an empty emoji removes it).
    Reaction {
        /// The provider's id of the message reacted to.
        to: String,
        /// The emoji.
        emoji: String,
    },
    /// An approved notification template with its parameters filled.
    Template(TemplateContent),
}

impl Content {
    /// The attachment the provider needs uploaded before the send, if any.
    pub fn attachment(&self) -> Option<Uuid> {
        match self {
            Self::Image { attachment_id, .. } => Some(*attachment_id),
            Self::Template(t) => match &t.header {
                Some(TemplateHeader::Media { attachment_id, .. }) => *attachment_id,
                _ => None,
            },
            Self::Text { .. } | Self::Buttons { .. } | Self::Reaction { .. } => None,
        }
    }
}

/// A reply button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyButton {
    /// What comes back when the contact taps it.
    pub id: String,
    /// Its label.
    pub title: String,
}

/// A template and the values of its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContent {
    /// The template's name at the provider.
    pub name: String,
    /// Its language code.
    pub language: String,
    /// The header's parameter, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TemplateHeader>,
    /// The body's parameters, in order.
    #[serde(default)]
    pub body: Vec<TemplateParam>,
    /// The buttons that take a parameter.
    #[serde(default)]
    pub buttons: Vec<TemplateButton>,
}

/// A template header's parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateHeader {
    /// A text parameter.
    Text(TemplateParam),
    /// A media placeholder (`image`, `video`, `document`) filled with an attachment.
    Media {
        /// `image`, `video` or `document`.
        format: String,
        /// The attachment (uploaded by the dispatcher).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment_id: Option<Uuid>,
    },
}

/// One parameter's value (`name` for templates with named parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateParam {
    /// The parameter's name, for named templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its value.
    pub value: String,
}

/// A template button that takes a parameter, by its index among the buttons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateButton {
    /// A quick reply and the payload that comes back when it is tapped.
    QuickReply {
        /// The button's index.
        index: usize,
        /// The payload.
        payload: String,
    },
    /// A URL button's dynamic suffix.
    Url {
        /// The button's index.
        index: usize,
        /// The suffix (already percent-encoded).
        suffix: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_is_tagged_and_versioned() {
        let o = Outbound::new(
            "+14155552671",
            Some("wamid.X"),
            Content::Image {
                attachment_id: Uuid::nil(),
                caption: Some("the receipt".to_owned()),
            },
        );
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["v"], 1);
        assert_eq!(v["content"]["kind"], "image");
        assert_eq!(v["reply_to"], "wamid.X");
        let back: Outbound = serde_json::from_value(v).expect("back");
        assert_eq!(back, o);
        assert_eq!(back.content.attachment(), Some(Uuid::nil()));
        let t = Content::Template(TemplateContent {
            name: "order_update".to_owned(),
            language: "en".to_owned(),
            header: Some(TemplateHeader::Text(TemplateParam {
                name: None,
                value: "#42".to_owned(),
            })),
            body: vec![],
            buttons: vec![TemplateButton::QuickReply {
                index: 0,
                payload: "YES".to_owned(),
            }],
        });
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v["kind"], "template");
        assert_eq!(v["header"]["kind"], "text");
        assert_eq!(v["buttons"][0]["kind"], "quick_reply");
        assert_eq!(t.attachment(), None);
    }
}
