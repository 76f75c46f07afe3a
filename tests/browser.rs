//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver) against a host served on 127.0.0.1.
//!
//! It signs in with a token, reads a seeded app's badge, opens a dead
//! letter and reads its error, disables the trigger and replays the dead
//! letter (the badge goes down by one), sees a live log line arrive after an
//! event is written, and saves a screenshot. Any script error on the page,
//! or an error message left in its status line, fails it. `.ci/run`
//! installs chromium and chromium-driver; without them this fails loudly.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use picloud_host::admin::TriggerOptions;
use picloud_host::model::KvOps;
use picloud_tests::guests;
use picloud_tests::host::{self, ADMIN};
use picloud_tests::http::{Served, token};
use serde_json::json;

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): the browser test needs Debian's chromium \
                     and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run does)"
                )
            });
        // Killed on drop from here on, also when it never listens.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not listen on port {port} within 10 s");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,800"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// The text of the first element matching `css`, waiting for it.
async fn text(c: &Client, css: &str) -> String {
    let el = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"));
    el.text().await.unwrap()
}

/// Click the element matching `css`, scrolled to the middle of the window
/// first (chromedriver's own scrolling puts it at the very top, under the
/// page's sticky status line).
async fn click(c: &Client, css: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    c.execute(
        "arguments[0].scrollIntoView({block: 'center'});",
        vec![serde_json::to_value(&el).unwrap()],
    )
    .await
    .unwrap();
    el.click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Wait until the page's `js` expression is true.
async fn until(c: &Client, what: &str, js: &str) {
    for _ in 0..200 {
        let v = c
            .execute(&format!("return !!({js});"), vec![])
            .await
            .unwrap();
        if v == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = c
        .execute(
            "return document.getElementById('status').textContent;",
            vec![],
        )
        .await;
    panic!("timed out waiting for {what} (status line: {status:?})");
}

/// No script error and no error in the status line.
async fn no_page_errors(c: &Client) {
    let errors = c
        .execute(
            "return document.getElementById('js-errors').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(errors, json!(""), "the page had script errors");
    let status = c
        .execute(
            "const s = document.getElementById('status'); \
             return s.classList.contains('error') ? s.textContent : '';",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(""), "the page shows an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium() {
    let driver = Driver::start();
    let db = picloud_tests::db::sqlite().await;
    let app = host::app(&db.store, "shop").await;
    let served = Served::start(host::host(
        &db.store,
        host::fast_retries(1),
        host::ceiling(),
    ))
    .await;
    let rt = served.host.runtime();
    host::deploy(rt, app.id, "fails", guests::ALWAYS_FAILS).await;
    let admin = served.host.admin();
    let orders = admin
        .add_trigger(
            app.id,
            TriggerOptions::kv("fails", "orders", KvOps::ALL).named("orders-fail"),
            ADMIN,
        )
        .await
        .unwrap();
    admin
        .add_trigger(
            app.id,
            TriggerOptions::kv("fails", "audit", KvOps::ALL).named("audit-fail"),
            ADMIN,
        )
        .await
        .unwrap();
    // Two dead letters to start from.
    for key in ["o-1", "o-2"] {
        admin
            .kv_set(app.id, "orders", key, &json!({"n": 1}), ADMIN)
            .await
            .unwrap();
    }
    for _ in 0..600 {
        if db.store.unresolved_count(app.id).await.unwrap() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.store.unresolved_count(app.id).await.unwrap(), 2);
    let secret = token(&db.store, ADMIN).await;

    let c = browser(&driver).await;
    c.goto(&served.url("/")).await.unwrap();

    // Sign in, and see the seeded app's badge.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&secret)
        .await
        .unwrap();
    click(&c, "#sign-in button[type=submit], #sign-in button").await;
    assert_eq!(text(&c, "#whoami").await.trim(), ADMIN);
    until(&c, "the badge", "document.querySelector('button[data-app=\"shop\"] [data-badge]')?.textContent.trim() === '2'").await;

    // Open a dead letter and read its error.
    until(
        &c,
        "the dead-letter rows",
        "document.querySelectorAll('tr[data-dead-letter]').length === 2",
    )
    .await;
    click(&c, "tr[data-dead-letter] button.open").await;
    until(
        &c,
        "the detail view",
        "!document.getElementById('detail').hidden",
    )
    .await;
    let error = text(&c, "#detail pre.error-text").await;
    assert!(error.contains("always fails: kv/set"), "{error}");

    // Disable the trigger (so the replay waits, held), then replay: the
    // badge goes down by one.
    click(
        &c,
        &format!("button.toggle[data-trigger=\"{}\"]", orders.id),
    )
    .await;
    until(
        &c,
        "the trigger disabled",
        "/Disabled trigger/.test(document.getElementById('status').textContent)",
    )
    .await;
    assert!(!db.store.get_trigger(orders.id).await.unwrap().enabled);
    click(&c, "#replay").await;
    until(&c, "the badge down by one", "document.querySelector('button[data-app=\"shop\"] [data-badge]')?.textContent.trim() === '1'").await;
    assert_eq!(db.store.unresolved_count(app.id).await.unwrap(), 1);
    let status = text(&c, "#status").await;
    assert!(status.contains("Replayed"), "{status}");

    // A live log line arrives after an event is written.
    until(
        &c,
        "the live tail",
        "document.getElementById('tail-state').textContent.includes('live')",
    )
    .await;
    let before: usize = c
        .find_all(Locator::Css("#log-tail li.log-line"))
        .await
        .unwrap()
        .len();
    admin
        .kv_set(app.id, "audit", "a-1", &json!({"n": 1}), ADMIN)
        .await
        .unwrap();
    until(
        &c,
        "a live log line",
        &format!(
            "document.querySelectorAll('#log-tail li.log-line').length > {before} && \
             /attempt 1/.test(document.getElementById('log-tail').textContent)"
        ),
    )
    .await;

    let png = c.screenshot().await.unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    no_page_errors(&c).await;
    c.close().await.unwrap();
}
