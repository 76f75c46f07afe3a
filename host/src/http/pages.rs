//! The routes that are not the API: `/health`, `/metrics`,
//! `/openapi.json` and the dashboard's files.
//!
//! Rule: the dashboard's files are embedded in the binary and hold no data
//! (everything it shows it reads from the API with the user's token), so
//! they and `/health` are the only answers given without a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::{Api, Caller, Problem};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");
/// The dashboard runs only its own script and style.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(super) fn routes(openapi: Arc<utoipa::openapi::OpenApi>) -> Router<Api> {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move |_: Caller| async move { Json(openapi.as_ref().clone()) }),
        )
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
}

fn page(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Prometheus text: the series of the apps the caller may read, and the
/// host's own.
async fn metrics(State(api): State<Api>, Caller(p): Caller) -> Result<impl IntoResponse, Problem> {
    let text = api.host.prometheus(Some(&p)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
