//! Headless Chromium for the dashboard tests: starts `chromedriver` on a free port and drives
//! one session through `fantoccini` (plain HTTP to the driver on loopback, so no TLS stack).
//! Adds only what the tests need on top: waits that fail with the page's text, and
//! screenshots saved to files. The driver process is killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

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

/// A chromedriver process and one headless Chromium session in it.
pub struct Browser {
    /// The session; `None` once closed.
    client: Option<Client>,
    driver: Child,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on `port` (its log goes to `log`) and a headless Chromium session
    /// that accepts the cluster's self-signed certificate.
    pub async fn start(port: u16, log: &Path) -> Browser {
        require_chromium();
        let file = std::fs::File::create(log).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            client: None,
            driver,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 30s; log:\n{}",
                browser.driver_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,900"],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not start Chromium: {e}; log:\n{}",
                    browser.driver_log()
                )
            });
        browser.client = Some(client);
        browser
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The session, for the commands fantoccini offers directly (click, send_keys, execute).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client().current_url().await.unwrap().to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        match self.client().find(Locator::Css(css)).await {
            Ok(element) => Some(element),
            Err(e) if e.is_no_such_element() => None,
            Err(e) => panic!("find {css:?}: {e}"),
        }
    }

    /// The rendered text of the first element matching `css` (empty when there is none, or
    /// when the page replaced it between finding and reading it).
    pub async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(element) => element.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Waits up to `timeout` for an element matching `css`.
    ///
    /// Chromium abandons a page load with `ERR_NETWORK_CHANGED` when another test creates or
    /// removes network interfaces (nodes' bridges and namespaces) meanwhile: such a page is
    /// loaded again.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            let body = self.text("body").await;
            if Instant::now() >= deadline {
                panic!(
                    "no element {css:?} on {} after {timeout:?}; the page's text:\n{body}",
                    self.current_url().await,
                );
            }
            if body.contains("ERR_NETWORK_CHANGED") {
                let _ = self.client().refresh().await;
            }
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

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.client()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client().screenshot().await.expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG"),
            "the screenshot is not a PNG ({} bytes)",
            png.len()
        );
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Ends the session (Chromium exits); the driver goes when dropped.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
