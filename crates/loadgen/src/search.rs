//! The `search` mode: seed one tenant with `--messages` messages across `--contacts`
//! contacts with COPY (the search column computed by the product's own tokeniser), then
//! time transcript pages, in-contact searches and tenant-wide "newest 50 matching"
//! searches for a very common, a middling and a very rare word, over the HTTP API.

use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Args,
    harness::Harness,
    report::{histogram, machine, record, summary},
};

/// A word in about half of all messages.
const COMMON: &str = "order";
/// A word in exactly [`RARE_COUNT`] messages, all of them old.
const RARE: &str = "zanzibar";
const RARE_COUNT: usize = 10;
/// Vocabulary size (Zipf-distributed).
const VOCAB: usize = 20_000;
/// Contacts that hold a fifth of all messages (long histories).
const HEAVY: usize = 100;

/// A small deterministic generator (splitmix64), so runs seed the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pronounceable pseudo-words: `w` → a distinct lowercase word.
fn word(mut w: usize) -> String {
    const C: &[u8] = b"bcdfghjklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut s = String::new();
    loop {
        s.push(char::from(C[w % C.len()]));
        w /= C.len();
        s.push(char::from(V[w % V.len()]));
        w /= V.len();
        if w == 0 {
            break;
        }
    }
    s
}

/// Zipf(1) sampling over `VOCAB` ranks by inverting the cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new() -> Self {
        let mut acc = 0.0;
        let cdf = (1..=VOCAB)
            .map(|r| {
                acc += 1.0 / r as f64;
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        Self(cdf.into_iter().map(|c| c / total).collect())
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|c| *c < u).min(VOCAB - 1)
    }
}

/// COPY text format: escape backslash, tab, newline, carriage return.
fn copy_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

