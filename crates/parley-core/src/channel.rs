//! Channels and contact addresses, parsed at the edge.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A way a contact reaches the contact center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// WhatsApp (private chat).
    Whatsapp,
    /// SMS.
    Sms,
    /// The web chat widget.
    Webchat,
    /// Facebook Messenger.
    Messenger,
    /// X / Twitter direct messages.
    Twitter,
    /// Public Facebook posts and comments (open media).
    FacebookPublic,
    /// Public X / Twitter posts (open media).
    TwitterPublic,
}

/// Private chat or public posts: the transcript's `media` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// Web chat, WhatsApp, Messenger, X DM, SMS.
    Chat,
    /// Public posts.
    OpenMedia,
}

impl Media {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Chat => "chat",
            Media::OpenMedia => "open_media",
        }
    }
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 7] = [
        Channel::Whatsapp,
        Channel::Sms,
        Channel::Webchat,
        Channel::Messenger,
        Channel::Twitter,
        Channel::FacebookPublic,
        Channel::TwitterPublic,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
            Channel::Webchat => "webchat",
            Channel::Messenger => "messenger",
            Channel::Twitter => "twitter",
            Channel::FacebookPublic => "facebook_public",
            Channel::TwitterPublic => "twitter_public",
        }
    }

    /// Whether this channel's conversations are private chat or public posts.
    pub fn media(self) -> Media {
        match self {
            Channel::FacebookPublic | Channel::TwitterPublic => Media::OpenMedia,
            _ => Media::Chat,
        }
    }

    /// Normalise an address for this channel: phone numbers to E.164 (WhatsApp may also
    /// use a business-scoped user id), handles and ids trimmed.
    pub fn parse_address(self, raw: &str) -> Result<String, AddressError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(AddressError("must not be empty".to_owned()));
        }
        if raw.chars().count() > 256 || raw.chars().any(char::is_control) {
            return Err(AddressError("is not a valid address".to_owned()));
        }
        let address = match self {
            Channel::Whatsapp if is_bsuid(raw) => raw.to_owned(),
            Channel::Whatsapp | Channel::Sms => parse_e164(raw)?,
            Channel::Twitter | Channel::TwitterPublic => {
                raw.trim_start_matches('@').trim().to_lowercase()
            }
            _ => raw.to_owned(),
        };
        // "@" alone is no handle.
        if address.is_empty() {
            return Err(AddressError("must not be empty".to_owned()));
        }
        Ok(address)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not a known channel.
#[derive(Debug, thiserror::Error)]
#[error("unknown channel `{0}`")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(pub String);

/// A WhatsApp business-scoped user id: an ISO country code, a dot, then up to 128
/// alphanumerics (e.g. `US.13491208655302741918`, or `US.ENT.…` for a parent id). Never
/// phone-normalised.
pub fn is_bsuid(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let (Some(cc), Some(rest)) = (parts.next(), parts.next()) else {
        return false;
    };
    cc.len() == 2
        && cc.chars().all(|c| c.is_ascii_uppercase())
        && !rest.is_empty()
        && rest.len() <= 140
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// Normalise a phone number written in international form (`+44 20 7946 0958`,
/// `0044…`, or WhatsApp's bare digits `447946…`) to E.164 (`+442079460958`).
///
/// Only the shape is checked (digits, 7 to 15 of them, no leading zero): a number the
/// provider delivered is the provider's word, and phone metadata lags the world (older
/// Brazilian mobiles without the ninth digit, Mexico's `521…`, new UK and Israeli ranges
/// were all refused by it). Whether the metadata knows a number is a separate question,
/// [`phone_warning`], for the desktop to show, never a reason to refuse.
pub fn parse_e164(raw: &str) -> Result<String, AddressError> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '\u{a0}'))
        .collect();
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest
    } else {
        // WhatsApp's wa_id is the international number without '+'.
        cleaned.as_str()
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(AddressError(
            "is not a phone number; write it in international form, e.g. +447946000123".to_owned(),
        ));
    }
    if digits.len() < 7 || digits.len() > 15 || digits.starts_with('0') {
        return Err(AddressError(
            "is not a valid phone number (E.164 numbers have 7 to 15 digits after a country code)"
                .to_owned(),
        ));
    }
    Ok(format!("+{digits}"))
}

