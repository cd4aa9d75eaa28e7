//! Message search that finds what people type, in every script.
//!
//! PostgreSQL's text-search parser drops emoji and its dictionaries stem only some
//! languages, so Parley analyses text in Rust and stores the result as a `tsvector`
//! literal (with positions); queries are `tsquery` literals, so the GIN index does the
//! work and no language configuration is involved. The analysis:
//!
//! - **Words** are Unicode word boundaries (UAX #29), **folded**: compatibility
//!   decomposition (NFKD: full-width forms, ligatures), diacritics removed where they are
//!   accents rather than letters (Latin, Greek, Cyrillic, Hebrew points, Arabic harakat
//!   and tatweel; Indic and Thai vowel signs and Japanese dakuten are kept), lower case,
//!   a few letters spelt out (ß → ss, ø → o, ł → l, final ς → σ, Arabic ى → ي, ة → ه),
//!   native digits as ASCII digits. `llegó` and `LLEGO`, `ΠΑΡΑΓΓΕΛΙΑ` and
//!   `παραγγελία` are the same lexeme.
//! - **Prefixes**: every query word but a one-letter one matches the start of a word
//!   (`pedid` finds `pedido`; a Korean noun finds it with its particle, `주문` finds
//!   `주문을`).
//! - **Attached prefixes**: a Hebrew word is also stored without up to three of the
//!   one-letter prefixes (ו ה ב כ ל מ ש: `ההזמנה` is found by `הזמנה`), an Arabic one
//!   without its conjunction, preposition and article (`بالعالم` by `عالم`).
//! - **Numbers**: a run of digit groups (`+1 (555) 123-4567`) is also stored joined, and
//!   a number of up to 24 digits with each of its endings of three digits or more, so
//!   any part of a number is found however it was written (`5551234567`, `4567`).
//! - **Scripts written without spaces** (Chinese, Japanese kana, Thai, Lao, Khmer,
//!   Myanmar): each character (grapheme) is a token and each pair of neighbours a
//!   bigram; a query word of several such characters is the phrase of its bigrams, so
//!   the index is asked for the rarer pairs rather than single characters, and a hit is
//!   highlighted as the whole phrase, never character by character. (A dictionary
//!   segmenter would split words better but needs per-language data; bigrams need none
//!   and miss nothing.)
//! - **Emoji** are tokens of their own (variation selectors dropped, so ❤ and ❤️ match).
//!
//! Every lexeme of a message also sets three bits of its [`Signature`], from the
//! lexeme's first three characters, so that prefix queries can use it too.

use std::collections::BTreeMap;

use unicode_normalization::UnicodeNormalization as _;
use unicode_segmentation::UnicodeSegmentation as _;

/// The analysis stored messages carry (`messages.search_version`). Rows of an older
/// version are analysed again in the background (see `messages::reindex_stale`).
pub const VERSION: i16 = 2;

/// PostgreSQL's largest tsvector position.
const MAX_POSITION: usize = 16_383;

/// How many leading characters of a lexeme its signature bits come from.
const SIGNATURE_CHARS: usize = 3;

/// Numbers longer than this are kept whole only (no joined form, no endings).
const MAX_NUMBER_DIGITS: usize = 24;

/// The shortest ending of a number that is stored.
const MIN_NUMBER_PART: usize = 3;

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

/// Marks that folding removes: accents, not letters.
fn is_folded_mark(c: char) -> bool {
    matches!(c as u32,
        // Combining diacritical marks (Latin, Greek, Cyrillic) and their supplements.
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F
        // Hebrew points and cantillation marks.
        | 0x0591..=0x05BD | 0x05BF | 0x05C1 | 0x05C2 | 0x05C4 | 0x05C5 | 0x05C7
        // Arabic harakat, Quranic annotation, superscript alef, tatweel.
        | 0x0610..=0x061A | 0x064B..=0x065F | 0x0670 | 0x06D6..=0x06DC | 0x06DF..=0x06E4
        | 0x06E7 | 0x06E8 | 0x06EA..=0x06ED | 0x0640
        // Variation selectors (❤ and ❤️).
        | 0xFE00..=0xFE0F)
}

