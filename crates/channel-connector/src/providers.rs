//! The providers behind channels, and what the rest of Parley may know of them: their
//! capabilities and what a provider error means for the contact's address. Everything
//! else about a provider (its webhooks, signatures, wire formats, error codes) stays in
//! its own module ([`crate::whatsapp`], [`crate::twilio_sms`]).
//!
//! Dispatch over [`Provider`] is one exhaustive `match` per step, so adding a provider
//! makes the compiler list every place to fill in.

use parley_core::channel::Channel;
use serde_json::Value;

/// A provider Parley speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// The WhatsApp Business Platform Cloud API.
    WhatsappCloud,
    /// Twilio Programmable Messaging (SMS and MMS).
    TwilioSms,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 2] = [Provider::WhatsappCloud, Provider::TwilioSms];

    /// The spelling in `channel_accounts.provider` and in webhook URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhatsappCloud => "whatsapp",
            Self::TwilioSms => "twilio_sms",
        }
    }

    /// The provider spelt `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The channel its conversations are on.
    pub fn channel(self) -> Channel {
        match self {
            Self::WhatsappCloud => Channel::Whatsapp,
            Self::TwilioSms => Channel::Sms,
        }
    }

    /// The provider of `channel`'s accounts, when Parley has one.
    pub fn for_channel(channel: Channel) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.channel() == channel)
    }

    /// What the channel allows.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Self::WhatsappCloud => Capabilities {
                reply_window_hours: Some(24),
                outside_window: OutsideWindow::TemplatesOnly,
                max_text_chars: 4096,
                max_buttons: 3,
                images: true,
                reactions: true,
                templates: true,
                read_receipts: true,
            },
            Self::TwilioSms => Capabilities {
                reply_window_hours: None,
                outside_window: OutsideWindow::Anything,
                max_text_chars: crate::twilio_sms::MAX_BODY_CHARS,
                max_buttons: 0,
                // MMS: Twilio fetches the image from a signed link to the attachment.
                images: true,
                reactions: false,
                templates: false,
                read_receipts: false,
            },
        }
    }

    /// What the provider's error (as stored on a failed message) means for the address.
    pub fn failure_effect(self, error: &Value) -> FailureEffect {
        match self {
            Self::WhatsappCloud => crate::whatsapp::failure_effect(error),
            Self::TwilioSms => crate::twilio_sms::failure_effect(error),
        }
    }
}

/// What may be sent outside the reply window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideWindow {
    /// Approved templates only (WhatsApp).
    TemplatesOnly,
    /// There is no window (SMS).
    Anything,
}

/// What a channel allows an agent to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Free-form replies are allowed this long after the contact last wrote; `None`: always.
    pub reply_window_hours: Option<i64>,
    /// What is allowed outside it.
    pub outside_window: OutsideWindow,
    /// The longest text.
    pub max_text_chars: usize,
    /// Reply buttons on a text (0: none).
    pub max_buttons: usize,
    /// Images.
    pub images: bool,
    /// Reactions to the contact's messages.
    pub reactions: bool,
    /// Notification templates.
    pub templates: bool,
    /// Read receipts to the provider.
    pub read_receipts: bool,
}

/// What a provider's refusal of a send means for the contact's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// Nothing beyond this message.
    None,
    /// The reply window closed (only templates until the contact writes again).
    CloseReplyWindow,
    /// The address cannot receive messages (invalid, a landline, not on the channel).
    AddressUnreachable,
    /// The contact opted out of messages from this sender.
    OptedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_has_one_spelling_and_one_channel() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
            assert_eq!(Provider::for_channel(p.channel()), Some(p));
        }
        assert_eq!(Provider::parse("x"), None);
        assert_eq!(Provider::for_channel(Channel::Webchat), None);
    }

    #[test]
    fn provider_errors_mean_the_same_things_everywhere() {
        use serde_json::json;
        let wa = Provider::WhatsappCloud;
        assert_eq!(
            wa.failure_effect(&json!({"code": 131047})),
            FailureEffect::CloseReplyWindow
        );
        assert_eq!(
            wa.failure_effect(&json!({"code": 131026})),
            FailureEffect::AddressUnreachable
        );
        let sms = Provider::TwilioSms;
        assert_eq!(
            sms.failure_effect(&json!({"code": 21610})),
            FailureEffect::OptedOut
        );
        assert_eq!(
            sms.failure_effect(&json!({"code": "21211"})),
            FailureEffect::AddressUnreachable
        );
        assert_eq!(
            sms.failure_effect(&json!({"code": 30003})),
            FailureEffect::None
        );
    }
}
