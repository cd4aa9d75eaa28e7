//! Text PostgreSQL can store. `text` and `jsonb` refuse U+0000 (NUL) outright, so input
//! that carries one must be refused at the edge (naming the field) or, where the input
//! cannot be refused (a provider's webhook), cleaned before it is stored.

use serde_json::Value;

/// The JSON escape of NUL, which any body carrying one must contain.
const ESCAPED_NUL: &[u8] = b"\\u0000";

/// Whether raw JSON bytes may carry a NUL inside a string (cheap pre-check).
pub fn may_hold_nul(json: &[u8]) -> bool {
    json.windows(ESCAPED_NUL.len())
        .any(|w| w.eq_ignore_ascii_case(ESCAPED_NUL))
}

/// The path (`a.b[2].c`, `body` for the root) of the first string or key holding a NUL.
pub fn first_nul(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &str) -> Option<String> {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
                "body".to_owned()
            } else {
                path.to_owned()
            }),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            Value::Object(m) => m.iter().find_map(|(k, x)| {
                if k.contains('\0') {
                    Some(join(&k.replace('\0', "\\u0000")))
                } else {
                    walk(x, &join(k))
                }
            }),
            _ => None,
        }
    }
    walk(v, "")
}

/// Replace every NUL in strings and keys with U+FFFD; whether anything changed.
pub fn replace_nul(v: &mut Value) -> bool {
    match v {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(a) => a.iter_mut().fold(false, |c, x| replace_nul(x) | c),
        Value::Object(m) => {
            let mut changed = false;
            if m.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(m);
                for (k, x) in old {
                    m.insert(k.replace('\0', "\u{FFFD}"), x);
                }
                changed = true;
            }
            m.values_mut().fold(changed, |c, x| replace_nul(x) | c)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_and_replaces_nul_anywhere() {
        let raw = br#"{"a": [1, {"b": "x\u0000y"}], "c": "ok"}"#;
        assert!(may_hold_nul(raw));
        let mut v: Value = serde_json::from_slice(raw).expect("json");
        assert_eq!(first_nul(&v).as_deref(), Some("a[1].b"));
        assert!(replace_nul(&mut v));
        assert_eq!(v["a"][1]["b"], "x\u{FFFD}y");
        assert_eq!(first_nul(&v), None);
        assert!(!replace_nul(&mut v));
        assert_eq!(first_nul(&json!("\u{0}")).as_deref(), Some("body"));
        assert!(!may_hold_nul(br#"{"a": "plain"}"#));
        // An escaped backslash followed by u0000 is text, not a NUL.
        let v: Value = serde_json::from_slice(br#"{"a": "\\u0000"}"#).expect("json");
        assert_eq!(first_nul(&v), None);
    }
}
