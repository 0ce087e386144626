//! The web console in a real headless Chromium (Debian's `chromium` + `chromium-driver`), driven
//! over WebDriver by `fantoccini`, against the real `wiz-backend` and `wiz-gateway` binaries:
//! everything a person does on the screens of issue 5, through the gateway's one origin.
//!
//! Each scenario saves a screenshot into `tests/artifacts/` when it fails. The binaries can be
//! overridden with `WIZ_CHROMIUM` and `WIZ_CHROMEDRIVER`.

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Bytes, http::HeaderMap, routing::post, Router};
use fantoccini::{elements::Element, key::Key, Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

use crate::harness::{free_port, Options, Stack, ADMIN_EMAIL, ADMIN_PASSWORD};

/// One browser at a time: the machine has two cores, and Chromium plus two servers per test is
/// plenty. Scenarios still run in any order and each has its own stack.
static ONE_BROWSER: Mutex<()> = Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);

fn tool(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's `chromium` and `chromium-driver` (the test command does), \
         or point {env} at it",
        path.display()
    );
    path
}

/// chromedriver on a free port plus one fresh Chromium profile, closed on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = tool("WIZ_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("WIZ_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver needs a moment to listen: retry the session until the deadline.
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The Chromium processes belong to chromedriver's session; killing the driver ends them.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The console as a person uses it: CSS selectors, clicks, typing, waiting for what appears.
#[derive(Clone)]
struct Page {
    c: Client,
    base: String,
}

impl Page {
    async fn goto(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// The first element matching `css`, waiting for it to appear and be displayed.
    async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(el) = self.c.find(Locator::Css(css)).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return el;
                }
            }
            assert!(Instant::now() < deadline, "nothing visible matches {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let el = self.find(css).await;
            // Retried: a re-render can replace the element between finding and clicking.
            match el.click().await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("clicking {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("typing");
    }

    /// The rendered text (`innerText`). WebDriver's own "get text" reads nothing from the
    /// scrolling `<pre>` blocks, so the DOM property is used.
    async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("innerText")
            .await
            .expect("text")
            .unwrap_or_default()
    }

    async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// Waits until the text of `css` contains `wanted`; returns that text.
    async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.c.find(Locator::Css(css)).await {
                last = el
                    .prop("innerText")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                if last.contains(wanted) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {wanted:?}; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    async fn source(&self) -> String {
        self.c.source().await.expect("page source")
    }

    async fn log_in(&self) {
        self.goto("/console").await;
        self.fill("input[type=email]", ADMIN_EMAIL).await;
        self.fill("input[type=password]", ADMIN_PASSWORD).await;
        self.click("form.login-form button[type=submit]").await;
        self.find(".topbar").await;
    }

    /// Creates a key through the dialog; returns (key, secret) as the one-time panel shows them.
    async fn create_key(&self, name: &str, rate_per_minute: Option<u32>) -> (String, String) {
        self.goto("/console#/keys").await;
        self.click("[data-testid=create-key]").await;
        self.fill("[data-testid=key-name]", name).await;
        if let Some(rate) = rate_per_minute {
            self.fill("[data-testid=key-rate]", &rate.to_string()).await;
        }
        self.click("[data-testid=key-submit]").await;
        let key = self.value("[data-testid=new-key]").await;
        let secret = self.value("[data-testid=new-secret]").await;
        assert!(key.starts_with("pk_live_") && key.len() == 40, "{key}");
        assert!(secret.starts_with("sk_live_") && secret.len() == 48);
        (key, secret)
    }

    /// In the Playground: paste key + secret, pick `op`, send, wait for the answer's status.
    async fn playground_send(&self, key: &str, secret: &str, op: &str) -> String {
        if self.value("[data-testid=pg-key]").await != key {
            self.fill("[data-testid=pg-key]", key).await;
        }
        if self.value("[data-testid=pg-secret]").await != secret {
            self.fill("[data-testid=pg-secret]", secret).await;
        }
        self.click(&format!("label.seg:has([data-testid=pg-op-{op}])"))
            .await;
        // Mark the old answer so we wait for the new one.
        self.js("const s = document.querySelector('[data-testid=pg-status]'); if (s) s.removeAttribute('data-testid');")
            .await;
        self.click("[data-testid=pg-send]").await;
        self.text("[data-testid=pg-status]").await
    }
}

