//! The HTTP API, `/metrics` and the dashboard: a router over a
//! [`TriggerHost`] that the binary serves (`picloud-host serve --http`) and
//! the manager can mount in its own axum application ([`router`]).
//!
//! Rule: a handler only translates. It reads the request, calls the same
//! facade the CLI calls ([`TriggerHost`] and [`crate::admin::Admin`]) as
//! the principal its [`Authenticator`] named, and writes the answer; every
//! permission is checked there, by the host's [`crate::auth::Authorizer`].
//! Every refusal is a [`Problem`]. No route but `/health` (and the
//! dashboard's static files, which hold no data) answers without
//! credentials.
//!
//! Mounting it in an application with its own sign-in:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::http::request::Parts;
//! use picloud_host::http::{Authenticator, Problem, async_trait};
//!
//! /// The application's session cookie says who is calling.
//! struct SessionAuth;
//!
//! #[async_trait]
//! impl Authenticator for SessionAuth {
//!     async fn authenticate(&self, parts: &Parts) -> Result<String, Problem> {
//!         match parts.headers.get("x-user") {
//!             Some(user) => Ok(user.to_str().unwrap_or_default().to_owned()),
//!             None => Err(Problem::unauthenticated("unauthenticated", "sign in first")),
//!         }
//!     }
//! }
//!
//! # async fn mount(host: picloud_host::TriggerHost) {
//! let app = axum::Router::new()
//!     .nest("/triggers", picloud_host::http::router(host, Arc::new(SessionAuth)));
//! # let _: axum::Router = app;
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use tokio_util::sync::CancellationToken;

use crate::TriggerHost;

mod api;
mod pages;
mod problem;

pub use async_trait::async_trait;
pub use problem::Problem;

/// The largest JSON request body the API reads (1 MiB); a script upload
/// may be as large as `PICLOUD_SCRIPT_MAX_BYTES`.
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// Says which principal a request comes from. The API then acts as that
/// principal, and the host's authorizer decides what it may do.
/// [`TokenAuthenticator`] is the built-in one; the manager can plug in its
/// own sessions.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The principal, or the [`Problem`] to answer with (usually 401).
    async fn authenticate(&self, parts: &Parts) -> Result<String, Problem>;
}

/// `Authorization: Bearer pct_...` with a token of the host's store
/// (`picloud-host token create`).
pub struct TokenAuthenticator {
    host: TriggerHost,
}

impl TokenAuthenticator {
    /// Tokens of `host`'s store.
    pub fn new(host: TriggerHost) -> Self {
        TokenAuthenticator { host }
    }
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(&self, parts: &Parts) -> Result<String, Problem> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthenticated(
                "unauthenticated",
                "no API token: send `Authorization: Bearer TOKEN` (make one with `picloud-host token create PRINCIPAL`)",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthenticated(
                    "unauthenticated",
                    "the Authorization header is not `Bearer TOKEN`",
                )
            })?;
        let token = crate::tokens::authenticate(&**self.host.store(), secret).await?;
        Ok(token.principal)
    }
}

/// What every handler reaches.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) host: TriggerHost,
    pub(crate) auth: Arc<dyn Authenticator>,
}

/// The principal a request acts as.
pub(crate) struct Caller(pub(crate) String);

impl FromRequestParts<Api> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Problem> {
        api.auth.authenticate(parts).await.map(Caller)
    }
}

/// A JSON body, refused as a [`Problem`] when it is not JSON of the
/// expected shape or too large.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(body_problem)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            Problem::bad_request(
                "invalid_json",
                format!("the request body is not the JSON expected: {e}"),
            )
        })
    }
}

/// The problem for a body that could not be read.
pub(crate) fn body_problem(e: axum::extract::rejection::BytesRejection) -> Problem {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over the limit: 1 MiB for JSON, PICLOUD_SCRIPT_MAX_BYTES for a script",
        ),
        status => Problem::new(status, "invalid_body", e.body_text()),
    }
}

/// The API, `/metrics`, `/health`, `/openapi.json` and the dashboard, for
/// `host`, with callers named by `auth`.
pub fn router(host: TriggerHost, auth: Arc<dyn Authenticator>) -> Router {
    let api = Api { host, auth };
    let (routes, openapi) = api::routes().split_for_parts();
    let openapi = Arc::new(openapi);
    routes
        .merge(pages::routes(openapi))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route: see /openapi.json",
            )
        })
        .with_state(api)
}

/// The OpenAPI document of the API, generated from its handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes().split_for_parts().1
}

/// Serve [`router`] with the built-in [`TokenAuthenticator`] on `addr`
/// until `cancel` fires; `bound` learns the address (a port of 0 picks a
/// free one).
pub async fn serve(
    host: TriggerHost,
    addr: SocketAddr,
    cancel: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    let auth = Arc::new(TokenAuthenticator::new(host.clone()));
    let server = axum::serve(listener, router(host, auth))
        .with_graceful_shutdown(cancel.clone().cancelled_owned());
    // Live log streams never end by themselves: give requests a moment to
    // finish after `cancel`, then drop what is left.
    tokio::select! {
        served = server => served,
        _ = async {
            cancel.cancelled().await;
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        } => Ok(()),
    }
}