/// Why the phone metadata does not know an E.164 number (`None` when it does): a
/// warning to show beside the number, not a refusal.
///
/// Answers are remembered (up to [`WARNINGS_KEPT`], then forgotten all at once): checking
/// a number against its country's metadata runs regular expressions, and contact lists
/// show the same numbers again and again.
pub fn phone_warning(e164: &str) -> Option<String> {
    let kept = || {
        WARNINGS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(w) = kept().get(e164) {
        return w.clone();
    }
    let warning = match phonenumber::parse(None, e164) {
        Err(_) => Some("no country is known for this number's calling code".to_owned()),
        Ok(n) if !phonenumber::is_valid(&n) => Some(
            "the phone metadata does not know this number for its country; check it with the contact"
                .to_owned(),
        ),
        Ok(_) => None,
    };
    if e164.len() <= 16 {
        let mut kept = kept();
        if kept.len() >= WARNINGS_KEPT {
            kept.clear();
        }
        kept.insert(e164.to_owned(), warning.clone());
    }
    warning
}

/// How many numbers [`phone_warning`] remembers.
pub const WARNINGS_KEPT: usize = 20_000;
type Kept = std::collections::HashMap<String, Option<String>>;
static WARNINGS: std::sync::LazyLock<std::sync::Mutex<Kept>> =
    std::sync::LazyLock::new(Default::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalise_to_e164() {
        for (raw, want) in [
            ("+44 20 7946 0958", "+442079460958"),
            ("0044 20 7946 0958", "+442079460958"),
            ("442079460958", "+442079460958"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("+33 6 12 34 56 78", "+33612345678"),
        ] {
            assert_eq!(parse_e164(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn a_number_seen_before_gives_the_same_answer() {
        for raw in [
            "+44 20 7946 0958",
            "442079460958",
            "+1 (415) 555-2671",
            "+44 12",
            "hello",
        ] {
            let first = parse_e164(raw);
            assert_eq!(parse_e164(raw), first, "{raw}");
        }
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for raw in [
            "",
            "hello",
            "+1",
            "+44 12",
            "+044 20 7946 0958",
            "+1234567890123456",
        ] {
            assert!(parse_e164(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn numbers_the_metadata_does_not_know_are_kept_with_a_warning() {
        // Real senders WhatsApp delivers that the phone metadata calls invalid.
        for raw in [
            "552185123456",
            "5215512345678",
            "447700900123",
            "+999 123 456 789",
        ] {
            let n = parse_e164(raw).expect(raw);
            assert_eq!(n, format!("+{}", raw.replace([' ', '+'], "")));
            assert!(phone_warning(&n).is_some(), "{n}");
            assert_eq!(
                Channel::Whatsapp.parse_address(raw).as_deref(),
                Ok(n.as_str())
            );
        }
        assert_eq!(phone_warning("+442079460958"), None);
        assert_eq!(phone_warning("+442079460958"), None, "remembered answer");
    }

    #[test]
    fn whatsapp_accepts_business_scoped_ids_unchanged() {
        assert_eq!(
            Channel::Whatsapp
                .parse_address("US.13491208655302741918")
                .as_deref(),
            Ok("US.13491208655302741918")
        );
        assert!(
            Channel::Sms
                .parse_address("US.13491208655302741918")
                .is_err()
        );
        assert!(!is_bsuid("us.123") && !is_bsuid("USA.1") && !is_bsuid("US."));
    }

    #[test]
    fn channels_round_trip_and_know_their_media() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().ok(), Some(c));
        }
        assert_eq!(Channel::TwitterPublic.media(), Media::OpenMedia);
        assert_eq!(Channel::Whatsapp.media(), Media::Chat);
    }

    #[test]
    fn a_handle_is_more_than_its_at_sign() {
        // Found by the e164 fuzz target: "@\x0c" trimmed to an empty handle.
        for raw in ["@", "@\x0c", " @ ", "@@"] {
            assert!(Channel::Twitter.parse_address(raw).is_err(), "{raw:?}");
        }
        assert_eq!(
            Channel::Twitter.parse_address("@Parley").as_deref(),
            Ok("parley")
        );
    }
}
