//! Histograms and the result document.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds (1 µs to 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Record a duration.
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000);
    let _ = h.record(us);
}

/// p50/p90/p99/p99.9/max in milliseconds, and the count.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({
        "count": h.len(),
        "min_ms": ms(h.min()),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// The human summary of a result.
pub fn human(result: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "== loadgen {} ==\n",
        result["mode"].as_str().unwrap_or("?")
    ));
    if let Some(m) = result.get("machine") {
        out.push_str(&format!("machine: {m}\n"));
    }
    if let Some(obj) = result.as_object() {
        for (k, v) in obj {
            if k == "mode" || k == "machine" {
                continue;
            }
            match v {
                Value::Object(o) if o.contains_key("p99_ms") => out.push_str(&format!(
                    "{k:<28} n={:<8} min={}ms p50={}ms p90={}ms p99={}ms p99.9={}ms max={}ms\n",
                    o["count"],
                    o["min_ms"],
                    o["p50_ms"],
                    o["p90_ms"],
                    o["p99_ms"],
                    o["p99_9_ms"],
                    o["max_ms"]
                )),
                Value::Array(rows) if rows.iter().all(Value::is_object) => {
                    out.push_str(&format!("{k}:\n"));
                    for r in rows {
                        out.push_str(&format!("  {r}\n"));
                    }
                }
                other => out.push_str(&format!("{k:<28} {other}\n")),
            }
        }
    }
    out
}

/// What this machine is.
pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem_gib = memory_kib().map_or(0.0, |kib| {
        (kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
    });
    json!({"cpus": cpus, "cpu": model, "memory_gib": mem_gib})
}

/// The machine's memory in KiB (`MemTotal`), if it can be read.
pub fn memory_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    })
}