/// Runs one scenario on a fresh stack and browser; on failure saves a screenshot (and the page
/// and server logs' paths) before failing the test.
async fn scenario<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Page, Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario_with(name, Options::default(), body).await
}

/// [`scenario`] on a stack started with `options`.
async fn scenario_with<F, Fut>(name: &str, options: Options, body: F)
where
    F: FnOnce(Page, Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _one = ONE_BROWSER.lock().await;
    // Shared with the scenario, so its logs outlive a panic in it.
    let stack = Arc::new(Stack::start_with(options).await);
    let browser = Browser::start().await;
    let page = Page {
        c: browser.client.clone(),
        base: stack.gateway_url(),
    };
    let logs_dir = stack.dir.path().to_path_buf();
    let outcome = AssertUnwindSafe(body(page.clone(), Arc::clone(&stack)))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join(format!("console-{name}.png"));
        match page.c.screenshot().await {
            Ok(png) => {
                let _ = std::fs::write(&shot, png);
                eprintln!("screenshot of the failure: {}", shot.display());
            }
            Err(e) => eprintln!("no screenshot: {e}"),
        }
        if let Ok(html) = page.c.source().await {
            let _ = std::fs::write(dir.join(format!("console-{name}.html")), html);
        }
        for log in ["wiz-backend.log", "wiz-gateway.log"] {
            if let Ok(text) = std::fs::read_to_string(logs_dir.join(log)) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- last lines of {log} ---");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        drop(browser);
        std::panic::resume_unwind(panic);
    }
    let _ = page.c.close().await;
}

#[tokio::test]
async fn console_login_logout_and_session_expiry() {
    scenario("login", |page, stack| async move {
        // Served with the strict headers, through the gateway.
        let response = reqwest::get(format!("{}/console", stack.gateway_url()))
            .await
            .unwrap();
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));

        page.goto("/console").await;
        page.fill("input[type=email]", ADMIN_EMAIL).await;
        page.fill("input[type=password]", "wrong password").await;
        page.click("form.login-form button[type=submit]").await;
        page.wait_text(".login-status", "do not match").await;

        page.log_in().await;
        page.wait_text("[data-testid=plan-notice]", "Plan Requirement")
            .await;
        page.wait_text("[data-testid=plan-notice]", "Wiz Pro").await;
        page.wait_text("[data-testid=step-1-status]", "To do").await;
        let main = page.text("main").await;
        for text in [
            "Generate Keys",
            "Test in Playground",
            "Configure Webhooks",
            "API & Webhook Architecture",
            "Webhook Delivery",
            "Treat API keys like passwords",
        ] {
            assert!(main.contains(text), "overview lacks {text:?}");
        }

        // The session disappears (expiry, or a logout elsewhere): the next screen that asks the
        // server goes back to the login form and says why.
        page.c.delete_cookie("wiz_session").await.unwrap();
        page.click("a.nav-link[data-route=keys]").await;
        page.wait_text(".login-status", "session has expired").await;
        // Logging in again returns to where the user was.
        page.fill("input[type=email]", ADMIN_EMAIL).await;
        page.fill("input[type=password]", ADMIN_PASSWORD).await;
        page.click("form.login-form button[type=submit]").await;
        page.wait_text("main h1", "API Keys").await;

        page.click(".topbar .account button").await;
        page.wait_text(".login-status", "logged out").await;
        page.goto("/console#/keys").await;
        page.find("input[type=email]").await;

        // An account on the free plan is told why, and offered nothing that would fail.
        let out = stack.backend_cli(&[
            "accounts",
            "create",
            "--name",
            "Corner shop",
            "--plan",
            "free",
            "--admin-email",
            "free@example.test",
            "--admin-password",
            "free plan password",
        ]);
        assert!(out.status.success(), "{out:?}");
        page.fill("input[type=email]", "free@example.test").await;
        page.fill("input[type=password]", "free plan password")
            .await;
        page.click("form.login-form button[type=submit]").await;
        page.wait_text("[data-testid=plan-notice]", "Free").await;
        page.wait_text("main", "Keys can be created once").await;
        let offered = page
            .js("return !!document.querySelector('[data-testid=create-key]')")
            .await;
        assert_eq!(
            offered,
            json!(false),
            "free plan must not offer key creation"
        );
        page.goto("/console#/playground").await;
        page.wait_text("main", "unavailable on this plan").await;
        assert_eq!(
            page.js("return !!document.querySelector('[data-testid=pg-send]')")
                .await,
            json!(false)
        );
        page.goto("/console#/webhooks").await;
        page.wait_text("main", "once the account is on Wiz Bot")
            .await;
        assert_eq!(
            page.js("return !!document.querySelector('[data-testid=add-webhook]')")
                .await,
            json!(false)
        );
    })
    .await;
}