/// A native decimal digit as its ASCII digit.
fn ascii_digit(c: char) -> Option<char> {
    let u = c as u32;
    let zero = [
        0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x0ED0, 0x1040, 0x17E0,
    ]
    .into_iter()
    .find(|z| (*z..*z + 10).contains(&u))?;
    char::from_digit(u - zero, 10)
}

/// `s` folded for matching: NFKD, accents removed, lower case, a few letters spelt out,
/// native digits as ASCII, recomposed (NFC). Used for messages and for contacts alike.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd().filter(|c| !is_folded_mark(*c)) {
        if let Some(d) = ascii_digit(c) {
            out.push(d);
            continue;
        }
        for l in c.to_lowercase() {
            match l {
                'ß' => out.push_str("ss"),
                'æ' => out.push_str("ae"),
                'œ' => out.push_str("oe"),
                'þ' => out.push_str("th"),
                'ø' => out.push('o'),
                'đ' | 'ð' => out.push('d'),
                'ł' => out.push('l'),
                'ħ' => out.push('h'),
                'ı' => out.push('i'),
                'ς' => out.push('σ'),
                'ى' => out.push('ي'),
                'ة' => out.push('ه'),
                l => out.push(l),
            }
        }
    }
    out.nfc().collect()
}

/// Scripts written without spaces between words.
fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF | 0x3005..=0x3007 | 0x3021..=0x3029 | 0x3038..=0x303B
        | 0x3040..=0x309F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0x20000..=0x3134F
        | 0x0E00..=0x0E7F | 0x0E80..=0x0EFF | 0x1780..=0x17FF | 0x1000..=0x109F)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    /// One character (grapheme) of a script written without spaces.
    Unspaced,
    Emoji,
}

/// One token of a text: where it is, and the lexemes stored at its position (the
/// folded token first), each with where its match ends in the text (a joined number
/// ends at its last group, a bigram at its second character).
#[derive(Debug, Clone)]
struct Token {
    start: usize,
    end: usize,
    kind: Kind,
    lexemes: Vec<(String, usize)>,
}

impl Token {
    fn primary(&self) -> &str {
        &self.lexemes[0].0
    }

    fn push(&mut self, lexeme: String, end: usize) {
        if !self.lexemes.iter().any(|(l, _)| *l == lexeme) {
            self.lexemes.push((lexeme, end));
        }
    }
}

/// The digits of a number token (`4567`, `1.234,50`), `None` for anything else.
fn digits_of(token: &str) -> Option<String> {
    let first = token.chars().next()?;
    let last = token.chars().last()?;
    (first.is_ascii_digit()
        && last.is_ascii_digit()
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || ".,'".contains(c)))
    .then(|| token.chars().filter(char::is_ascii_digit).collect())
}

/// Whether the text between two digit groups still joins them into one number.
fn joins_number(gap: &str) -> bool {
    !gap.is_empty() && gap.chars().count() <= 3 && gap.chars().all(|c| " -./()\u{a0}".contains(c))
}

/// The forms of a Hebrew or Arabic word without its attached prefixes.
fn without_prefixes(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    match chars.first().map(|c| *c as u32) {
        Some(0x05D0..=0x05EA) => {
            // ו ה ב כ ל מ ש, up to three, leaving at least two letters.
            for k in 1..=3 {
                if chars.len() < k + 2 || !"והבכלמש".contains(chars[k - 1]) {
                    break;
                }
                out.push(chars[k..].iter().collect());
            }
        }
        Some(0x0621..=0x064A) => {
            let mut forms = vec![word.to_owned()];
            for (prefixes, keep) in [
                (&["و", "ف"][..], 3),
                (&["ب", "ك", "ل"][..], 3),
                (&["ال", "لل"][..], 2),
            ] {
                for f in forms.clone() {
                    for p in prefixes {
                        if let Some(rest) = f.strip_prefix(p)
                            && rest.chars().count() >= keep
                        {
                            forms.push(rest.to_owned());
                        }
                    }
                }
            }
            out.extend(forms.into_iter().skip(1));
        }
        _ => {}
    }
    out
}

