//! Message search that works for every script and for emoji.
//!
//! PostgreSQL's text-search parser drops emoji and its dictionaries stem only some
//! languages, so Parley tokenises in Rust instead: Unicode word boundaries (UAX #29), NFC,
//! lowercase; each emoji is a token; each CJK ideograph is a token, and a query word made
//! of several tokens is matched as a phrase. The tokens are stored as a `tsvector` literal
//! (with positions) and queried with a `tsquery` literal, so the GIN index does the work
//! and no language configuration is involved.

use unicode_normalization::UnicodeNormalization as _;
use unicode_segmentation::UnicodeSegmentation as _;

/// PostgreSQL's largest tsvector position.
const MAX_POSITION: usize = 16_383;

fn is_emoji_like(c: char) -> bool {
    let u = c as u32;
    // Pictographs, symbols, dingbats, flags, and the odd older symbols people send.
    (0x1F000..=0x1FAFF).contains(&u)
        || (0x2600..=0x27BF).contains(&u)
        || (0x2B00..=0x2BFF).contains(&u)
        || (0x2190..=0x21FF).contains(&u)
        || (0x3297..=0x3299).contains(&u)
        || matches!(
            u,
            0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0x231A | 0x231B | 0x2328 | 0x23CF
                ..=0x23FA
        )
}

/// The searchable tokens of `text`, in order.
pub fn tokens(text: &str) -> Vec<String> {
    let normalised: String = text.nfc().collect();
    normalised
        .split_word_bounds()
        .filter_map(|seg| {
            if seg.chars().any(char::is_alphanumeric) {
                Some(seg.to_lowercase())
            } else if seg.chars().any(is_emoji_like) {
                // Drop variation selectors so ❤ and ❤️ match.
                Some(
                    seg.chars()
                        .filter(|c| !matches!(*c as u32, 0xFE0E | 0xFE0F))
                        .collect(),
                )
            } else {
                None
            }
        })
        .filter(|t: &String| !t.is_empty() && t.len() <= 2000)
        .collect()
}

fn quote(lexeme: &str) -> String {
    // tsvector/tsquery literal syntax: single-quoted, with ' and \ escaped.
    let mut out = String::with_capacity(lexeme.len() + 2);
    out.push('\'');
    for c in lexeme.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A `tsvector` literal for `text` (cast with `::tsvector`).
pub fn tsvector_literal(text: &str) -> String {
    let mut positions: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, t) in tokens(text).into_iter().enumerate() {
        let pos = (i + 1).min(MAX_POSITION);
        let entry = positions.entry(t).or_default();
        // PostgreSQL keeps at most 256 positions per lexeme.
        if entry.len() < 256 {
            entry.push(pos);
        }
    }
    positions
        .into_iter()
        .map(|(lexeme, pos)| {
            let pos: Vec<String> = pos.iter().map(ToString::to_string).collect();
            format!("{}:{}", quote(&lexeme), pos.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `tsquery` literal matching messages that contain every word of `query`; a word that
/// is several tokens (e.g. CJK, `e-mail`) must appear as a phrase. `None` when the query
/// has nothing searchable.
pub fn tsquery_literal(query: &str) -> Option<String> {
    let groups: Vec<String> = query
        .split_whitespace()
        .filter_map(|word| {
            let toks = tokens(word);
            if toks.is_empty() {
                None
            } else {
                let phrase: Vec<String> = toks.iter().map(|t| quote(t)).collect();
                Some(if phrase.len() == 1 {
                    phrase.concat()
                } else {
                    format!("({})", phrase.join(" <-> "))
                })
            }
        })
        .take(32)
        .collect();
    if groups.is_empty() {
        None
    } else {
        Some(groups.join(" & "))
    }
}

/// `text` HTML-escaped, with every token that matches a query token wrapped in
/// `<mark>…</mark>`.
pub fn highlight(text: &str, query: &str) -> String {
    let wanted: std::collections::HashSet<String> = tokens(query).into_iter().collect();
    let mut out = String::with_capacity(text.len() + 16);
    for seg in text.split_word_bounds() {
        let seg_tokens = tokens(seg);
        let hit = seg_tokens.len() == 1 && wanted.contains(&seg_tokens[0]);
        if hit {
            out.push_str("<mark>");
        }
        for c in seg.chars() {
            match c {
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '&' => out.push_str("&amp;"),
                '"' => out.push_str("&quot;"),
                c => out.push(c),
            }
        }
        if hit {
            out.push_str("</mark>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn words_of_every_script_and_emoji_are_tokens() {
        assert_eq!(tokens("Hello, World!"), vec!["hello", "world"]);
        assert_eq!(tokens("Привет мир"), vec!["привет", "мир"]);
        assert_eq!(tokens("مرحبا بالعالم"), vec!["مرحبا", "بالعالم"]);
        assert_eq!(tokens("I ❤️ 🦀s"), vec!["i", "❤", "🦀", "s"]);
        assert_eq!(tokens("你好世界"), vec!["你", "好", "世", "界"]);
    }

    #[test]
    fn composed_and_decomposed_forms_match() {
        // "café" with a precomposed é and with e + combining acute.
        assert_eq!(tokens("caf\u{e9}"), tokens("cafe\u{301}"));
    }

    #[test]
    fn queries_quote_and_group() {
        assert_eq!(
            tsquery_literal("Hello wörld").as_deref(),
            Some("'hello' & 'wörld'")
        );
        assert_eq!(tsquery_literal("世界").as_deref(), Some("('世' <-> '界')"));
        assert_eq!(tsquery_literal("it's").as_deref(), Some("'it\\'s'"));
        assert_eq!(tsquery_literal("  ,;  "), None);
    }

    #[test]
    fn highlight_marks_matches_and_escapes_html() {
        assert_eq!(
            highlight("<b>Your invoice</b> is ready", "INVOICE"),
            "&lt;b&gt;Your <mark>invoice</mark>&lt;/b&gt; is ready"
        );
    }

    proptest! {
        #[test]
        fn literals_never_break_on_any_text(s in "\\PC{0,200}") {
            let v = tsvector_literal(&s);
            // Every lexeme is quoted: an odd number of unescaped quotes would be a bug.
            let unescaped = v.replace("\\\\", "").replace("\\'", "");
            prop_assert_eq!(unescaped.matches('\'').count() % 2, 0);
            if let Some(q) = tsquery_literal(&s) {
                let unescaped = q.replace("\\\\", "").replace("\\'", "");
                prop_assert_eq!(unescaped.matches('\'').count() % 2, 0);
            }
        }

        #[test]
        fn every_token_of_a_text_is_found_by_querying_it(s in "[a-zA-Zа-яА-Я0-9 ]{1,60}") {
            let toks = tokens(&s);
            for t in &toks {
                prop_assert!(tokens(t).len() == 1 && &tokens(t)[0] == t);
            }
        }
    }
}