#[tokio::test]
async fn console_key_secret_is_shown_once_and_names_stay_text() {
    scenario("keys", |page, _stack| async move {
        page.log_in().await;
        let xss = "<img src=x onerror=alert(1)>";
        page.goto("/console#/keys").await;
        // Keyboard: the dialog takes focus, Escape closes it, focus returns to the opener.
        page.click("[data-testid=create-key]").await;
        let focused = page
            .js("return document.activeElement.dataset.testid || ''")
            .await;
        assert_eq!(focused, json!("key-name"));
        page.find("[data-testid=key-name]")
            .await
            .send_keys(&char::from(Key::Escape).to_string())
            .await
            .unwrap();
        let state = page
            .js("return [document.querySelectorAll('dialog').length, document.activeElement.dataset.testid || '']")
            .await;
        assert_eq!(state, json!([0, "create-key"]));
        page.click("[data-testid=create-key]").await;
        page.fill("[data-testid=key-name]", xss).await;
        // The whitelist editor checks entries as they are typed.
        page.click(".wl button.btn").await;
        page.fill("[data-testid=whitelist-entry]", "10.0.0.300").await;
        page.wait_text(".wl-row .field-error", "Not a valid IPv4").await;
        let disabled = page.js("return document.querySelector('[data-testid=key-submit]').disabled").await;
        assert_eq!(disabled, json!(true), "invalid whitelist must block submit");
        page.fill("[data-testid=whitelist-entry]", "127.0.0.0/8").await;
        page.click(".wl button.btn").await;
        page.fill(".wl-row:nth-child(2) [data-testid=whitelist-entry]", "::1")
            .await;
        assert_eq!(page.value("[data-testid=key-rate]").await, "60");
        assert_eq!(page.value("[data-testid=key-daily]").await, "1000");
        page.click("[data-testid=key-submit]").await;

        let secret = page.value("[data-testid=new-secret]").await;
        assert!(secret.starts_with("sk_live_"), "{secret}");
        page.wait_text(".dialog-credentials", "Only shown once").await;
        // Copy puts the secret on the clipboard: paste it somewhere and compare.
        page.click("button[aria-label='Copy API secret']").await;
        page.wait_text("button[aria-label='Copy API secret']", "Copied")
            .await;
        page.click("[data-testid=credentials-done]").await;
        page.goto("/console#/playground").await;
        let field = page.find("[data-testid=pg-secret]").await;
        field.click().await.unwrap();
        field
            .send_keys(&format!("{}v", char::from(Key::Control)))
            .await
            .unwrap();
        assert_eq!(page.value("[data-testid=pg-secret]").await, secret);

        // After a reload the secret is nowhere: not on the page, not in storage.
        page.goto("/console#/keys").await;
        page.c.refresh().await.unwrap();
        page.find("[data-testid=keys-table]").await;
        assert!(!page.source().await.contains(&secret));
        let stored = page
            .js("return JSON.stringify([localStorage.length, sessionStorage.length, location.href])")
            .await;
        assert_eq!(
            stored.as_str().unwrap(),
            &format!("[0,0,\"{}/console#/keys\"]", page.base)
        );

        // The hostile name is shown as text: no <img> was created, no script ran.
        let name = page.text("[data-testid=keys-table] .key-name").await;
        assert_eq!(name, xss);
        assert_eq!(
            page.js("return document.querySelectorAll('img').length").await,
            json!(0)
        );
        assert!(page.c.get_alert_text().await.is_err(), "an alert is open");
        let chips = page.text("[data-testid=keys-table] .chips").await;
        assert!(chips.contains("127.0.0.0/8") && chips.contains("::1"), "{chips}");
        page.wait_text("[data-testid=keys-table] .meter-text", "0 / 1")
            .await;
    })
    .await;
}