/// The tokens of `text` with every lexeme each one stores.
fn analyse(text: &str) -> Vec<Token> {
    let mut toks: Vec<Token> = Vec::new();
    // White space first, then word boundaries (UAX #29) within each piece: a query's
    // words are split at every white space, so a text must be too (UAX #29 alone joins
    // some words across spaces, U+202F being `ExtendNumLet`, and segments a piece
    // differently in context than alone).
    let mut spans: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for piece in text.split(char::is_whitespace) {
        spans.push((at, piece));
        at += piece.len();
        at += text[at..].chars().next().map_or(0, char::len_utf8);
    }
    let pieces = spans.into_iter().flat_map(|(at, piece)| {
        piece
            .split_word_bound_indices()
            .map(move |(o, seg)| (at + o, seg))
    });
    for (start, seg) in pieces {
        let end = start + seg.len();
        // (A mark after a space is in the space's segment.)
        let folded: String = fold(seg)
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect();
        let kind = if folded.chars().any(char::is_alphanumeric) {
            if folded.chars().next().is_some_and(is_unspaced) {
                Kind::Unspaced
            } else {
                Kind::Word
            }
        } else if seg.chars().any(is_emoji_like) {
            Kind::Emoji
        } else {
            continue;
        };
        // A lexeme is at most 2 KB in PostgreSQL.
        if folded.is_empty() || folded.len() > 2000 {
            continue;
        }
        toks.push(Token {
            start,
            end,
            kind,
            lexemes: vec![(folded, end)],
        });
    }
    for i in 0..toks.len() {
        if toks[i].kind == Kind::Word {
            let end = toks[i].end;
            for form in without_prefixes(toks[i].primary()) {
                toks[i].push(form, end);
            }
        }
        let gap_before = |i: usize| &text[toks[i - 1].end..toks[i].start];
        // Numbers: the token's own digits, and a run of digit groups joined; with their
        // endings. A run is joined from its first group only.
        if let Some(digits) = digits_of(toks[i].primary()) {
            let starts_run = i == 0
                || digits_of(toks[i - 1].primary()).is_none()
                || !joins_number(gap_before(i));
            let mut numbers = vec![(digits.clone(), toks[i].end)];
            if starts_run {
                let (mut joined, mut j) = (digits, i);
                while j + 1 < toks.len() && joins_number(gap_before(j + 1)) {
                    let Some(more) = digits_of(toks[j + 1].primary()) else {
                        break;
                    };
                    joined.push_str(&more);
                    j += 1;
                }
                if j > i {
                    numbers.push((joined, toks[j].end));
                }
            }
            for (number, end) in numbers {
                if number.len() > MAX_NUMBER_DIGITS {
                    continue;
                }
                for k in 0..=number.len().saturating_sub(MIN_NUMBER_PART) {
                    toks[i].push(number[k..].to_owned(), end);
                }
            }
        }
        // Bigrams of neighbouring characters of unspaced scripts.
        if i + 1 < toks.len()
            && toks[i].kind == Kind::Unspaced
            && toks[i + 1].kind == Kind::Unspaced
            && toks[i].end == toks[i + 1].start
        {
            let bigram = format!("{}{}", toks[i].primary(), toks[i + 1].primary());
            let end = toks[i + 1].end;
            toks[i].push(bigram, end);
        }
    }
    toks
}

