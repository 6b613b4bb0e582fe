//! A small W3C WebDriver client for the dashboard test: starts `chromedriver` on a free port
//! and drives one headless Chromium session over HTTP (reqwest). Only the commands the test
//! uses; the process is killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fails the test, naming what to install, when Chromium or its driver is missing.
pub fn require_chromium() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the dashboard test drives headless Chromium; install it with \
             `apt-get install chromium chromium-driver` (scripts/install-deps.sh test)"
        );
    }
}

pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    log: PathBuf,
}

pub struct Session {
    http: reqwest::Client,
    url: String,
}

#[derive(Clone, Debug)]
pub struct Element(String);

impl Driver {
    /// Starts chromedriver on `port` (its log goes to `log`) and waits until it is ready.
    pub async fn start(port: u16, log: &Path) -> Driver {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start in 30s; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A headless Chromium session that accepts the cluster's self-signed certificate.
    pub async fn session(&self) -> Session {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,900"],
            },
        }}});
        let response = self
            .http
            .post(format!("{}/session", self.base))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session");
        let value: Value = response.json().await.unwrap();
        let id = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver did not start Chromium: {value}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .to_string();
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("WebDriver request");
        let value: Value = response.json().await.unwrap_or(Value::Null);
        value["value"].clone()
    }

    fn check(value: &Value, what: &str) {
        assert!(
            value.get("error").is_none(),
            "WebDriver {what} failed: {value}"
        );
    }

    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        Self::check(&v, &format!("navigate to {url}"));
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT_KEY].as_str().map(|id| Element(id.to_string()))
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {} after {timeout:?}; the page's text:\n{}",
                self.current_url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `timeout` until the text of the element matching `css` satisfies `pred`.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await;
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the text of {css:?} on {} did not become what was expected in {timeout:?}; it is:\n{text}\nthe page's text:\n{}",
                self.current_url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The rendered text of the first element matching `css` (empty when there is none).
    pub async fn text(&self, css: &str) -> String {
        let Some(e) = self.find(css).await else {
            return String::new();
        };
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn click(&self, e: &Element) {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/click", e.0),
                Some(json!({})),
            )
            .await;
        Self::check(&v, "click");
    }

    pub async fn clear(&self, e: &Element) {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/clear", e.0),
                Some(json!({})),
            )
            .await;
        Self::check(&v, "clear");
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/value", e.0),
                Some(json!({"text": text})),
            )
            .await;
        Self::check(&v, "send keys");
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a screenshot"))
            .expect("a base64 screenshot");
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    pub async fn close(&self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}
