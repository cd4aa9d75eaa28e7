//! The compiled `gateway` executable, run the way a newcomer runs it: no DATABASE_URL, its
//! own data directory, the embedded PostgreSQL, the demo tenant.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;

struct Gateway {
    child: Child,
    base: String,
    sim: Option<String>,
    sms: Option<String>,
}

fn gateway_command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("PARLEY_DEMO")
        .env_remove("PARLEY_JWT_SECRET")
        .env("PARLEY_DATA_DIR", data_dir)
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// Start the binary and wait for its "listening" line.
fn start(data_dir: &Path) -> Gateway {
    start_with(data_dir, Stdio::inherit(), "warn")
}

/// [`start`] with the logs going to `logs` at level `log_level`.
fn start_with(data_dir: &Path, logs: Stdio, log_level: &str) -> Gateway {
    start_env(data_dir, logs, log_level, &[])
}

/// [`start_with`] with more settings.
fn start_env(data_dir: &Path, logs: Stdio, log_level: &str, env: &[(&str, &str)]) -> Gateway {
    let mut cmd = gateway_command(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env("RUST_LOG", log_level)
        .stdout(Stdio::piped())
        .stderr(logs)
        .spawn()
        .expect("spawn gateway");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let (sim_tx, sim_rx) = mpsc::channel();
    let (sms_tx, sms_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("Parley is listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("SMS simulator: ") {
                let _ = sms_tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            if let Some(rest) = line.trim().strip_prefix("WhatsApp simulator: ") {
                let _ = sim_tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(base) => Gateway {
            child,
            base,
            sim: sim_rx.recv_timeout(Duration::from_secs(5)).ok(),
            sms: sms_rx.recv_timeout(Duration::from_secs(5)).ok(),
        },
        Err(_) => {
            let _ = child.kill();
            panic!("the gateway did not start listening within 120 s");
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the gateway did not exit within 60 s");
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> (StatusCode, serde_json::Value) {
    let res = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request");
    let status = res.status();
    (status, res.json().await.unwrap_or_default())
}

fn temp_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("parley-e2e-{}", pg_cluster_suffix()))
}

fn pg_cluster_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn the_binary_runs_the_demo_on_its_own_postgres_and_keeps_data_across_restarts() {
    let dir = temp_data_dir();
    let client = test_support::http();

    // First start: initdb, migrate, seed, listen.
    let mut gw = start(&dir);
    let (status, body) = login(&client, &gw.base, "agent@demo.local", "parley-demo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let me: serde_json::Value = client
        .get(format!("{}/api/v1/me", gw.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], "agent@demo.local");
    assert_eq!(me["role"], "agent");

    // The admin creates a user; it must survive restarts.
    let (_, admin) = login(&client, &gw.base, "admin@demo.local", "parley-demo").await;
    let res = client
        .post(format!("{}/api/v1/users", gw.base))
        .bearer_auth(admin["access_token"].as_str().expect("token"))
        .json(&json!({"email": "kept@demo.local", "display_name": "Kept", "password": "kept-password", "role": "agent"}))
        .send()
        .await
        .expect("create user");
    assert_eq!(res.status(), StatusCode::CREATED);

    // SIGTERM: a clean exit that stops the embedded server.
    signal(&gw.child, "-TERM");
    assert!(wait_exit(&mut gw.child).success());

    // Second start finds the same data (and the same JWT secret: the old token works).
    let mut gw = start(&dir);
    let (status, _) = login(&client, &gw.base, "kept@demo.local", "kept-password").await;
    assert_eq!(status, StatusCode::OK);
    let res = client
        .get(format!("{}/api/v1/me", gw.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), StatusCode::OK);

    // kill -9: no graceful anything. The next start must cope with what is left.
    gw.child.kill().expect("kill -9");
    let _ = gw.child.wait();
    let mut gw = start(&dir);
    let (status, _) = login(&client, &gw.base, "kept@demo.local", "kept-password").await;
    assert_eq!(status, StatusCode::OK);
    signal(&gw.child, "-INT");
    assert!(wait_exit(&mut gw.child).success());

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_port_stops_start_up_with_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = temp_data_dir();
    let out = gateway_command(&dir)
        .env("PARLEY_LISTEN", addr.to_string())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("already in use") && lines[0].contains("PARLEY_LISTEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let out = gateway_command(&temp_data_dir())
        .env("PARLEY_LISTEN", "localhost")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: PARLEY_LISTEN="), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn missing_postgres_binaries_stop_start_up_saying_what_to_install() {
    let dir = temp_data_dir();
    let out = gateway_command(&dir)
        .env("PARLEY_PG_BIN", "/nonexistent/postgresql/bin")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("postgresql"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_demo_chats_end_to_end_through_the_bundled_whatsapp_simulator() {
    let dir = temp_data_dir();
    let client = test_support::http();
    // Metrics on a listener of their own (a free port, found by binding one).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut gw = start_env(
        &dir,
        Stdio::inherit(),
        "warn",
        &[("PARLEY_METRICS_LISTEN", &metrics_addr.to_string())],
    );
    let on_main = client
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(on_main.status(), StatusCode::NOT_FOUND);
    let on_own = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(on_own.status(), StatusCode::OK);
    assert!(
        on_own
            .text()
            .await
            .unwrap_or_default()
            .contains("parley_http_requests_total")
    );
    let sim = gw
        .sim
        .clone()
        .expect("the demo prints the simulator's address");

    // A simulated contact writes on WhatsApp.
    let res: serde_json::Value = client
        .post(format!("{sim}/_sim/inbound"))
        .json(&json!({"from": "+14155552671", "name": "Ana Demo", "text": "hola from the demo"}))
        .send()
        .await
        .expect("inbound")
        .json()
        .await
        .expect("json");
    assert_eq!(res["gateway_status"], 200, "{res}");

    // The agent sees the conversation and replies.
    let (_, body) = login(&client, &gw.base, "agent@demo.local", "parley-demo").await;
    let token = body["access_token"].as_str().expect("token").to_owned();
    let convs: serde_json::Value = client
        .get(format!("{}/api/v1/conversations", gw.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("conversations")
        .json()
        .await
        .expect("json");
    let conv = &convs["items"][0];
    assert_eq!(conv["contact_name"], "Ana Demo");
    assert_eq!(conv["last_message"]["text"], "hola from the demo");
    assert_eq!(conv["unread_count"], 1);
    let contact = conv["contact_id"].as_str().expect("contact");
    let res = client
        .post(format!("{}/api/v1/contacts/{contact}/messages", gw.base))
        .bearer_auth(&token)
        .header("idempotency-key", "demo-reply-1")
        .json(&json!({"channel": "whatsapp", "text": "¡Hola Ana! How can I help?"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // The reply reaches the simulator (the provider), and its statuses come back.
    let mut delivered = false;
    for _ in 0..100 {
        let sent: serde_json::Value = client
            .get(format!("{sim}/_sim/sent"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if sent.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m["text"]["body"] == "¡Hola Ana! How can I help?")
        }) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "the agent's reply never reached the simulator");

    // The same over SMS: a contact texts the demo's SMS number, the agent's reply (no
    // channel named) goes back by SMS.
    let sms = gw
        .sms
        .clone()
        .expect("the demo prints the SMS simulator's address");
    let res: serde_json::Value = client
        .post(format!("{sms}/_sim/inbound"))
        .json(&json!({"from": "+13105550142", "body": "texting the demo"}))
        .send()
        .await
        .expect("sms inbound")
        .json()
        .await
        .expect("json");
    assert_eq!(res["webhook_status"], 200, "{res}");
    let found: serde_json::Value = client
        .get(format!("{}/api/v1/contacts?q=13105550142", gw.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("contacts")
        .json()
        .await
        .expect("json");
    let contact = found["items"][0]["id"].as_str().expect("sms contact");
    let res = client
        .post(format!("{}/api/v1/contacts/{contact}/messages", gw.base))
        .bearer_auth(&token)
        .json(&json!({"text": "Got your text!"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mut texted = false;
    for _ in 0..100 {
        let sent: serde_json::Value = client
            .get(format!("{sms}/_sim/sent"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if sent
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m["body"] == "Got your text!"))
        {
            texted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(texted, "the agent's SMS reply never reached the simulator");
    signal(&gw.child, "-TERM");
    assert!(wait_exit(&mut gw.child).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secrets (provider tokens and app secrets, the JWT secret, passwords, issued tokens)
/// never reach the logs, even at debug level, nor an API answer.
#[tokio::test]
async fn secrets_never_appear_in_logs_or_answers() {
    let dir = temp_data_dir();
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let client = test_support::http();
    let mut gw = start_with(&dir, Stdio::from(log), "debug");
    let sim = gw.sim.clone().expect("simulator");
    let (_, body) = login(&client, &gw.base, "admin@demo.local", "parley-demo").await;
    let admin = body["access_token"].as_str().expect("token").to_owned();
    let (status, _) = login(&client, &gw.base, "admin@demo.local", "Wr0ng-Pa55word-Leak").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let secrets = [
        "TOKEN-MUST-NOT-LEAK-7731",
        "APPSECRET-MUST-NOT-LEAK-7731",
        "VERIFY-MUST-NOT-LEAK-7731",
        "TWILIO-AUTH-MUST-NOT-LEAK-7731",
    ];
    let res = client
        .post(format!("{}/api/v1/channel-accounts", gw.base))
        .bearer_auth(&admin)
        .json(&json!({"provider": "whatsapp", "name": "Second", "phone_number_id": "900000000000009",
                      "access_token": secrets[0], "app_secret": secrets[1], "verify_token": secrets[2],
                      "api_base_url": format!("{sim}/v21.0")}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let mut answers = created.to_string();
    // An SMS account, and a Twilio webhook with a bad signature.
    let res = client
        .post(format!("{}/api/v1/channel-accounts", gw.base))
        .bearer_auth(&admin)
        .json(&json!({"provider": "twilio_sms", "name": "SMS", "account_sid": format!("AC{}", "7".repeat(32)),
                      "from": "+15005550001", "auth_token": secrets[3],
                      "public_url": "https://parley.example.com", "api_base_url": format!("{sim}/2010-04-01")}))
        .send()
        .await
        .expect("create sms");
    assert_eq!(res.status(), StatusCode::CREATED);
    let sms: serde_json::Value = res.json().await.expect("json");
    answers.push_str(&sms.to_string());
    let _ = client
        .post(format!(
            "{}/webhooks/twilio_sms/{}",
            gw.base,
            sms["id"].as_str().unwrap_or_default()
        ))
        .header("x-twilio-signature", "AAAA")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM1&From=%2B1")
        .send()
        .await;
    for path in [
        "/api/v1/channel-accounts".to_owned(),
        format!("/api/v1/channel-accounts/{id}"),
    ] {
        answers.push_str(
            &client
                .get(format!("{}{path}", gw.base))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("text"),
        );
    }
    // A webhook with a bad signature, a verification with the wrong token, metrics.
    let _ = client
        .post(format!("{}/webhooks/whatsapp/{id}", gw.base))
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await;
    let _ = client
        .get(format!(
            "{}/webhooks/whatsapp/{id}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            gw.base
        ))
        .send()
        .await;
    answers.push_str(
        &client
            .get(format!("{}/metrics", gw.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    signal(&gw.child, "-TERM");
    wait_exit(&mut gw.child);
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(logs.len() > 200, "debug logs were written: {logs}");
    let jwt_secret = std::fs::read_to_string(dir.join("jwt-secret")).unwrap_or_default();
    let mut forbidden: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
    forbidden.extend([
        "parley-demo".to_owned(),
        "Wr0ng-Pa55word-Leak".to_owned(),
        admin.clone(),
    ]);
    if jwt_secret.trim().len() >= 16 {
        forbidden.push(jwt_secret.trim().to_owned());
    }
    for f in &forbidden {
        assert!(!logs.contains(f.as_str()), "a secret reached the logs: {f}");
        assert!(
            !answers.contains(f.as_str()) || f == &admin,
            "a secret reached an answer: {f}"
        );
    }
    let _ = std::fs::remove_file(&log_path);
}
