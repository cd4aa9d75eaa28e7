//! Every mode of the load tool, end to end at a tiny scale: the compiled `loadgen` starts
//! its own PostgreSQL, the bundled simulator and the gateway built next to it, drives
//! traffic over real HTTP and WebSockets, and writes its JSON result. What is asserted is
//! what the tool promises to report and what the product promises under it: every webhook
//! answered and stored, every event delivered, no errors, every leg measured. No figure
//! is asserted: speed on a shared machine is for the tool to report, not for a test.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// One run at a time: each starts a database, a gateway and a simulator, and six at once
/// on a two-core machine only slow each other down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `loadgen <args>` (with `--out`) and return its JSON result.
fn loadgen(args: &[&str]) -> Value {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = Path::new(env!("CARGO_BIN_EXE_loadgen"));
    let gateway = exe.with_file_name(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        gateway.exists(),
        "the load tool drives the gateway built next to it ({}): `cargo test --workspace` \
         builds it, or `cargo build -p gateway`",
        gateway.display()
    );
    let out: PathBuf = std::env::temp_dir().join(format!(
        "loadgen-test-{}-{}-{}.json",
        args[0],
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let log = out.with_extension("log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(exe)
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start loadgen");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadgen") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loadgen {args:?} did not finish in 300 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "loadgen {args:?} failed: {stderr}");
    let text = std::fs::read_to_string(&out).expect("the JSON result");
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).expect("the result is JSON")
}

fn count(v: &Value) -> u64 {
    v["count"].as_u64().unwrap_or_default()
}

#[test]
fn baseline_measures_the_machines_limits() {
    let r = loadgen(&["baseline", "--duration", "1", "--clients", "2"]);
    for key in [
        "insert_commit_rows_per_sec",
        "batch50_rows_per_sec",
        "noop_http_requests_per_sec",
    ] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    assert!(count(&r["insert_commit_latency"]) > 0, "{r}");
    assert!(count(&r["batch50_commit_latency"]) > 0, "{r}");
}

#[test]
fn ingest_open_loop_stores_every_webhook_and_delivers_every_event() {
    let r = loadgen(&[
        "ingest",
        "--rate",
        "40",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--s1",
        "1",
        "--contacts",
        "20",
        "--watch-db",
        "on",
    ]);
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["webhooks_acked"], 80, "{r}");
    assert_eq!(count(&r["ack"]), 80, "{r}");
    assert_eq!(r["events_missing"], 0, "{r}");
    assert_eq!(count(&r["webhook_to_message_created"]), 80, "{r}");
    // The warm-up's 40 and the measured 80, each once.
    assert_eq!(r["messages_stored"], 120, "{r}");
    assert!(
        r["s1_rows_per_sec"].as_f64().is_some_and(|v| v > 0.0),
        "{r}"
    );
    assert!(r["achieved_vs_s1"].as_f64().is_some(), "{r}");
    for part in ["gateway", "postgres", "machine"] {
        assert!(r["cpu_us_per_webhook"][part].as_f64().is_some(), "{r}");
    }
    assert!(
        r["pg_connections_max"].as_u64().is_some_and(|n| n > 0),
        "{r}"
    );
    assert!(
        r["gateway_peak_rss_mib"].as_u64().is_some_and(|n| n > 0),
        "{r}"
    );
    assert!(
        r["top_statements"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{r}"
    );
    // Watched (`--watch-db on`): the probe's commits and the wait samples.
    assert!(count(&r["commit_probe"]) > 0, "{r}");
    assert!(r["db_wait_samples"].as_u64().is_some_and(|n| n > 0), "{r}");
}

#[test]
fn ingest_closed_loop_loses_nothing() {
    let r = loadgen(&[
        "ingest",
        "--closed",
        "8",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--s1",
        "0",
    ]);
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    let acked = r["webhooks_acked"].as_u64().unwrap_or_default();
    assert!(acked > 0, "{r}");
    assert_eq!(r["events_missing"], 0, "{r}");
    assert_eq!(count(&r["webhook_to_message_created"]), acked, "{r}");
    assert!(
        r["messages_stored"].as_u64().is_some_and(|n| n >= acked),
        "{r}"
    );
    assert!(r.get("achieved_vs_s1").is_none(), "S1 skipped: {r}");
    assert!(
        r.get("commit_probe").is_none(),
        "not watched unless asked: {r}"
    );
}

#[test]
fn conversation_times_every_leg_of_every_conversation() {
    let r = loadgen(&[
        "conversation",
        "--rate",
        "5",
        "--duration",
        "2",
        "--agents",
        "2",
        "--warmup",
        "1",
    ]);
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    // The warm-up's five are handled first and left out of every figure.
    assert_eq!(r["warmup_conversations"], 5, "{r}");
    assert_eq!(r["conversations"], 10, "{r}");
    assert_eq!(r["handled"], 10, "{r}");
    for leg in [
        "webhook_to_offer",
        "accept_call",
        "send_call",
        "agent_send_to_provider",
        "agent_send_to_status_event",
        "delivered_webhook_to_status_event",
    ] {
        assert_eq!(count(&r[leg]), 10, "{leg}: {r}");
    }
    assert!(
        r["pg_connections_max"].as_u64().is_some_and(|n| n > 0),
        "{r}"
    );
}

#[test]
fn connections_reach_every_socket() {
    let r = loadgen(&["connections", "--sockets", "40"]);
    assert_eq!(r["sockets_open"], 40, "{r}");
    assert_eq!(r["sockets_failed"], 0, "{r}");
    assert_eq!(r["delivered"], 40, "{r}");
    assert!(r["kib_per_socket"].as_f64().is_some(), "{r}");
    assert!(
        r["gateway_peak_rss_mib"].as_u64().is_some_and(|n| n > 0),
        "{r}"
    );
}

#[test]
fn search_answers_every_kind_of_query() {
    let r = loadgen(&[
        "search",
        "--messages",
        "20000",
        "--contacts",
        "200",
        "--queries",
        "3",
    ]);
    assert_eq!(r["seed"]["messages"], 20000, "{r}");
    for kind in [
        "transcript_page",
        "in_contact_search",
        "tenant_search_common_word",
        "tenant_search_middling_word",
        "tenant_search_rare_word",
        "tenant_search_no_match",
    ] {
        assert_eq!(count(&r[kind]), 3, "{kind}: {r}");
        assert_eq!(r[kind]["errors"], 0, "{kind}: {r}");
    }
}