#[tokio::test]
async fn console_playground_sends_live_and_shows_limits_429_and_revoked_keys() {
    scenario("playground", |page, stack| async move {
        page.log_in().await;
        let (key, secret) = page.create_key("Rate limited", Some(3)).await;
        page.click("[data-testid=credentials-done]").await;
        stack.wait_synced().await;

        page.goto("/console#/playground").await;
        let status = page.playground_send(&key, &secret, "text").await;
        assert!(status.starts_with("202"), "{status}");
        // The limit headers are listed and highlighted.
        let highlighted = page
            .js("return [...document.querySelectorAll('[data-testid=pg-headers] tr.hl th')].map(t => t.textContent).join(' ')")
            .await;
        let highlighted = highlighted.as_str().unwrap();
        for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-dailylimit-remaining"] {
            assert!(highlighted.contains(header), "{header} not highlighted: {highlighted}");
        }
        page.wait_text("[data-testid=pg-limits]", "2 of 3 left").await;
        page.wait_text("[data-testid=pg-response-body]", "msg_").await;
        // The snippets show the call with the secret masked.
        let snippet = page.text("[data-testid=pg-snippet]").await;
        assert!(snippet.contains("curl -X POST") && snippet.contains(&key));
        assert!(!snippet.contains(&secret) && snippet.contains("sk_live_••"));

        page.playground_send(&key, &secret, "contacts").await;
        page.playground_send(&key, &secret, "inbound").await;
        let status = page.playground_send(&key, &secret, "text").await;
        assert!(status.starts_with("429"), "{status}");
        let retry = page.text("[data-testid=pg-retry-after]").await;
        assert!(retry.contains("second"), "{retry}");
        page.wait_text("[data-testid=pg-response]", "Retry-After:").await;

        // Revoke it on the API Keys screen; the Playground still holds the pasted pair in
        // memory, warns, and the gateway refuses it.
        page.goto("/console#/keys").await;
        page.click("button[aria-label='Revoke Rate limited']").await;
        page.wait_text("dialog", "cannot be undone").await;
        page.click("dialog .btn-danger").await;
        page.wait_text("[data-testid=keys-table]", "Revoked").await;
        stack.wait_synced().await;
        page.goto("/console#/playground").await;
        page.wait_text(".field-note", "revoked").await;
        let status = page.playground_send(&key, &secret, "text").await;
        assert!(status.starts_with("401"), "{status}");
        page.wait_text("[data-testid=pg-response]", "key_revoked").await;
    })
    .await;
}