async fn seed(db: &PgPool, tenant: Uuid, a: &Args) -> anyhow::Result<(Vec<Uuid>, Value)> {
    let n = a.messages;
    let started = Instant::now();
    let contacts: Vec<Uuid> = (0..a.contacts).map(|_| Uuid::now_v7()).collect();
    let mut conn = db.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY contacts (id, tenant_id, name, search_text) FROM STDIN")
        .await?;
    let mut buf = String::new();
    for (i, c) in contacts.iter().enumerate() {
        let name = format!("Contact {i}");
        let text = conversation_store::contacts::search_text(&name, &Value::Null);
        buf.push_str(&format!("{c}\t{tenant}\t{name}\t{text}\n"));
        if buf.len() > 1 << 20 {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    copy.send(buf.into_bytes()).await?;
    copy.finish().await?;

    let zipf = Zipf::new();
    let mut rng = Rng(0x5EED);
    // Every RARE_COUNT-th message among the first tenth carries the rare word.
    let rare_every = (n / 10 / RARE_COUNT).max(1);
    let t0 = chrono_like_now_minus_days(365);
    let span_us = 365_i64 * 86_400 * 1_000_000;
    let mut copy = conn
        .copy_in_raw(
            "COPY messages (id, tenant_id, contact_id, channel, media, direction, kind, body, status, search, search_sig_a, search_sig_b, created_at)
             FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(2 << 20);
    let mut rare_left = RARE_COUNT;
    for i in 0..n {
        let contact = if rng.below(5) == 0 {
            contacts[rng.below(HEAVY.min(contacts.len()))]
        } else {
            contacts[rng.below(contacts.len())]
        };
        let words = 6 + rng.below(10);
        let mut body = Vec::with_capacity(words + 2);
        for _ in 0..words {
            body.push(word(zipf.sample(&mut rng) + 1));
        }
        if rng.below(2) == 0 {
            body.insert(rng.below(body.len()), COMMON.to_owned());
        }
        if rare_left > 0 && i % rare_every == 0 && i > 0 {
            body.push(RARE.to_owned());
            rare_left -= 1;
        }
        let body = body.join(" ");
        let indexed = conversation_store::search::indexed(&body);
        let at_us = t0 + (i as i64) * span_us / (n as i64).max(1);
        let direction = if rng.below(2) == 0 {
            "inbound"
        } else {
            "outbound"
        };
        buf.push_str(&format!(
            "{}\t{tenant}\t{contact}\twhatsapp\tchat\t{direction}\ttext\t",
            Uuid::now_v7()
        ));
        copy_escape(&body, &mut buf);
        buf.push_str("\treceived\t");
        copy_escape(&indexed.tsvector, &mut buf);
        let sig = indexed.signature;
        buf.push_str(&format!(
            "\t{}\t{}\t{}\n",
            sig.0,
            sig.1,
            micros_to_rfc3339(at_us)
        ));
        if buf.len() > 2 << 20 {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
        if i > 0 && i % 500_000 == 0 {
            eprintln!(
                "search: seeded {i} messages in {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    copy.send(buf.into_bytes()).await?;
    copy.finish().await?;
    let copied = started.elapsed();
    // What the product keeps on each contact as it stores messages: its last activity and
    // its unread inbound messages (no agent has read any).
    eprintln!("search: contacts' activity and unread counts...");
    sqlx::query(
        "UPDATE contacts c SET last_activity_at = x.at, unread_count = x.unread
         FROM (SELECT contact_id, max(created_at) AS at,
                      (count(*) FILTER (WHERE direction = 'inbound'))::int AS unread
               FROM messages WHERE tenant_id = $1 GROUP BY contact_id) x
         WHERE c.tenant_id = $1 AND c.id = x.contact_id",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    eprintln!("search: analysing...");
    sqlx::query("VACUUM ANALYZE messages")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ANALYZE contacts").execute(&mut *conn).await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('messages'))")
            .fetch_one(&mut *conn)
            .await?;
    Ok((
        contacts,
        json!({"messages": n, "contacts": a.contacts, "copy_secs": copied.as_secs_f64().round(),
               "rows_per_sec": (n as f64 / copied.as_secs_f64()).round(),
               "messages_table_size": size}),
    ))
}

fn chrono_like_now_minus_days(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    now - days * 86_400 * 1_000_000
}

/// Unix microseconds as a timestamp PostgreSQL reads (`'epoch' + interval` would need
/// SQL; COPY takes the ISO form).
fn micros_to_rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn time_gets(
    h: &Harness,
    token: &str,
    paths: &[String],
    expect_items: bool,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut hist = histogram();
    let mut errors = 0;
    for p in paths {
        let t = Instant::now();
        let r = h
            .http
            .get(format!("{}{p}", h.base))
            .bearer_auth(token)
            .send()
            .await?;
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        record(&mut hist, t.elapsed());
        let items = v["items"].as_array().map_or(0, Vec::len);
        if !ok || (expect_items && items == 0) {
            errors += 1;
            if errors <= 3 {
                eprintln!("search: {p}: {v}");
            }
        }
    }
    Ok((hist, errors))
}

/// The `search` mode: its result, or `None` when it was emitted before holding the
/// database (`--hold`).
pub async fn run(a: &Args) -> anyhow::Result<Option<Value>> {
    let h = std::sync::Arc::new(Harness::start_for_data(&a.gateway).await?);
    let tenant: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'Load'")
        .fetch_one(&h.db)
        .await
        .context("the provisioned tenant")?;
    if let Some(index) = &a.without_index {
        // Only the product's own message indexes may be dropped.
        let known: Option<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'messages' AND indexname = $1",
        )
        .bind(index)
        .fetch_optional(&h.db)
        .await?;
        let Some(index) = known else {
            anyhow::bail!("messages has no index named {index}");
        };
        eprintln!("search: dropping {index} to measure without it");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
            .execute(&h.db)
            .await?;
    }
    eprintln!(
        "search: seeding {} messages across {} contacts with COPY...",
        a.messages, a.contacts
    );
    let (contacts, seeded) = seed(&h.db, tenant, a).await?;
    eprintln!("search: {seeded}");
    let mut rng = Rng(0xC0FFEE);
    let q = a.queries;
    let heavy_or_any = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            contacts[rng.below(HEAVY.min(contacts.len()))]
        } else {
            contacts[rng.below(contacts.len())]
        }
    };
    // Warm the caches once (the first query after a bulk load reads from disk).
    let warm: Vec<String> = vec![format!("/api/v1/messages/search?q={COMMON}&limit=50")];
    time_gets(&h, &h.admin_token, &warm, false).await?;

    let transcript: Vec<String> = (0..q)
        .map(|_| {
            format!(
                "/api/v1/contacts/{}/messages?limit=50",
                heavy_or_any(&mut rng)
            )
        })
        .collect();
    let in_contact: Vec<String> = (0..q)
        .map(|_| {
            format!(
                "/api/v1/contacts/{}/messages?limit=50&q={}",
                contacts[rng.below(HEAVY.min(contacts.len()))],
                word(1 + rng.below(50))
            )
        })
        .collect();
    let mid = |rng: &mut Rng| word(1 + 200 + rng.below(800));
    let tenant_common: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/messages/search?q={COMMON}&limit=50"))
        .collect();
    let tenant_mid: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/messages/search?q={}&limit=50", mid(&mut rng)))
        .collect();
    let tenant_rare: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/messages/search?q={RARE}&limit=50"))
        .collect();
    // A word typed halfway (search matches prefixes): its first three letters or more.
    let tenant_prefix: Vec<String> = (0..q)
        .map(|_| {
            let w = mid(&mut rng);
            let cut = w.len().saturating_sub(1).max(3).min(w.len());
            format!("/api/v1/messages/search?q={}&limit=50", &w[..cut])
        })
        .collect();
    // The directory: part of a name ("Contact 4242" is found by "4242").
    let directory: Vec<String> = (0..q)
        .map(|_| format!("/api/v1/contacts?q={}&limit=50", 1000 + rng.below(90_000)))
        .collect();
    let tenant_none: Vec<String> = (0..q)
        .map(|_| "/api/v1/messages/search?q=qqqnomatchqqq&limit=50".to_owned())
        .collect();
    let mut result = json!({"mode": "search", "machine": machine(), "seed": seeded,
                            "queries_each": q, "without_index": a.without_index});
    // Over the timed queries only (not the seeding).
    let watch = crate::modes::GatewayWatch::start(&h);
    for (name, paths, expect) in [
        ("transcript_page", &transcript, true),
        ("in_contact_search", &in_contact, false),
        ("tenant_search_common_word", &tenant_common, true),
        ("tenant_search_middling_word", &tenant_mid, true),
        ("tenant_search_rare_word", &tenant_rare, true),
        ("tenant_search_word_prefix", &tenant_prefix, true),
        ("tenant_search_no_match", &tenant_none, false),
        ("directory_search", &directory, false),
    ] {
        eprintln!("search: {name} x{q}...");
        let (hist, errors) = time_gets(&h, &h.admin_token, paths, expect).await?;
        result[name] = summary(&hist);
        result[name]["errors"] = json!(errors);
    }
    crate::modes::add_fields(&mut result, watch.finish(&h));
    if let Some(hold) = a.hold {
        // Emitted now: a hold usually ends with Ctrl-C, which would lose it.
        crate::emit(&result, a)?;
        eprintln!(
            "search: holding the database for {:.0}s (Ctrl-C ends it): psql '{}'",
            hold.as_secs_f64(),
            h.url
        );
        tokio::time::sleep(hold).await;
        return Ok(None);
    }
    Ok(Some(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(micros_to_rfc3339(0), "1970-01-01 00:00:00.000000+00");
        // 2026-12-01T09:30:15.5Z
        assert_eq!(
            micros_to_rfc3339(1_796_117_415_500_000),
            "2026-12-01 09:30:15.500000+00"
        );
        assert_eq!(
            micros_to_rfc3339(951_782_400_000_000),
            "2000-02-29 00:00:00.000000+00"
        );
    }

    #[test]
    fn words_are_distinct_and_zipf_favours_low_ranks() {
        let words: std::collections::HashSet<String> = (0..VOCAB).map(word).collect();
        assert_eq!(words.len(), VOCAB);
        assert!(!words.contains(COMMON) && !words.contains(RARE));
        let z = Zipf::new();
        let mut rng = Rng(1);
        let low = (0..10_000).filter(|_| z.sample(&mut rng) < 10).count();
        // Ranks 1..10 carry H(10)/H(20000) ≈ 27 % of the mass.
        assert!((2_200..3_200).contains(&low), "{low}");
    }
}