/// The searchable tokens of `text`, in order, folded (without the extra forms stored
/// beside them).
pub fn tokens(text: &str) -> Vec<String> {
    analyse(text)
        .into_iter()
        .map(|t| {
            t.lexemes
                .into_iter()
                .next()
                .map(|l| l.0)
                .unwrap_or_default()
        })
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

/// The lexemes of `text` as a `tsvector` literal and as a [`Signature`] (one analysis
/// for both).
pub fn indexed(text: &str) -> Indexed {
    let mut positions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, t) in analyse(text).into_iter().enumerate() {
        let pos = (i + 1).min(MAX_POSITION);
        for (lexeme, _) in t.lexemes {
            let entry = positions.entry(lexeme).or_default();
            // PostgreSQL keeps at most 256 positions per lexeme.
            if entry.len() < 256 && entry.last() != Some(&pos) {
                entry.push(pos);
            }
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

/// The first [`SIGNATURE_CHARS`] characters of a lexeme.
fn signature_key(lexeme: &str) -> &str {
    let end = lexeme
        .char_indices()
        .nth(SIGNATURE_CHARS)
        .map_or(lexeme.len(), |(i, _)| i);
    &lexeme[..end]
}

/// A 128-bit summary of a set of lexemes (a Bloom filter: three bits per lexeme, from
/// its first three characters), stored beside a message's `search` column
/// (`search_sig_a`, `search_sig_b`) and in the transcript index, so that a search can
/// walk a contact's messages in that index alone and read only the messages whose
/// signature holds every bit of the query's. A message that has a word, or a word the
/// query is a prefix of (three characters or more), always has its bits (no false
/// negatives); about one in a hundred short messages without it has them too, and the
/// full-text condition is checked on the message itself. `-1` (every bit) is always
/// read and checked.
///
/// The bits of a lexeme must not change without a new [`VERSION`]: stored signatures
/// are compared with the query's. (FNV-1a over the UTF-8 of the lexeme's first three
/// characters, then the SplitMix64 finaliser; three 7-bit slices pick the bits.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signature(pub i64, pub i64);

impl Signature {
    /// The signature of these lexemes (an empty set has no bit).
    pub fn of<'a>(lexemes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut sig = Self::default();
        for lexeme in lexemes {
            sig.add(signature_key(lexeme));
        }
        sig
    }

    fn add(&mut self, key: &str) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        for slice in 0..3 {
            let bit = (h >> (slice * 7)) & 127;
            if bit < 64 {
                self.0 |= 1 << bit;
            } else {
                self.1 |= 1 << (bit - 64);
            }
        }
    }

    /// Whether every bit of `query` is set here (a message with this signature may hold
    /// every lexeme of the query).
    pub fn covers(self, query: Signature) -> bool {
        self.0 & query.0 == query.0 && self.1 & query.1 == query.1
    }
}

/// One word of a query: a lexeme, or a phrase of them, the last one matched as a prefix
/// when `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryWord {
    /// What the index is asked for (bigrams for unspaced scripts).
    index: Vec<String>,
    /// What a highlight looks for, token by token (the characters themselves).
    tokens: Vec<String>,
    prefix: bool,
}

/// Each whitespace-separated word of `query` (at most 32); words with no token are
/// skipped.
fn query_words(query: &str) -> Vec<QueryWord> {
    query
        .split_whitespace()
        .filter_map(|word| {
            let toks = analyse(word);
            let last = toks.last()?;
            let primaries: Vec<String> = toks.iter().map(|t| t.primary().to_owned()).collect();
            // A number written in groups is asked for joined (the text stores both forms).
            if toks.len() > 1 && toks.iter().all(|t| digits_of(t.primary()).is_some()) {
                let joined = toks
                    .iter()
                    .filter_map(|t| digits_of(t.primary()))
                    .collect::<String>();
                let whole = toks[0].lexemes.iter().any(|(l, _)| *l == joined);
                if whole {
                    return Some(QueryWord {
                        index: vec![joined.clone()],
                        tokens: vec![joined],
                        prefix: true,
                    });
                }
            }
            let unspaced = toks.len() > 1
                && toks.iter().all(|t| t.kind == Kind::Unspaced)
                && toks.windows(2).all(|w| w[0].end == w[1].start);
            if unspaced {
                let bigrams = toks
                    .windows(2)
                    .map(|w| format!("{}{}", w[0].primary(), w[1].primary()))
                    .collect();
                return Some(QueryWord {
                    index: bigrams,
                    tokens: primaries,
                    prefix: false,
                });
            }
            let prefix = last.kind == Kind::Word && last.primary().chars().count() > 1;
            Some(QueryWord {
                index: primaries.clone(),
                tokens: primaries,
                prefix,
            })
        })
        .take(32)
        .collect()
}

