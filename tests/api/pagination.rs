//! Pagination as a property: for random histories (many messages sharing one timestamp,
//! as a provider's batch does) and random page sizes, walking a transcript back from the
//! newest page, forward from the oldest, and through tenant-wide search visits every
//! message exactly once, in order. Randomised with a fixed seed, so a failure repeats.

use std::collections::BTreeSet;

use serde_json::Value;
use test_support::spawn_app;

/// splitmix64: small, seeded, good enough to pick sizes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn ids(page: &Value, pick: impl Fn(&Value) -> &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| pick(m)["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn paging_visits_every_message_once_in_order_for_random_histories_and_page_sizes() {
    let app = spawn_app().await;
    let mut rng = Rng(0x9A6E);
    for case in 0..6 {
        let address = format!("+3361234{case:04}");
        let n = 1 + rng.below(120);
        let mut contact = None;
        for i in 0..n {
            let got = app
                .inbound(&address, &format!("pagecase{case} number {i}"))
                .await;
            contact = Some(got.contact_id);
        }
        let contact = contact.expect("contact");
        // Collapse runs of messages onto one timestamp: ties must be broken by id.
        sqlx::query(
            "UPDATE messages SET created_at = date_trunc('second', created_at) - make_interval(secs => (random() * 3)::int)
             WHERE contact_id = $1",
        )
        .bind(contact.0)
        .execute(&app.db)
        .await
        .expect("ties");
        let expected: Vec<String> = sqlx::query_scalar::<_, uuid::Uuid>(
            "SELECT id FROM messages WHERE contact_id = $1 ORDER BY created_at, id",
        )
        .bind(contact.0)
        .fetch_all(&app.db)
        .await
        .expect("expected")
        .into_iter()
        .map(|u| u.to_string())
        .collect();
        let base = format!("/api/v1/contacts/{contact}/messages");

        // Backwards from the newest page.
        let mut seen: Vec<String> = Vec::new();
        let mut path = format!("{base}?limit={}", 1 + rng.below(40));
        let oldest_page = loop {
            let page = app.get(&path, &app.agent.token).await;
            assert!(page.status.is_success(), "{path}: {}", page.text);
            let mut p = ids(&page.json, |m| m);
            p.extend(seen);
            seen = p;
            match page.json["prev_cursor"].as_str() {
                Some(c) => {
                    path = format!("{base}?limit={}&before={c}", 1 + rng.below(40));
                }
                None => break page.json,
            }
        };
        assert_eq!(seen, expected, "case {case}: backwards");

        // Forwards from the oldest page.
        let mut seen = ids(&oldest_page, |m| m);
        let mut last = seen.last().cloned();
        while let Some(after) = last {
            let path = format!("{base}?limit={}&after={after}", 1 + rng.below(40));
            let page = app.get(&path, &app.agent.token).await;
            let p = ids(&page.json, |m| m);
            last = p.last().cloned();
            seen.extend(p);
        }
        assert_eq!(seen, expected, "case {case}: forwards");

        // Tenant-wide search for this case's word, newest first, page by page.
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/messages/search?q=pagecase{case}&limit={}",
                1 + rng.below(30)
            );
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get(&path, &app.agent.token).await;
            assert!(page.status.is_success(), "{path}: {}", page.text);
            seen.extend(ids(&page.json, |h| &h["message"]));
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let distinct: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "case {case}: search repeated a hit"
        );
        let mut newest_first = expected.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first, "case {case}: search");
    }
}