/// Issue 13: the user only selects a key; the console gets a short-lived Playground credential for
/// it (session + CSRF) and the gateway applies and counts that key's limits. The credential never
/// lands in a URL, the browser's storage or a log line.
#[tokio::test]
async fn console_playground_by_selection_needs_no_paste() {
    scenario("playground-selection", |page, stack| async move {
        // Keys made elsewhere: the console never saw their secrets.
        let admin = stack.admin().await;
        admin.create_key(json!({"name": "Other key"})).await;
        let chosen = admin
            .create_key(json!({"name": "Chosen key", "rate_limit_per_minute": 5}))
            .await;
        stack.wait_synced().await;

        page.log_in().await;
        page.goto("/console#/playground").await;
        page.click(&format!(
            "[data-testid=pg-key-select] option[value='{}']",
            chosen.id
        ))
        .await;
        page.wait_text("[data-testid=pg-select-note]", "nothing to paste")
            .await;
        assert_eq!(page.value("[data-testid=pg-key]").await, "");
        assert_eq!(page.value("[data-testid=pg-secret]").await, "");
        page.click("label.seg:has([data-testid=pg-op-text])").await;
        page.click("[data-testid=pg-send]").await;
        let status = page.text("[data-testid=pg-status]").await;
        assert!(status.starts_with("202"), "{status}");
        page.wait_text("[data-testid=pg-limits]", "4 of 5 left").await;
        let highlighted = page
            .js("return [...document.querySelectorAll('[data-testid=pg-headers] tr.hl th')].map(t => t.textContent).join(' ')")
            .await;
        let highlighted = highlighted.as_str().unwrap();
        for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-dailylimit-remaining", "ratelimit-policy"] {
            assert!(highlighted.contains(header), "{header} not highlighted: {highlighted}");
        }
        page.wait_text("[data-testid=pg-response-body]", "msg_").await;
        // The snippet shows what an integration sends: the key (prefix here) and a masked secret.
        let snippet = page.text("[data-testid=pg-snippet]").await;
        assert!(snippet.contains(&chosen.key[..12]) && !snippet.contains("wpg_"), "{snippet}");

        // A second send reuses the credential and counts against the same key.
        page.js("document.querySelector('[data-testid=pg-status]').removeAttribute('data-testid')")
            .await;
        page.click("[data-testid=pg-send]").await;
        assert!(page.text("[data-testid=pg-status]").await.starts_with("202"));
        page.wait_text("[data-testid=pg-limits]", "3 of 5 left").await;
        // The key's own credentials see the same window: the Playground's requests counted.
        let reply = stack.api(&chosen).get("/v1/contacts").await;
        reply.expect(200);
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("2"));

        let traces = page
            .js("return [location.href, JSON.stringify({...localStorage}), JSON.stringify({...sessionStorage}), document.cookie, performance.getEntriesByType('resource').map(e => e.name).join(' ')].join('\\n')")
            .await;
        let traces = traces.as_str().unwrap();
        assert!(!traces.contains("wpg_"), "credential in a URL or storage: {traces}");
        let logs = stack.logs();
        assert!(!logs.contains("wpg_"), "a log line holds a Playground credential");
    })
    .await;
}

/// A webhook receiver: a small axum app on 127.0.0.1:0 handing what it got to the test.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

