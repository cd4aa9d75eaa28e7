//! A real browser for the console's tests: Debian's `chromium`, driven through
//! `chromedriver` over the W3C WebDriver protocol (plain HTTP + JSON, so no client crate).
//! Each [`Browser`] is its own chromedriver process and headless Chromium profile.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};

/// The WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait`] waits.
const PATIENCE: Duration = Duration::from_secs(20);

/// A headless Chromium.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium (killing only the driver would leave it
        // running); a plain blocking request, as drop cannot wait on a future.
        use std::io::{Read as _, Write as _};
        let addr = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    /// Start chromedriver on a free port and open a 1280×800 headless Chromium.
    /// `PARLEY_CHROMIUM` and `PARLEY_CHROMEDRIVER` override the binaries' paths.
    pub async fn start() -> Browser {
        let driver_bin = binary("PARLEY_CHROMEDRIVER", "chromedriver");
        let mut driver = Command::new(&driver_bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{driver_bin}` ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
            });
        let stdout = driver.stdout.take().expect("driver stdout");
        let port = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.split("on port ").nth(1)
                    && line.contains("started successfully")
                {
                    let port: u16 = rest.trim().trim_end_matches('.').parse().unwrap_or(0);
                    // Keep draining so the driver never blocks on a full pipe.
                    std::thread::spawn(move || {
                        let mut sink = String::new();
                        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                            sink.clear();
                        }
                    });
                    return port;
                }
                line.clear();
            }
            0
        })
        .await
        .expect("driver port");
        assert!(port > 0, "chromedriver did not say its port");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary("PARLEY_CHROMIUM", "/usr/bin/chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,800", "--lang=en-US",
                         "--no-first-run", "--disable-extensions"],
            },
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path} json: {e}"));
        res["value"].clone()
    }

    /// Go to `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": args})),
            )
            .await;
        if let Some(e) = v.get("error").filter(|_| v.get("message").is_some()) {
            panic!("script failed ({e}): {}\n{script}", v["message"]);
        }
        v
    }

    /// The element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Try `attempt` every 100 ms until it succeeds; past [`PATIENCE`], fail naming
    /// `what`, the last attempt's reason and the page's script errors.
    async fn poll<T, Fut>(&self, what: &str, mut attempt: impl FnMut() -> Fut) -> T
    where
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        loop {
            let reason = match attempt().await {
                Ok(v) => return v,
                Err(reason) => reason,
            };
            if start.elapsed() >= PATIENCE {
                let errors = self.script_errors().await;
                panic!("timed out waiting for {what}; {reason}; script errors: {errors:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `css` selects a displayed element; its id.
    pub async fn wait(&self, css: &str) -> String {
        self.poll(&format!("`{css}` to show"), || async move {
            let id = self.find(css).await.ok_or("not on the page")?;
            let shown = self
                .cmd(
                    reqwest::Method::GET,
                    &format!("/element/{id}/displayed"),
                    None,
                )
                .await;
            if shown == Value::Bool(true) {
                Ok(id)
            } else {
                Err("not displayed".to_owned())
            }
        })
        .await
    }

    /// Wait until the text of `css` satisfies `ok`; that text.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let ok = &ok;
        self.poll(&format!("`{css}` to {what}"), || async move {
            let id = self.find(css).await.ok_or("not on the page")?;
            let text = self.text_of(&id).await;
            if ok(&text) {
                Ok(text)
            } else {
                Err(format!("last text: {text:?}"))
            }
        })
        .await
    }

    /// Wait until `script` (a function body) returns `true`.
    pub async fn wait_js(&self, what: &str, script: &str, args: Value) {
        let args = &args;
        self.poll(what, || async move {
            match self.js(script, args.clone()).await {
                Value::Bool(true) => Ok(()),
                other => Err(format!("the script returned {other}")),
            }
        })
        .await
    }

    /// The rendered text of element `id`.
    pub async fn text_of(&self, id: &str) -> String {
        self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Send `action` with `body` to what `css` selects, waiting for it to show, and again
    /// if the page replaced the element between finding it and acting on it.
    async fn act_on(&self, css: &str, action: &str, body: Value) {
        let body = &body;
        self.poll(&format!("to {action} `{css}`"), || async move {
            let id = self.wait(css).await;
            let v = self
                .cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/{action}"),
                    Some(body.clone()),
                )
                .await;
            match v.get("error").and_then(Value::as_str) {
                None => Ok(()),
                Some(error) => Err(format!("{error}: {}", v["message"])),
            }
        })
        .await
    }

    /// Click what `css` selects.
    pub async fn click(&self, css: &str) {
        self.act_on(css, "click", json!({})).await;
    }

    /// Type `text` into what `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.act_on(css, "value", json!({"text": text})).await;
    }

    /// Empty the field `css` selects.
    pub async fn clear(&self, css: &str) {
        self.act_on(css, "clear", json!({})).await;
    }

    /// Give a file input `css` the file at `path`.
    pub async fn upload(&self, css: &str, path: &std::path::Path) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no `{css}`"));
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": path.to_string_lossy()})),
        )
        .await;
    }

    /// Choose the option with value `value` in select `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.wait(css).await;
        self.js(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change', {bubbles: true})); return s.value;",
            json!([css, value]),
        )
        .await;
    }

    /// Set the window's size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A PNG of the page.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot base64")
    }

    /// The browser console's messages at level SEVERE (script errors).
    pub async fn script_errors(&self) -> Vec<String> {
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        let res: Value = match self
            .http
            .post(&url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        res["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}
