//! `loadgen`: Parley's load tool. It starts its own PostgreSQL (durable:
//! `synchronous_commit=on`), the bundled WhatsApp simulator and the gateway binary,
//! provisions a tenant through the platform API, then drives traffic and reports HDR
//! latency histograms, achieved rates, errors, the gateway's CPU and peak RSS and the
//! database's connections, as a human summary and a JSON result.
//!
//! ```text
//! loadgen baseline    [--duration 10] [--clients 4]
//! loadgen ingest      [--rate 500 | --closed 32] [--duration 20] [--contacts 1000] [--s1 5]
//! loadgen connections [--sockets 2000]
//! loadgen conversation [--rate 20] [--duration 20] [--agents 10]
//! loadgen search      [--messages 1000000] [--contacts 100000] [--queries 200]
//! common: [--out result.json] [--gateway path/to/gateway]
//! ```
//!
//! Open-loop mode schedules request i at `t0 + i/rate` and measures from that scheduled
//! time, so a server that falls behind shows up as latency, not as a lower send rate (no
//! coordinated omission).

mod harness;
mod modes;
mod report;
mod search;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Args {
    /// The mode.
    pub mode: String,
    /// Target arrival rate (per second) for open-loop modes.
    pub rate: f64,
    /// Closed-loop concurrency (instead of a rate).
    pub closed: Option<usize>,
    /// How long to drive traffic.
    pub duration: Duration,
    /// Traffic before the measured part (`ingest`, `conversation`).
    pub warmup: Duration,
    /// `ingest`: how long to measure S1 (single-row commits) on the same database first;
    /// zero skips it.
    pub s1: Duration,
    /// Distinct contacts.
    pub contacts: usize,
    /// Agents.
    pub agents: usize,
    /// Idle sockets for `connections`.
    pub sockets: usize,
    /// Baseline database clients.
    pub clients: usize,
    /// Messages to seed for `search`.
    pub messages: usize,
    /// Timed requests per query kind for `search`.
    pub queries: usize,
    /// An index to drop before `search` seeds (to measure what it buys).
    pub without_index: Option<String>,
    /// `search`: keep the seeded database running this long after measuring.
    pub hold: Option<Duration>,
    /// `ingest`: watch the database from a thread of its own (a commit probe, wait events).
    pub watch_db: bool,
    /// Where to write the JSON result.
    pub out: Option<PathBuf>,
    /// The gateway executable.
    pub gateway: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    parse(std::env::args().skip(1))
}

/// The options after the program's name.
fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let mut it = args.into_iter();
    let Some(mode) = it.next() else {
        bail!(
            "usage: loadgen <baseline|ingest|connections|conversation|search> [options]; see --help"
        );
    };
    if mode == "--help" || mode == "-h" {
        println!("{}", include_str!("usage.txt"));
        std::process::exit(0);
    }
    let own = std::env::current_exe().context("own path")?;
    let mut a = Args {
        mode,
        rate: 500.0,
        closed: None,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
        s1: Duration::from_secs(5),
        contacts: 1000,
        agents: 10,
        sockets: 2000,
        clients: 4,
        messages: 1_000_000,
        queries: 200,
        without_index: None,
        hold: None,
        watch_db: false,
        out: None,
        gateway: own.with_file_name("gateway"),
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || -> anyhow::Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .with_context(|| format!("{flag} must be a positive number"))
        };
        // A length of time, at most 11 days; `zero`: whether 0 is allowed (to skip a step).
        let secs = |zero: bool| -> anyhow::Result<Duration> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| (*v > 0.0 || (zero && *v == 0.0)) && *v <= 1_000_000.0)
                .and_then(|v| Duration::try_from_secs_f64(v).ok())
                .with_context(|| {
                    let least = if zero { "0 or more" } else { "more than 0" };
                    format!("{flag} must be {least} and at most 1000000 seconds")
                })
        };
        match flag.as_str() {
            "--rate" => {
                a.rate = Some(num()?)
                    .filter(|r| (0.001..=10_000_000.0).contains(r))
                    .with_context(|| format!("{flag} must be from 0.001 to 10000000 a second"))?;
            }
            "--closed" => a.closed = Some(num()? as usize),
            "--duration" => a.duration = secs(false)?,
            "--warmup" => a.warmup = secs(true)?,
            "--s1" => a.s1 = secs(true)?,
            "--contacts" => a.contacts = num()? as usize,
            "--agents" => a.agents = num()? as usize,
            "--sockets" => a.sockets = num()? as usize,
            "--clients" => a.clients = num()? as usize,
            "--messages" => a.messages = num()? as usize,
            "--queries" => a.queries = num()? as usize,
            "--without-index" => a.without_index = Some(value),
            "--hold" => a.hold = Some(secs(false)?),
            "--watch-db" => {
                a.watch_db = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => bail!("{flag} must be on or off"),
                };
            }
            "--out" => a.out = Some(PathBuf::from(value)),
            "--gateway" => a.gateway = PathBuf::from(value),
            other => bail!("unknown option {other}; see --help"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Returning (rather than exiting) drops the runtime and with it every task's handle on
    // the harness, whose `Drop` stops the gateway and the database it started: also when
    // the run is interrupted.
    let outcome = tokio::select! {
        r = run() => r,
        signal = interrupted() => Err(anyhow::anyhow!(
            "interrupted by {signal}; stopping the gateway and the database this run started"
        )),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The first SIGINT or SIGTERM (never, if they cannot be watched).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        std::future::pending::<()>().await;
        return "nothing";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run() -> anyhow::Result<()> {
    let _ = rustls_default();
    let args = parse_args()?;
    let result = match args.mode.as_str() {
        "baseline" => modes::baseline(&args).await?,
        "ingest" => modes::ingest(&args).await?,
        "connections" => modes::connections(&args).await?,
        "conversation" => modes::conversation(&args).await?,
        // With `--hold` the result was emitted before holding the database.
        "search" => match search::run(&args).await? {
            Some(result) => result,
            None => return Ok(()),
        },
        other => {
            bail!("unknown mode {other}; use baseline, ingest, connections, conversation or search")
        }
    };
    emit(&result, &args)
}

/// Print the human summary and write the JSON result (`--out`).
pub fn emit(result: &serde_json::Value, args: &Args) -> anyhow::Result<()> {
    println!("{}", report::human(result));
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("result written to {}", path.display());
    }
    Ok(())
}

fn rustls_default() -> Result<(), ()> {
    channel_connector::install_tls();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(line: &str) -> anyhow::Result<super::Args> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn times_and_rates_out_of_range_are_refused_not_panicked_on() {
        for bad in [
            "ingest --duration 1e300",
            "ingest --duration 0",
            "ingest --duration nan",
            "ingest --warmup -1",
            "ingest --s1 inf",
            "search --hold 1e20",
            "ingest --rate 1e-300",
            "ingest --rate inf",
            "ingest --rate 0",
            "ingest --closed x",
            "ingest --nonsense 1",
            "ingest --watch-db yes",
        ] {
            let flag = bad.split_whitespace().nth(1).unwrap_or_default();
            let e = args(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(flag), "{bad}: {e:?}");
        }
        let a = args("ingest --rate 1300 --warmup 0 --s1 0 --duration 30").expect("valid");
        assert_eq!(a.rate, 1300.0);
        assert!(a.warmup.is_zero() && a.s1.is_zero());
        assert_eq!(a.duration.as_secs(), 30);
        assert!(!a.watch_db, "off unless asked for");
        assert!(args("ingest --watch-db on").is_ok_and(|a| a.watch_db));
    }
}
