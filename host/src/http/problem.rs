//! Errors as RFC 9457 problem details: `application/problem+json` with a
//! stable machine-readable `code` and a one-line `detail` for people.
//!
//! Rule: every refusal the API makes is a [`Problem`]; its `code` never
//! changes once released, its `detail` names the problem and the fix, and
//! a database's own error text stays in the host's log.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::InvokeCallError;
use crate::admin::AdminError;
use crate::store;
use crate::tokens::TokenError;

/// A problem details document (RFC 9457).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:picloud:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type (the HTTP reason phrase).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and how to fix it: one line.
    pub detail: String,
    /// A stable machine-readable code, such as `permission_denied`.
    pub code: Cow<'static, str>,
}

impl Problem {
    /// A problem with `status`, `code` and a one-line `detail`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        let code = code.into();
        Problem {
            kind: format!("urn:picloud:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into().replace('\n', " "),
            code,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: no credentials, or credentials that are not accepted.
    pub fn unauthenticated(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"picloud\""),
            );
        }
        response
    }
}

impl From<store::Error> for Problem {
    fn from(e: store::Error) -> Self {
        use store::Error as E;
        match &e {
            E::NotFound { what, .. } => Problem::new(
                StatusCode::NOT_FOUND,
                format!("{}_not_found", what.replace(' ', "_")),
                e.to_string(),
            ),
            E::Conflict(_) => Problem::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::AlreadyResolved { .. } => {
                Problem::new(StatusCode::CONFLICT, "already_resolved", e.to_string())
            }
            E::VersionConflict { .. } => {
                Problem::new(StatusCode::CONFLICT, "version_conflict", e.to_string())
            }
            E::Pattern(_) => Problem::bad_request("invalid_pattern", e.to_string()),
            E::Invalid(_) | E::Url(_) => Problem::bad_request("invalid_argument", e.to_string()),
            E::Unreachable { .. } | E::Migrate(_) | E::Database(_) => {
                tracing::warn!(error = %e, "the store failed a request of the HTTP API");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database failed or cannot be reached: try again; the host's log says why",
                )
            }
        }
    }
}

impl From<AdminError> for Problem {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::PermissionDenied { .. } => {
                Problem::new(StatusCode::FORBIDDEN, "permission_denied", e.to_string())
            }
            AdminError::InvalidJson { .. } => Problem::bad_request("invalid_json", e.to_string()),
            AdminError::Store(e) => e.into(),
            AdminError::Deploy(crate::runtime::DeployError::TooLarge { .. }) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.to_string(),
            ),
            AdminError::Deploy(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "deploy_rejected",
                e.to_string(),
            ),
            AdminError::Auth(_) => authorizer_failed(&e),
            AdminError::Secret(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "secrets_unavailable",
                e.to_string(),
            ),
        }
    }
}

fn authorizer_failed(e: &dyn std::fmt::Display) -> Problem {
    tracing::warn!(error = %e, "the authorizer failed a request of the HTTP API");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "authorizer_unavailable",
        "the permission check could not be made: try again; the host's log says why",
    )
}

impl From<InvokeCallError> for Problem {
    fn from(e: InvokeCallError) -> Self {
        match e {
            InvokeCallError::PermissionDenied { .. } => {
                Problem::new(StatusCode::FORBIDDEN, "permission_denied", e.to_string())
            }
            InvokeCallError::Timeout { .. } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "invoke_timeout",
                format!("{e}: raise ?timeout_ms, or check that a dispatcher is running"),
            ),
            InvokeCallError::Failed(_) => {
                Problem::new(StatusCode::BAD_GATEWAY, "invoke_failed", e.to_string())
            }
            InvokeCallError::Store(e) => e.into(),
            InvokeCallError::Auth(_) => authorizer_failed(&e),
        }
    }
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Unknown => Problem::unauthenticated("token_invalid", e.to_string()),
            TokenError::Revoked { .. } => Problem::unauthenticated("token_revoked", e.to_string()),
            TokenError::Store(e) => e.into(),
        }
    }
}
