//! `gateway` — run Parley.
//!
//! `gateway` / `gateway serve` runs the server; `gateway migrate` applies migrations;
//! `gateway openapi` prints the OpenAPI document.

use std::process::ExitCode;

use gateway::config::{Config, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

const USAGE: &str = "usage: gateway [serve | migrate | openapi | --help | --version]

  serve    run the gateway (default). With no DATABASE_URL it runs its own PostgreSQL
           under PARLEY_DATA_DIR (default ./.parley) and seeds a demo tenant.
  migrate  apply database migrations and exit
  openapi  print the OpenAPI document (YAML) and exit

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
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
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