/// The [`Signature`] a message must cover to match `query` (every lexeme of every word,
/// and the first three characters of a prefix); `None` when the query has nothing
/// searchable.
pub fn query_signature(query: &str) -> Option<Signature> {
    let words = query_words(query);
    if words.is_empty() {
        return None;
    }
    let mut sig = Signature::default();
    for w in &words {
        for (k, lexeme) in w.index.iter().enumerate() {
            let is_prefix = w.prefix && k + 1 == w.index.len();
            if !is_prefix || lexeme.chars().count() >= SIGNATURE_CHARS {
                sig.add(signature_key(lexeme));
            }
        }
    }
    Some(sig)
}

/// A `tsquery` literal matching messages that contain every word of `query`, each as
/// a prefix (`'pedid':*`); a word that is several tokens (`e-mail`, `世界`, `555-12`)
/// must appear as a phrase. `None` when the query has nothing searchable.
pub fn tsquery_literal(query: &str) -> Option<String> {
    let groups: Vec<String> = query_words(query)
        .iter()
        .map(|w| {
            let n = w.index.len();
            let phrase: Vec<String> = w
                .index
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    if w.prefix && k + 1 == n {
                        format!("{}:*", quote(l))
                    } else {
                        quote(l)
                    }
                })
                .collect();
            if n == 1 {
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

/// Where `word` matches `toks` starting at token `i`: the end of the match in the text.
fn match_at(toks: &[Token], i: usize, word: &QueryWord) -> Option<usize> {
    let n = word.tokens.len();
    let run = toks.get(i..i + n)?;
    let mut end = 0;
    for (k, (t, wanted)) in run.iter().zip(&word.tokens).enumerate() {
        let prefix = word.prefix && k + 1 == n;
        let hit = t
            .lexemes
            .iter()
            .filter(|(l, _)| {
                if prefix {
                    l.starts_with(wanted.as_str())
                } else {
                    l == wanted
                }
            })
            .map(|(_, e)| *e)
            .max()?;
        end = end.max(hit);
    }
    Some(end)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `text` HTML-escaped, with each match of a query word (the whole phrase of a
/// multi-token word, the whole word a prefix matched) wrapped in `<mark>…</mark>`.
pub fn highlight(text: &str, query: &str) -> String {
    let toks = analyse(text);
    let words = query_words(query);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for i in 0..toks.len() {
        for w in &words {
            if let Some(end) = match_at(&toks, i, w) {
                spans.push((toks[i].start, end));
            }
        }
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end)) = spans.next() {
        if start < at {
            continue;
        }
        // Overlapping or touching matches are one mark.
        while let Some(&(s, e)) = spans.peek() {
            if s > end {
                break;
            }
            end = end.max(e);
            spans.next();
        }
        escape_into(&mut out, &text[at..start]);
        out.push_str("<mark>");
        escape_into(&mut out, &text[start..end]);
        out.push_str("</mark>");
        at = end;
    }
    escape_into(&mut out, &text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Whether a message with `text` matches `query`, as PostgreSQL would decide it:
    /// every query word's phrase at consecutive positions, the last lexeme as a prefix.
    fn finds(text: &str, query: &str) -> bool {
        let toks = analyse(text);
        let words = query_words(query);
        !words.is_empty()
            && words.iter().all(|w| {
                (0..toks.len()).any(|i| {
                    w.index.iter().enumerate().all(|(k, l)| {
                        toks.get(i + k).is_some_and(|t| {
                            t.lexemes.iter().any(|(x, _)| {
                                if w.prefix && k + 1 == w.index.len() {
                                    x.starts_with(l.as_str())
                                } else {
                                    x == l
                                }
                            })
                        })
                    })
                })
            })
    }

    #[test]
    fn words_of_every_script_and_emoji_are_tokens() {
        assert_eq!(tokens("Hello, World!"), vec!["hello", "world"]);
        assert_eq!(tokens("Привет мир"), vec!["привет", "мир"]);
        assert_eq!(tokens("مرحبا بالعالم"), vec!["مرحبا", "بالعالم"]);
        assert_eq!(tokens("I ❤️ 🦀s"), vec!["i", "❤", "🦀", "s"]);
        assert_eq!(tokens("你好世界"), vec!["你", "好", "世", "界"]);
    }

    #[test]
    fn case_and_accents_fold_in_every_script() {
        assert_eq!(tokens("caf\u{e9}"), tokens("cafe\u{301}"));
        assert_eq!(tokens("LLEGÓ Llegó llego"), vec!["llego"; 3]);
        assert_eq!(tokens("ΠΑΡΑΓΓΕΛΙΑ παραγγελία"), vec!["παραγγελια"; 2]);
        assert_eq!(tokens("Straße STRASSE"), vec!["strasse"; 2]);
        assert_eq!(
            tokens("Ørsted Łódź İstanbul"),
            vec!["orsted", "lodz", "istanbul"]
        );
        assert_eq!(tokens("ＡＢＣ１２３"), vec!["abc123"]);
        // Hebrew points and Arabic harakat and tatweel go; the letters stay.
        assert_eq!(tokens("שָׁלוֹם"), vec!["שלום"]);
        assert_eq!(tokens("مَرْحَبًا مـرحبا"), vec!["مرحبا"; 2]);
        // Letters that are not accents stay: Hindi vowel signs, Japanese voiced kana.
        assert_eq!(tokens("नमस्ते"), vec!["नमस्ते"]);
        assert_eq!(fold("が"), "が");
        // Native digits are digits.
        assert_eq!(fold("٤٥٦٧"), "4567");
    }

    #[test]
    fn what_people_type_finds_what_was_written() {
        for (text, query) in [
            ("¿Ya llegó el pedido?", "llego"),
            ("¿Ya llegó el pedido?", "LLEGÓ"),
            ("Η παραγγελία σας στάλθηκε", "ΠΑΡΑΓΓΕΛΙΑ"),
            ("¿Ya llegó el pedido?", "pedid"),
            ("איפה ההזמנה שלי", "הזמנה"),
            ("ובהזמנה היו שני פריטים", "הזמנה"),
            ("أين الطلب بالعالم", "عالم"),
            ("제 주문을 취소하고 싶어요", "주문"),
            ("주문이 도착했어요", "주문"),
            ("call me on +1 (555) 123-4567", "5551234567"),
            ("call me on +1 (555) 123-4567", "4567"),
            ("call me on +1 (555) 123-4567", "555-123-4567"),
            ("order 20261206-00042 is late", "00042"),
            ("your order 5551234567", "(555)123-4567"),
            ("私の注文はどこですか", "注文"),
            ("ขอบคุณสำหรับคำสั่งซื้อ", "คำสั่งซื้อ"),
            ("I ❤️ it", "❤"),
            ("send an e-mail", "e-mail"),
        ] {
            assert!(finds(text, query), "{query:?} should find {text:?}");
        }
        for (text, query) in [
            ("¿Ya llegó el pedido?", "pedidos"),
            ("私の注文はどこですか", "文注"),
            ("call me on 555 123 4567", "1239"),
            ("a cat", "cats"),
        ] {
            assert!(!finds(text, query), "{query:?} should not find {text:?}");
        }
    }

    #[test]
    fn queries_quote_group_and_take_prefixes() {
        assert_eq!(
            tsquery_literal("Hello wörld").as_deref(),
            Some("'hello':* & 'world':*")
        );
        assert_eq!(tsquery_literal("世界").as_deref(), Some("'世界'"));
        assert_eq!(
            tsquery_literal("東京都").as_deref(),
            Some("('東京' <-> '京都')")
        );
        assert_eq!(tsquery_literal("it's").as_deref(), Some("'it\\'s':*"));
        assert_eq!(tsquery_literal("a").as_deref(), Some("'a'"));
        assert_eq!(
            tsquery_literal("e-mail").as_deref(),
            Some("('e' <-> 'mail':*)")
        );
        assert_eq!(
            tsquery_literal("555-123-4567").as_deref(),
            Some("'5551234567':*")
        );
        assert_eq!(tsquery_literal("  ,;  "), None);
    }

    #[test]
    fn highlight_marks_whole_matches_and_escapes_html() {
        assert_eq!(
            highlight("<b>Your invoice</b> is ready", "INVOICE"),
            "&lt;b&gt;Your <mark>invoice</mark>&lt;/b&gt; is ready"
        );
        assert_eq!(
            highlight("¿Ya llegó el pedido?", "pedid llego"),
            "¿Ya <mark>llegó</mark> el <mark>pedido</mark>?"
        );
        // A phrase of characters is marked as one, and its characters elsewhere are not.
        assert_eq!(
            highlight("注文の注文番号、文", "注文"),
            "<mark>注文</mark>の<mark>注文</mark>番号、文"
        );
        assert_eq!(
            highlight("ขอบคุณสำหรับคำสั่งซื้อ สั่ง", "คำสั่ง"),
            "ขอบคุณสำหรับ<mark>คำสั่ง</mark>ซื้อ สั่ง"
        );
        assert_eq!(
            highlight("call +1 (555) 123-4567 now", "5551234567"),
            "call +<mark>1 (555) 123-4567</mark> now"
        );
        assert_eq!(
            highlight("איפה ההזמנה שלי", "הזמנה"),
            "איפה <mark>ההזמנה</mark> שלי"
        );
        assert_eq!(
            highlight("it's 'quoted'", "zzz"),
            "it&#39;s &#39;quoted&#39;"
        );
    }

    #[test]
    fn a_lexeme_keeps_its_bits() {
        // Stored signatures are compared with queries' ones: these change only with a
        // new VERSION (and the rows of older ones are analysed again).
        assert_eq!(Signature::of([]), Signature(0, 0));
        let ord = Signature::of(["ord"]);
        assert_eq!(ord.0.count_ones() + ord.1.count_ones(), 3);
        assert_eq!(Signature::of(["order"]), ord);
        assert_eq!(query_signature("ORDER"), Some(ord));
        assert_eq!(query_signature("or"), Some(Signature(0, 0)));
        assert_eq!(query_signature(" ,; "), None);
        // Every lexeme of every word of a query is required, phrases included.
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
        let mut word = |len: u64| -> String {
            (0..len)
                .map(|_| char::from(b'a' + u8::try_from(next() % 26).unwrap_or(0)))
                .collect()
        };
        let probes: Vec<String> = (0..50).map(|_| word(6)).collect();
        let (mut checked, mut covered) = (0, 0);
        for _ in 0..2000 {
            let words = 6 + (word(1).as_bytes()[0] - b'a') % 11;
            let text: Vec<String> = (0..words).map(|_| word(5)).collect();
            let sig = indexed(&text.join(" ")).signature;
            for probe in &probes {
                if text.iter().any(|w| w[..3] == probe[..3]) {
                    continue;
                }
                checked += 1;
                if sig.covers(query_signature(probe).expect("a word")) {
                    covered += 1;
                }
            }
        }
        assert!(checked > 90_000, "{checked}");
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
            // Highlighting never loses or reorders the text.
            let h = highlight(&s, &s);
            let back = h.replace("<mark>", "").replace("</mark>", "")
                .replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"")
                .replace("&#39;", "'").replace("&amp;", "&");
            prop_assert_eq!(back, s);
        }

        #[test]
        fn a_text_covers_every_query_made_of_its_words(s in "\\PC{0,200}") {
            // A message matches a query made of its own words; its signature must then
            // cover the query's, or the walk would skip a match.
            let sig = indexed(&s).signature;
            for word in s.split_whitespace() {
                if let Some(q) = query_signature(word) {
                    prop_assert!(finds(&s, word), "{word:?}");
                    prop_assert!(sig.covers(q), "{word:?}");
                }
            }
        }

        #[test]
        fn every_prefix_of_a_word_finds_it(s in "[a-zA-Zà-öø-ÿа-яА-Я0-9]{2,20}") {
            let text = format!("x {s} y");
            let sig = indexed(&text).signature;
            let chars: Vec<char> = s.chars().collect();
            for n in 2..=chars.len() {
                let prefix: String = chars[..n].iter().collect();
                prop_assert!(finds(&text, &prefix), "{prefix:?}");
                let q = query_signature(&prefix).expect("a word");
                prop_assert!(sig.covers(q), "{prefix:?}");
            }
        }
    }
}
