//! The bodies of Parley's fuzz targets. Each takes arbitrary bytes and checks that the
//! code under test neither panics nor breaks its promises on them. The libFuzzer binaries
//! in `fuzz/` call these (`cargo fuzz run <target>`); this crate's test replays every
//! committed corpus file and regression, so a crash once found stays fixed.

use std::collections::BTreeMap;

use channel_connector::{signature, whatsapp::webhook};
use notification_templates::{fill, model};
use parley_core::channel::{Channel, parse_e164};

/// A target: arbitrary bytes in, a panic on a broken promise.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder.
pub const TARGETS: [(&str, Target); 5] = [
    ("webhook", webhook_envelope),
    ("signature", signature_check),
    ("template", template),
    ("e164", e164),
    ("image", image),
];

/// A webhook body: parsing never panics, and what it accepts is well-formed.
pub fn webhook_envelope(data: &[u8]) {
    let Ok(env) = webhook::parse(data) else {
        return;
    };
    for m in &env.messages {
        assert!(!m.provider_message_id.is_empty(), "a message without an id");
        if let Some(p) = &m.phone {
            assert_eq!(
                parse_e164(p).as_deref(),
                Ok(p.as_str()),
                "an accepted sender is not E.164"
            );
        }
        assert!(
            m.phone.is_some() || m.bsuid.is_some(),
            "a message without a sender"
        );
        // Everything parsed can be stored: PostgreSQL refuses NUL in text and jsonb.
        for s in [&m.body, &m.profile_name].into_iter().flatten() {
            assert!(!s.contains('\0'), "a NUL reached a stored string");
        }
        assert!(
            parley_core::storable::first_nul(&m.payload).is_none(),
            "a NUL reached the stored payload"
        );
    }
    for s in &env.statuses {
        let _ = serde_json::to_string(&format!("{s:?}"));
    }
}

/// `X-Hub-Signature-256` over arbitrary bodies and headers: never panics, the right
/// signature passes, and any other body fails.
pub fn signature_check(data: &[u8]) {
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) % 48)
        .min(data.len());
    let (secret, rest) = data.split_at(split);
    // The rest is both a body and, read as text, a candidate header.
    let header = String::from_utf8_lossy(rest);
    let _ = signature::verify(secret, rest, Some(&header));
    let _ = signature::verify(secret, rest, None);
    let good = signature::sign(secret, rest);
    assert!(signature::verify(secret, rest, Some(&good)).is_ok());
    let mut other = rest.to_vec();
    other.push(b'x');
    assert!(signature::verify(secret, &other, Some(&good)).is_err());
}

/// Template components as JSON: strict and lenient validation never panic; what strict
/// validation accepts renders, with every field given, without panicking.
pub fn template(data: &[u8]) {
    let Ok(components) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = model::parse(&components, false);
    let Ok(def) = model::parse(&components, true) else {
        return;
    };
    let inputs: BTreeMap<String, String> = def
        .fields
        .iter()
        .map(|f| (f.key.clone(), "x".to_owned()))
        .collect();
    let ctx = fill::Context {
        contact_name: "Ana".to_owned(),
        contact_attributes: serde_json::json!({}),
        contact_phone: Some("+14155552671".to_owned()),
        agent_name: "Sam".to_owned(),
        now: chrono::DateTime::UNIX_EPOCH,
    };
    let r = fill::render(&def, &fill::Bindings::new(), &inputs, &ctx);
    let _ = r.text();
    let _ = fill::template_content(&def, &r, "t", "en", None);
    let problems = fill::check_inputs(&def.fields, &inputs);
    assert!(
        problems.is_empty(),
        "every field was given yet inputs were refused: {problems:?}"
    );
}

/// Addresses: normalising never panics, and a normalised number is stable.
pub fn e164(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = parse_e164(s) {
        assert!(n.starts_with('+') && n[1..].bytes().all(|b| b.is_ascii_digit()));
        assert!((8..=16).contains(&n.len()), "{n}");
        assert_eq!(parse_e164(&n).as_deref(), Ok(n.as_str()), "not idempotent");
    }
    for c in Channel::ALL {
        if let Ok(a) = c.parse_address(s) {
            assert!(!a.is_empty());
        }
    }
}

/// Uploaded bytes: sniffing never panics, and only the three image types pass.
pub fn image(data: &[u8]) {
    if let Ok(info) = conversation_store::attachments::sniff_image(data) {
        assert!(matches!(
            info.mime_type,
            "image/png" | "image/jpeg" | "image/webp"
        ));
        assert!(info.width >= 0 && info.height >= 0);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::TARGETS;

    /// Every file under `fuzz/corpus/<target>` and `fuzz/regressions/<target>`.
    #[test]
    fn committed_corpora_and_regressions_pass() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        for (name, target) in TARGETS {
            let mut n = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    let caught = std::panic::catch_unwind(|| target(&bytes));
                    assert!(caught.is_ok(), "{name}: {} fails", e.path().display());
                    n += 1;
                }
            }
            assert!(n > 0, "no corpus for {name}");
        }
    }
}
