//! A real HTTP server on 127.0.0.1 for scripts' outbound requests
//! (tests/outbound.rs, tests/hostile_load.rs): `/hello`, `/slow` (10 s),
//! `/huge` (4 MiB), `/redirect` (to `localhost`), `/secret` (records
//! `x-secret`) and `/hook` (records a JSON post, answers the status set in
//! [`Seen::hook_status`]).

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;

/// What the test server saw and how it answers.
#[derive(Default)]
pub struct Seen {
    /// Requests served.
    pub requests: AtomicUsize,
    /// The status `/hook` answers with (200 at first).
    pub hook_status: AtomicU16,
    /// What `/hook` received: headers and JSON body.
    pub hooks: Mutex<Vec<(HeaderMap, Value)>>,
    /// The `x-secret` headers `/secret` received.
    pub secrets: Mutex<Vec<String>>,
}

/// A real HTTP server on 127.0.0.1 and what it saw.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it saw.
    pub seen: Arc<Seen>,
}

impl Server {
    /// Start one on a free port.
    pub async fn start() -> Server {
        let seen = Arc::new(Seen::default());
        seen.hook_status.store(200, Ordering::Relaxed);
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            )
            .route("/huge", get(|| async { vec![b'x'; 4 << 20] }))
            .route(
                "/redirect",
                get(|State(port): State<u16>| async move {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, format!("http://localhost:{port}/hello"))],
                    )
                }),
            )
            .route("/secret", get(record_secret))
            .route("/hook", post(record_hook))
            .layer(axum::middleware::from_fn_with_state(seen.clone(), count));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = app.with_state(port);
        let seen_by_app = seen.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.layer(axum::Extension(seen_by_app)).into_make_service(),
            )
            .await
            .unwrap();
        });
        Server { port, seen }
    }

    /// `http://127.0.0.1:PORT`, the pattern that allows it.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::Relaxed)
    }
}

async fn count(
    State(seen): State<Arc<Seen>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    next.run(request).await
}

async fn record_secret(
    axum::Extension(seen): axum::Extension<Arc<Seen>>,
    headers: HeaderMap,
) -> &'static str {
    let value = headers
        .get("x-secret")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    seen.secrets.lock().unwrap().push(value);
    "ok"
}

async fn record_hook(
    axum::Extension(seen): axum::Extension<Arc<Seen>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    seen.hooks.lock().unwrap().push((headers, body));
    StatusCode::from_u16(seen.hook_status.load(Ordering::Relaxed)).unwrap()
}
