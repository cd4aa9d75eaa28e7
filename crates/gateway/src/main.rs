//! `gateway` — run Parley.
//!
//! `gateway` / `gateway serve` runs the server; `gateway migrate` applies migrations;
//! `gateway openapi` prints the OpenAPI document.

use std::process::ExitCode;

use gateway::config::{Config, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

const USAGE: &str = "usage: gateway [serve | migrate | openapi | healthcheck | --help | --version]

  serve    run the gateway (default). With no DATABASE_URL it runs its own PostgreSQL
           under PARLEY_DATA_DIR (default ./.parley) and seeds a demo tenant.
  migrate  apply database migrations and exit
  openapi  print the OpenAPI document (YAML) and exit
  healthcheck
           exit 0 when the gateway at PARLEY_LISTEN answers /healthz (for container
           health checks; the runtime image has no curl)

Settings are environment variables; see README.md.";

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        // Colours only on a terminal: a file or a pipe gets plain text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map_or("serve", String::as_str);
    match command {
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "--version" | "-V" => {
            println!("gateway {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        "openapi" => {
            return match gateway::openapi::yaml() {
                Ok(doc) => {
                    print!("{doc}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        "healthcheck" => return healthcheck(),
        "serve" | "migrate" => {}
        other => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    channel_connector::install_tls();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            "migrate" => gateway::startup::migrate(&config).await,
            _ => gateway::startup::run(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what to do; the cause chain joined with ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// GET /healthz on the configured listen address with a bare HTTP/1.0 request.
fn healthcheck() -> ExitCode {
    use std::io::{Read as _, Write as _};
    let listen = std::env::var("PARLEY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let Ok(mut addr) = listen.parse::<std::net::SocketAddr>() else {
        eprintln!("error: PARLEY_LISTEN={listen:?} is not a socket address");
        return ExitCode::FAILURE;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(3);
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") => {
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!("unhealthy: {}", resp.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}
