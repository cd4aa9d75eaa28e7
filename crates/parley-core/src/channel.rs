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

/// Parse a phone number written in international form (`+44 20 7946 0958`,
/// `0044…`, or WhatsApp's bare digits `447946…`) into E.164 (`+442079460958`), refusing
/// numbers that are not valid for their country.
///
/// Numbers found valid are remembered (up to [`VALID_KEPT`], then forgotten all at once):
/// checking a number against its country's metadata runs regular expressions, and at the
/// webhook maximum that was a seventh of the request threads' time, spent again on every
/// message of a contact. Refusals are not remembered (anyone can send those).
pub fn parse_e164(raw: &str) -> Result<String, AddressError> {
    let kept = || {
        VALID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if raw.len() <= VALID_RAW_MAX
        && let Some(n) = kept().get(raw)
    {
        return Ok(n.clone());
    }
    let n = check_e164(raw)?;
    if raw.len() <= VALID_RAW_MAX {
        let mut kept = kept();
        if kept.len() >= VALID_KEPT {
            kept.clear();
        }
        kept.insert(raw.to_owned(), n.clone());
    }
    Ok(n)
}

/// How many valid numbers [`parse_e164`] remembers.
pub const VALID_KEPT: usize = 20_000;
/// Longer spellings are checked every time (a number has at most 15 digits; this leaves
/// room for spaces and punctuation).
const VALID_RAW_MAX: usize = 40;
static VALID: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
    std::sync::LazyLock::new(Default::default);

fn check_e164(raw: &str) -> Result<String, AddressError> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '\u{a0}'))
        .collect();
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest.to_owned()
    } else {
        // WhatsApp's wa_id is the international number without '+'.
        cleaned
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(AddressError(
            "is not a phone number; write it in international form, e.g. +447946000123".to_owned(),
        ));
    }
    if digits.len() < 7 || digits.len() > 15 {
        return Err(AddressError(
            "is not a valid phone number (E.164 numbers have 7 to 15 digits)".to_owned(),
        ));
    }
    let candidate = format!("+{digits}");
    let parsed = phonenumber::parse(None, &candidate)
        .map_err(|_| AddressError("is not a valid phone number for any country".to_owned()))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(AddressError(
            "is not a valid phone number for its country".to_owned(),
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

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
            assert_eq!(check_e164(raw), first, "{raw}");
        }
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for raw in [
            "",
            "hello",
            "+1",
            "+999 123 456 789",
            "+44 12",
            "+1234567890123456",
        ] {
            assert!(parse_e164(raw).is_err(), "{raw}");
        }
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
