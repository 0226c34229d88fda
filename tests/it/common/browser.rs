//! A real headless Chromium driven through WebDriver (chromedriver and
//! fantoccini), for the admin page's tests. Each browser has its own
//! chromedriver, profile and window; screenshots go to
//! `target/screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A desktop window and a phone's.
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Where screenshots are saved: `target/screenshots/` beside the test
/// binary's `target/debug/deps/`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("screenshots")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `size`;
    /// `None` (the test says `skipped`) when the machine has neither,
    /// unless `MIGRATE_TEST_REQUIRE_BROWSER` is set (`.ci/run` sets it),
    /// when a missing browser fails the test.
    pub fn start(size: (u32, u32)) -> Option<Browser> {
        let missing = "the admin page's tests need Chromium and ChromeDriver: install Debian's \
                       `chromium` and `chromium-driver` (.ci/run does)";
        let (Some(driver_path), Some(chromium)) = (
            find_program(&["chromedriver"]),
            find_program(&["chromium", "chromium-browser"]),
        ) else {
            if std::env::var_os("MIGRATE_TEST_REQUIRE_BROWSER").is_some() {
                panic!("{missing}");
            }
            println!("skipped: {missing}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // The tests may run as root, where the sandbox cannot.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    // Nothing but the page under test goes on the network.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={},{}", size.0, size.1),
                ],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = runtime.block_on(async {
            let started = Instant::now();
            loop {
                let mut builder =
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
                builder.capabilities(capabilities.clone());
                match builder.connect(&url).await {
                    Ok(client) => break client,
                    Err(err) if started.elapsed() > Duration::from_secs(30) => {
                        panic!("no WebDriver session within 30 s: {err}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let browser = Browser {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
        };
        browser.resize(size);
        Some(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .unwrap()
            .to_string()
    }

    pub fn resize(&self, (width, height): (u32, u32)) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// The visible text of the first element `css` matches ("" if none).
    pub fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            vec![json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Whether `css` matches an element that is shown.
    pub fn shown(&self, css: &str) -> bool {
        self.exec(
            "const e = document.querySelector(arguments[0]); \
             return !!e && !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);",
            vec![json!(css)],
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// Waits up to `timeout` for `check`, saying `what` (and the page's
    /// text) when it never holds.
    pub fn wait(&self, timeout: Duration, what: &str, mut check: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        while !check(self) {
            if start.elapsed() > timeout {
                panic!(
                    "waited {timeout:?} for {what}; the page says:\n{}",
                    self.text("body")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `css` to show text containing `fragment`.
    pub fn wait_text(&self, css: &str, fragment: &str) -> String {
        let mut last = String::new();
        self.wait(
            Duration::from_secs(20),
            &format!("`{css}` to say `{fragment}`"),
            |b| {
                last = b.text(css);
                last.contains(fragment)
            },
        );
        last
    }

    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|err| panic!("no `{css}`: {err}"));
            element
                .click()
                .await
                .unwrap_or_else(|err| panic!("cannot click `{css}`: {err}"));
        });
    }

    /// Types `text` into the element `css` (which takes the focus).
    pub fn type_into(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.unwrap();
            element.send_keys(text).await.unwrap();
        });
    }

    /// Sends keys to whatever has the focus, as a keyboard would.
    pub fn keys(&self, keys: &str) {
        self.runtime.block_on(async {
            let element = self.client().active_element().await.unwrap();
            element.send_keys(keys).await.unwrap();
        });
    }

    /// The id of the element with the focus ("" if it has none).
    pub fn focused(&self) -> String {
        self.exec(
            "return document.activeElement ? document.activeElement.id : '';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Presses Tab until the element `id` has the focus, at most `limit`
    /// times; the ids passed on the way.
    pub fn tab_to(&self, id: &str, limit: usize) -> Vec<String> {
        let mut passed = Vec::new();
        for _ in 0..limit {
            self.keys(&char::from(fantoccini::key::Key::Tab).to_string());
            let now = self.focused();
            if now == id {
                return passed;
            }
            passed.push(now);
        }
        panic!("Tab never reached #{id}; passed {passed:?}");
    }

    /// Saves a screenshot as `target/screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

pub const ENTER: fantoccini::key::Key = fantoccini::key::Key::Enter;
pub const ESCAPE: fantoccini::key::Key = fantoccini::key::Key::Escape;

/// A key as the text `send_keys` takes.
pub fn key(key: fantoccini::key::Key) -> String {
    char::from(key).to_string()
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
