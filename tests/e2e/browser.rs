//! Headless Chromium for page tests, driven over WebDriver (chromedriver + fantoccini).
//!
//! Each `Browser` runs its own chromedriver on a free port with a fresh profile and download
//! directory, and saves screenshots under `target/browser-artifacts/<test>/`. Chromium and
//! chromedriver come from Debian's packages (`scripts/browser` installs them); a missing
//! install fails the test with a message saying so, rather than skipping it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a wait for something on a page may take before the test fails. Generous: the
/// machine is small and shared.
pub const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

pub struct Browser {
    client: Option<Client>,
    driver: Child,
    base: String,
    /// Scratch directory of this browser (profile and downloads), removed on drop.
    scratch: PathBuf,
    /// Where the browser saves downloads.
    pub downloads: PathBuf,
    /// Where screenshots go: `target/browser-artifacts/<test>/`.
    pub artifacts: PathBuf,
    shots: usize,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/` of this build (the parent of Cargo's test scratch directory).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target tmp dir has a parent")
        .to_path_buf()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `test` names the artifacts
    /// directory; `base` is the URL that `goto` paths are relative to.
    pub async fn start(test: &str, base: &str) -> Browser {
        for (bin, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: browser tests need Debian's {what} package; run scripts/browser \
                 (scripts/test does) to install chromium and chromium-driver"
            );
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("browser")
            .join(format!("{test}-{}", &id[..8]));
        let profile = scratch.join("profile");
        let downloads = scratch.join("downloads");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::create_dir_all(&downloads).unwrap();
        let artifacts = target_dir().join("browser-artifacts").join(test);
        // Only this run's pictures: a stale failure shot would mislead.
        let _ = std::fs::remove_dir_all(&artifacts);
        std::fs::create_dir_all(&artifacts).unwrap();
        let port = free_port();
        let log = std::fs::File::create(artifacts.join("chromedriver.log")).unwrap();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group, so the browser it starts goes down with it on drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("chromedriver starts");
        let mut browser = Browser {
            client: None,
            driver,
            base: base.trim_end_matches('/').to_owned(),
            scratch,
            downloads,
            artifacts,
            shots: 0,
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        browser.wait_for_driver(&webdriver).await;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1280,900",
                ],
                "prefs": {
                    "download.default_directory": browser.downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::rustls()
            .expect("a WebDriver client")
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session: {e}; chromedriver log in {}",
                    browser.artifacts.display()
                )
            });
        browser.client = Some(client);
        browser
    }

    async fn wait_for_driver(&mut self, webdriver: &str) {
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{webdriver}/status")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}); log in {}",
                    self.artifacts.display()
                );
            }
            assert!(start.elapsed() < WAIT, "chromedriver did not come up");
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a live session")
    }

    /// Opens `path` (relative to the base URL, or a full URL).
    pub async fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.client().goto(&url).await.expect("navigation");
    }

    /// The current path (and query) of the page.
    pub async fn path(&self) -> String {
        let url = self.client().current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the current path is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let start = Instant::now();
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("still at {now}, waiting for {path}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a displayed element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Ok(all) = self.client().find_all(Locator::Css(css)).await {
                for e in all {
                    if e.is_displayed().await.unwrap_or(false) {
                        return e;
                    }
                }
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("no visible element matches {css}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no displayed element matches `css`.
    pub async fn wait_gone(&self, css: &str) {
        let start = Instant::now();
        loop {
            let mut visible = false;
            if let Ok(all) = self.client().find_all(Locator::Css(css)).await {
                for e in all {
                    visible |= e.is_displayed().await.unwrap_or(false);
                }
            }
            if !visible {
                return;
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("{css} is still visible")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the first visible, enabled element matching `css`.
    pub async fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let e = self.wait_for(css).await;
            // Centre it first, so sticky headers and bars do not cover it.
            if let Ok(arg) = serde_json::to_value(&e) {
                let _ = self
                    .client()
                    .execute("arguments[0].scrollIntoView({block: 'center'})", vec![arg])
                    .await;
            }
            if e.is_enabled().await.unwrap_or(false) && e.click().await.is_ok() {
                return;
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("could not click {css}")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces the value of the input or textarea matching `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Chooses the option with `value` in the select matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let e = self.wait_for(css).await;
        e.select_by_value(value).await.unwrap();
    }

    /// The visible text of the first visible element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap_or_default()
    }

    /// Waits until the element matching `css` shows text containing `needle`, and returns
    /// its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(all) = self.client().find_all(Locator::Css(css)).await {
                for e in all {
                    if let Ok(t) = e.text().await {
                        if t.contains(needle) {
                            return t;
                        }
                        last = t;
                    }
                }
            }
            if start.elapsed() > WAIT {
                self.fail(&format!(
                    "{css} never showed {needle:?} (last text: {last:?})"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a `confirm()`/`alert()` dialog, accepts it, and returns its text.
    pub async fn accept_dialog(&self) -> String {
        let start = Instant::now();
        loop {
            if let Ok(text) = self.client().get_alert_text().await {
                self.client()
                    .accept_alert()
                    .await
                    .expect("the dialog closes");
                return text;
            }
            if start.elapsed() > WAIT {
                self.fail("no dialog opened").await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many elements match `css` right now.
    pub async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or(0)
    }

    /// Waits until exactly `n` elements match `css`.
    pub async fn wait_for_count(&self, css: &str, n: usize) {
        let start = Instant::now();
        loop {
            let now = self.count(css).await;
            if now == n {
                return;
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("{now} elements match {css}, waiting for {n}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .expect("script runs")
    }

    /// Saves a screenshot as `<artifacts>/<nn>-<name>.png` and returns its path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shots += 1;
        let path = self.artifacts.join(format!("{:02}-{name}.png", self.shots));
        let png = self.client().screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits for a finished download whose file name satisfies `matches`, and returns its
    /// path (Chromium writes `*.crdownload` until the file is complete).
    pub async fn wait_for_download(&self, matches: impl Fn(&str) -> bool) -> PathBuf {
        let start = Instant::now();
        loop {
            for entry in std::fs::read_dir(&self.downloads).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".crdownload") && matches(&name) {
                    return entry.path();
                }
            }
            if start.elapsed() > WAIT {
                let names: Vec<String> = std::fs::read_dir(&self.downloads)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                self.fail(&format!("no matching download (have {names:?})"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test, after saving a screenshot and the page's HTML next to the others.
    pub async fn fail(&self, why: &str) -> ! {
        let stem = self.artifacts.join("failure");
        if let Ok(png) = self.client().screenshot().await {
            let _ = std::fs::write(stem.with_extension("png"), png);
        }
        if let Ok(html) = self.client().source().await {
            let _ = std::fs::write(stem.with_extension("html"), html);
        }
        panic!("{why}; screenshot and page in {}", self.artifacts.display());
    }

    /// Ends the session cleanly (drop also works, more abruptly).
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: chromedriver and the browser it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