#[tokio::test]
async fn console_webhook_test_event_shows_in_the_delivery_log() {
    scenario("webhooks", |page, _stack| async move {
        let (url, mut received) = receiver().await;
        page.log_in().await;
        page.goto("/console#/webhooks").await;
        page.click("[data-testid=add-webhook]").await;
        page.fill("[data-testid=webhook-url]", "not a url").await;
        page.click("[data-testid=webhook-submit]").await;
        page.wait_text(".dialog .field-error", "Not a valid URL").await;
        page.fill("[data-testid=webhook-url]", &url).await;
        page.fill("[data-testid=webhook-description]", "<b>CRM</b>")
            .await;
        page.click("[data-testid=webhook-submit]").await;
        let secret = page.value("[data-testid=webhook-secret]").await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        page.click("[data-testid=secret-done]").await;
        page.wait_text("[data-testid=webhook-list]", &url).await;
        page.wait_text(".hook-desc", "<b>CRM</b>").await;

        page.click("[data-testid=send-test]").await;
        let outcome = page.wait_text("[data-testid=test-outcome]", "Test event").await;
        // On failure, name the endpoint as stored next to the receiver's address, so a wrong
        // target can be told from a receiver that was not there.
        assert!(
            outcome.contains("Test event delivered"),
            "test event to {url} not delivered: {outcome:?}; endpoints as listed: {:?}",
            page.text("[data-testid=webhook-list] .hook-url").await
        );
        let (headers, _body) = tokio::time::timeout(WAIT, received.recv())
            .await
            .expect("the receiver got the test event")
            .expect("channel open");
        assert!(headers
            .get("webhook-signature")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("v1,")));
        // The attempt is in the log with its status code and latency.
        page.wait_text("[data-testid=last-attempt]", "HTTP 200").await;
        page.wait_text("[data-testid=last-attempt]", "ms").await;
        assert_eq!(page.text("[data-testid=attempt-count]").await, "1");
        page.click(".attempts-row summary").await;
        page.wait_text(".attempts", "ok").await;
        // Verification snippets per language.
        for tab in ["Python", "Node.js", "Go"] {
            let found = page
                .js(&format!(
                    "return [...document.querySelectorAll('[role=tab]')].some(t => t.textContent === '{tab}')"
                ))
                .await;
            assert_eq!(found, json!(true), "no {tab} snippet");
        }
    })
    .await;
}

/// The Channel screen: WhatsApp Cloud API settings save, come back masked (the form keeps no
/// credential), and "Test connection" shows what the (fake) Graph API answered.
#[tokio::test]
async fn console_channel_settings_save_masked_and_test_connection() {
    use crate::whatsapp::{start_fake, APP_SECRET, PHONE_NUMBER_ID, TOKEN, VERSION, WABA_ID};
    let (graph_url, _fake) = start_fake().await;
    let options = Options::default()
        .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__GRAPH_BASE_URL", &graph_url)
        .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__API_VERSION", VERSION);
    scenario_with("channel", options, |page, stack| async move {
        page.log_in().await;
        page.goto("/console#/channel").await;
        page.wait_text("[data-testid=channel-stored]", "Simulated")
            .await;
        page.click("[data-testid=channel-kind-cloud]").await;
        page.fill("[data-testid=channel-phone_number_id]", PHONE_NUMBER_ID)
            .await;
        page.fill("[data-testid=channel-waba_id]", WABA_ID).await;
        page.fill("[data-testid=channel-access_token]", TOKEN).await;
        page.fill("[data-testid=channel-app_secret]", APP_SECRET)
            .await;
        page.click("[data-testid=channel-save]").await;
        page.wait_text("[data-testid=channel-status]", "Saved")
            .await;
        assert_eq!(
            page.text("[data-testid=channel-token-masked]").await,
            "••••Zx9Q"
        );
        assert_eq!(
            page.text("[data-testid=channel-secret-masked]").await,
            "••••••••"
        );
        assert_eq!(page.value("[data-testid=channel-access_token]").await, "");
        assert_eq!(page.value("[data-testid=channel-app_secret]").await, "");
        let callback = page.text("[data-testid=channel-callback-url]").await;
        assert!(
            callback.starts_with(&stack.gateway_url())
                && callback.contains("/channels/whatsapp/webhook/acc_"),
            "{callback}"
        );
        assert!(!page
            .value("[data-testid=channel-verify_token]")
            .await
            .is_empty());
        page.click("[data-testid=channel-test]").await;
        page.wait_text("[data-testid=channel-test-outcome]", "Wiz Test Store")
            .await;
        // After a reload the settings are read back from the server, still masked.
        page.goto("/console#/overview").await;
        page.goto("/console#/channel").await;
        page.wait_text("[data-testid=channel-token-masked]", "••••Zx9Q")
            .await;
        let html = page.source().await;
        assert!(
            !html.contains(TOKEN) && !html.contains(APP_SECRET),
            "a credential in the page"
        );
        if let Ok(png) = page.c.screenshot().await {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join("console-channel.png"), png);
        }
    })
    .await;
}
