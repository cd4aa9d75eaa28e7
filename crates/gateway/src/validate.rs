//! Input rules shared by several endpoints. Each check appends a `FieldError`, so one
//! answer lists every problem in a request.

use crate::error::{ApiError, FieldError};

/// Collects field errors; `finish` turns them into one 422.
#[derive(Debug, Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    /// Record that `field` is invalid.
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// An email, normalised as it is stored and looked up
    /// (`conversation_store::accounts::normalise_email`).
    pub fn email(&mut self, field: &str, raw: &str) -> String {
        let email = conversation_store::accounts::normalise_email(raw);
        if let Err(why) = check_email(&email) {
            self.fail(field, why);
        }
        email
    }

    /// A password that is long enough and not absurdly long.
    pub fn password(&mut self, field: &str, pw: &str) {
        let n = pw.chars().count();
        if n == 0 {
            self.fail(field, "must not be empty");
        } else if n < 8 {
            self.fail(field, "must be at least 8 characters");
        } else if pw.len() > 1024 {
            self.fail(field, "must be at most 1024 bytes");
        }
    }

    /// A trimmed, non-blank text of at most `max` characters.
    pub fn text(&mut self, field: &str, raw: &str, max: usize) -> String {
        let t = raw.trim().to_owned();
        if t.is_empty() {
            self.fail(field, "must not be blank");
        } else if t.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        } else if t.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        } else if let Some(c) = t.chars().find(|c| is_deceptive_format(*c)) {
            self.fail(
                field,
                format!(
                    "must not contain invisible or direction-changing characters (U+{:04X})",
                    u32::from(c)
                ),
            );
        }
        t
    }

    /// A provider's object id (WhatsApp phone number id, WABA id): it becomes a URL path
    /// segment, so letters, digits, `.`, `_` and `-` only, at most 64.
    pub fn provider_id(&mut self, field: &str, raw: &str) -> String {
        let t = raw.trim().to_owned();
        if t.is_empty() || t.len() > 64 {
            self.fail(field, "must be 1 to 64 characters");
        } else if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            self.fail(
                field,
                "must be the provider's id: letters, digits, `.`, `_` and `-` only",
            );
        }
        t
    }

    /// Routing skills: short lowercase identifiers, no duplicates.
    pub fn skills(&mut self, field: &str, skills: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(skills.len());
        if skills.len() > 50 {
            self.fail(field, "at most 50 skills");
        }
        for (i, s) in skills.iter().enumerate() {
            let s = s.trim().to_lowercase();
            let ok = !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !ok {
                self.fail(
                    &format!("{field}[{i}]"),
                    "a skill is 1-64 letters, digits, `_`, `-` or `.`",
                );
            } else if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// How many chats at once: 0 to 100.
    pub fn capacity(&mut self, field: &str, c: i32) {
        if !(0..=100).contains(&c) {
            self.fail(field, "must be between 0 and 100");
        }
    }

    /// `Ok` when nothing failed, else one 422 listing every field.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.0))
        }
    }
}

/// Format characters that make a name show as something else: bidi embeddings,
/// overrides and isolates (a name can be made to read backwards, or to swallow what
/// follows it) and invisible characters (two names that look the same). The joiners
/// (U+200C, U+200D) and the marks LRM/RLM stay allowed: Persian, Indic scripts and emoji
/// sequences need them.
pub fn is_deceptive_format(c: char) -> bool {
    matches!(c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        | '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{061C}')
}

/// A practical email check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn check_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Err("must not be empty");
    }
    if email.len() > 254 {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("is not an email address (no `@`)");
    };
    if local.is_empty() || local.len() > 64 {
        return Err("is not an email address (bad local part)");
    }
    let labels_ok = domain.split('.').count() >= 2
        && domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Err("is not an email address (bad domain)");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) || domain.contains('@') {
        return Err("is not an email address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["agent@demo.local", "a.b+c@sub.example.co", "ü@exämple.de"] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@demo.local",
            "a@",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "a@b..c",
            "a@-b.c",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_bidi_overrides_and_invisible_characters_but_keep_joiners() {
        for bad in [
            "Ana\u{202E}gnp.exe",
            "A\u{200B}na",
            "\u{2067}Ana",
            "Ana\u{FEFF}",
        ] {
            let mut c = Checks::default();
            c.text("name", bad, 100);
            assert!(c.finish().is_err(), "{bad:?}");
        }
        for ok in ["می\u{200C}خواهم", "👨\u{200D}👩\u{200D}👧", "José", "محمد"] {
            let mut c = Checks::default();
            c.text("name", ok, 100);
            assert!(c.finish().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut c = Checks::default();
        c.email("email", "nope");
        c.password("password", "");
        c.skills("skills", &["ok".into(), "not ok".into()]);
        let err = c.finish().expect_err("invalid");
        assert_eq!(err.fields(), vec!["email", "password", "skills[1]"]);
    }
}
