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

/// What a message stores to be found: its lexemes and their signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// The `tsvector` literal (cast with `::tsvector`).
    pub tsvector: String,
    /// The [`Signature`] of the same lexemes.
    pub signature: Signature,
}

/// The lexemes of `text` as a `tsvector` literal and as a [`Signature`] (one
/// tokenisation for both).
pub fn indexed(text: &str) -> Indexed {
    let mut positions: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, t) in tokens(text).into_iter().enumerate() {
        let pos = (i + 1).min(MAX_POSITION);
        let entry = positions.entry(t).or_default();
        // PostgreSQL keeps at most 256 positions per lexeme.
        if entry.len() < 256 {
            entry.push(pos);
        }
    }
    let signature = Signature::of(positions.keys().map(String::as_str));
    let tsvector = positions
        .into_iter()
        .map(|(lexeme, pos)| {
            let pos: Vec<String> = pos.iter().map(ToString::to_string).collect();
            format!("{}:{}", quote(&lexeme), pos.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Indexed {
        tsvector,
        signature,
    }
}

/// A 128-bit summary of a set of lexemes (a Bloom filter: three bits per lexeme), stored
/// beside a message's `search` column (`search_sig_a`, `search_sig_b`) and in the
/// transcript index, so that a search can walk a contact's messages in that index alone
/// and read only the messages whose signature holds every bit of the query's. A message
/// that has a word always has its bits (no false negatives); about one in a hundred
/// short messages without the word has them too, and the full-text condition is checked
/// on the message itself. `-1` (every bit) is what rows stored before signatures existed
/// carry: they are always read and checked.
///
/// The bits of a lexeme must never change: stored signatures are compared with the
/// query's. (FNV-1a over the lexeme's UTF-8, then the SplitMix64 finaliser; three 7-bit
/// slices pick the bits.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signature(pub i64, pub i64);

impl Signature {
    /// The signature of these lexemes (an empty set has no bit).
    pub fn of<'a>(lexemes: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut a, mut b) = (0_u64, 0_u64);
        for lexeme in lexemes {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in lexeme.bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^= h >> 31;
            for slice in 0..3 {
                let bit = (h >> (slice * 7)) & 127;
                if bit < 64 {
                    a |= 1 << bit;
                } else {
                    b |= 1 << (bit - 64);
                }
            }
        }
        Self(a.cast_signed(), b.cast_signed())
    }

    /// Whether every bit of `query` is set here (a message with this signature may hold
    /// every lexeme of the query).
    pub fn covers(self, query: Signature) -> bool {
        self.0 & query.0 == query.0 && self.1 & query.1 == query.1
    }
}

/// Each whitespace-separated word of `query` as its tokens (a word of several tokens is
/// a phrase), at most 32 words; words with no token are skipped.
fn query_words(query: &str) -> Vec<Vec<String>> {
    query
        .split_whitespace()
        .map(tokens)
        .filter(|toks| !toks.is_empty())
        .take(32)
        .collect()
}

/// The [`Signature`] a message must cover to match `query` (every token of every word
/// is required); `None` when the query has nothing searchable.
pub fn query_signature(query: &str) -> Option<Signature> {
    let words = query_words(query);
    if words.is_empty() {
        return None;
    }
    Some(Signature::of(words.iter().flatten().map(String::as_str)))
}

/// A `tsquery` literal matching messages that contain every word of `query`; a word that
/// is several tokens (e.g. CJK, `e-mail`) must appear as a phrase. `None` when the query
/// has nothing searchable.
pub fn tsquery_literal(query: &str) -> Option<String> {
    let groups: Vec<String> = query_words(query)
        .iter()
        .map(|toks| {
            let phrase: Vec<String> = toks.iter().map(|t| quote(t)).collect();
            if phrase.len() == 1 {
                phrase.concat()
            } else {
                format!("({})", phrase.join(" <-> "))
            }
        })
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

    #[test]
    fn a_lexeme_keeps_its_bits() {
        // Stored signatures are compared with queries' ones: these must never change.
        assert_eq!(Signature::of([]), Signature(0, 0));
        let order = Signature::of(["order"]);
        assert_eq!(
            (order.0.count_ones() + order.1.count_ones(), order),
            (3, Signature(32_768, 8_389_120))
        );
        assert_eq!(query_signature("ORDER"), Some(order));
        assert_eq!(query_signature(" ,; "), None);
        // Every token of every word of a query is required, phrases included.
        let q = query_signature("order 世界").expect("searchable");
        assert!(indexed("an order from 世界 today").signature.covers(q));
        assert!(!indexed("an order today").signature.covers(q));
    }

    #[test]
    fn a_signature_sets_few_bits_of_a_missing_word() {
        // The walk reads a message only when its signature covers the query: for short
        // messages that must be rare when the word is not there, or the filter is
        // worthless. 2,000 messages of 6–16 distinct words, each checked for 50 words
        // it does not hold.
        let mut seed = 7_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let (mut checked, mut covered) = (0, 0);
        for _ in 0..2000 {
            let words = 6 + next() % 11;
            let text: Vec<String> = (0..words).map(|_| format!("w{}", next() % 5000)).collect();
            let sig = indexed(&text.join(" ")).signature;
            for probe in 0..50 {
                let word = format!("absent{probe}");
                checked += 1;
                if sig.covers(Signature::of([word.as_str()])) {
                    covered += 1;
                }
            }
        }
        assert!(covered * 100 < checked * 3, "{covered} of {checked}");
    }

    proptest! {
        #[test]
        fn literals_never_break_on_any_text(s in "\\PC{0,200}") {
            let v = indexed(&s).tsvector;
            // Every lexeme is quoted: an odd number of unescaped quotes would be a bug.
            let unescaped = v.replace("\\\\", "").replace("\\'", "");
            prop_assert_eq!(unescaped.matches('\'').count() % 2, 0);
            if let Some(q) = tsquery_literal(&s) {
                let unescaped = q.replace("\\\\", "").replace("\\'", "");
                prop_assert_eq!(unescaped.matches('\'').count() % 2, 0);
            }
        }

        #[test]
        fn a_text_covers_every_query_made_of_its_words(s in "\\PC{0,200}") {
            // A message matches a query when it holds every lexeme of it; its signature
            // must then cover the query's, or the walk would skip a match.
            let sig = indexed(&s).signature;
            let toks = tokens(&s);
            for t in &toks {
                prop_assert!(sig.covers(Signature::of([t.as_str()])), "{t:?}");
                // (A lexeme is a query word when the query's own splitting gives it back.)
                if !t.contains(char::is_whitespace) && tokens(t) == [t.clone()] {
                    prop_assert_eq!(query_signature(t), Some(Signature::of([t.as_str()])));
                }
            }
            prop_assert!(sig.covers(Signature::of(toks.iter().map(String::as_str))));
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
