//! The API's handlers, each documented for the OpenAPI document by its
//! `#[utoipa::path]`: read the request, call the facade as the caller,
//! answer.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Api, Caller, JsonBody, Problem};
use crate::admin::{BulkReport, TriggerOptions};
use crate::auth::{Capability, Role};
use crate::model::{
    App, DeadLetter, DeadLetterFilter, DeadLetterId, KvEntry, KvOps, Resolution, RunId, Script,
    Timestamp, Trigger, TriggerId,
};
use crate::runs::{Run, RunFilter};
use crate::secrets::AppVar;
use crate::store::Member;

type Answer<T> = Result<T, Problem>;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "PiCloud trigger host",
        description = "Apps, scripts, triggers, KV, dead letters and runs of a trigger host. \
            Every route but /health needs `Authorization: Bearer TOKEN` \
            (`picloud-host token create PRINCIPAL`) and acts as the token's principal. \
            Errors are RFC 9457 problem details with a stable `code`."
    ),
    components(schemas(Problem))
)]
struct Doc;

/// Every route of the API, with its OpenAPI description.
pub(super) fn routes() -> OpenApiRouter<Api> {
    let json_limit = DefaultBodyLimit::max(super::JSON_BODY_LIMIT);
    OpenApiRouter::with_openapi(<Doc as utoipa::OpenApi>::openapi())
        .routes(routes!(whoami))
        .routes(routes!(list_apps))
        .routes(routes!(get_app))
        .routes(routes!(list_members))
        .routes(routes!(set_member, remove_member))
        .routes(routes!(list_hosts, allow_host, deny_host))
        .routes(routes!(list_vars))
        .routes(routes!(set_var, unset_var))
        .routes(routes!(list_scripts))
        .routes(routes!(deploy_script, remove_script))
        .routes(routes!(invoke))
        .routes(routes!(list_triggers, add_trigger))
        .routes(routes!(remove_trigger))
        .routes(routes!(enable_trigger))
        .routes(routes!(disable_trigger))
        .routes(routes!(kv_keys))
        .routes(routes!(kv_get, kv_set, kv_delete))
        .routes(routes!(send_to_queue))
        .routes(routes!(publish))
        .routes(routes!(list_dead_letters))
        .routes(routes!(count_dead_letters))
        .routes(routes!(bulk_replay))
        .routes(routes!(show_dead_letter))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(ignore_dead_letter))
        .routes(routes!(resolve_dead_letter))
        .routes(routes!(list_runs))
        .routes(routes!(stream_runs))
        .routes(routes!(show_run))
        .layer(json_limit)
}

async fn app_named(api: &Api, name_or_id: &str) -> Answer<App> {
    Ok(api.host.store().find_app(name_or_id).await?)
}

/// Who the caller is.
#[derive(Serialize, ToSchema)]
struct WhoAmI {
    /// The principal the API acts as.
    principal: String,
}

/// The principal of the presented token.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "session",
    responses((status = 200, body = WhoAmI), (status = 401, body = Problem)))]
async fn whoami(Caller(principal): Caller) -> Json<WhoAmI> {
    Json(WhoAmI { principal })
}

/// An app, with its unresolved dead-letter count (the badge).
#[derive(Serialize, ToSchema)]
struct AppView {
    #[serde(flatten)]
    app: App,
    /// Unresolved dead letters.
    unresolved_dead_letters: i64,
}

/// The apps the caller may read, each with its badge.
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps",
    responses((status = 200, body = [AppView]), (status = 401, body = Problem)))]
async fn list_apps(State(api): State<Api>, Caller(p): Caller) -> Answer<Json<Vec<AppView>>> {
    let mut out = Vec::new();
    for app in api.host.admin().visible_apps(&p).await? {
        let unresolved_dead_letters = api.host.store().unresolved_count(app.id).await?;
        out.push(AppView {
            app,
            unresolved_dead_letters,
        });
    }
    Ok(Json(out))
}

/// One app (by name or id).
#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = AppView), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_app(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<AppView>> {
    let app = api
        .host
        .admin()
        .app_for(&app, &p, Capability::KvRead)
        .await?;
    let unresolved_dead_letters = api.host.admin().unresolved_count(app.id, &p).await?;
    Ok(Json(AppView {
        app,
        unresolved_dead_letters,
    }))
}

/// The app's members.
#[utoipa::path(get, path = "/api/v1/apps/{app}/members", tag = "apps",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = [Member]), (status = 403, body = Problem)))]
async fn list_members(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Vec<Member>>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(api.host.admin().members(app.id, &p).await?))
}

/// A member's role.
#[derive(Deserialize, ToSchema)]
struct RoleBody {
    /// admin, developer or viewer.
    role: String,
}

/// Add a member, or change their role (app admin).
#[utoipa::path(put, path = "/api/v1/apps/{app}/members/{principal}", tag = "apps",
    params(("app" = String, Path, description = "App name or id"), ("principal" = String, Path)),
    request_body = RoleBody,
    responses((status = 200, body = Member), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn set_member(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, member)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Answer<Json<Member>> {
    let app = app_named(&api, &app).await?;
    let role: Role = body.role.parse().map_err(|e: crate::model::InvalidValue| {
        Problem::bad_request("invalid_role", e.to_string())
    })?;
    api.host
        .admin()
        .set_member(app.id, &member, role, &p)
        .await?;
    Ok(Json(Member {
        app_id: app.id,
        principal: member,
        role,
    }))
}

/// Remove a member (app admin).
#[utoipa::path(delete, path = "/api/v1/apps/{app}/members/{principal}", tag = "apps",
    params(("app" = String, Path, description = "App name or id"), ("principal" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_member(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, member)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host.admin().remove_member(app.id, &member, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The hosts the app's scripts may make outbound HTTP requests to.
#[utoipa::path(get, path = "/api/v1/apps/{app}/hosts", tag = "apps",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = [String]), (status = 403, body = Problem)))]
async fn list_hosts(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Vec<String>>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(api.host.admin().hosts(app.id, Some(&p)).await?))
}

/// An allowed host pattern.
#[derive(Deserialize, Serialize, ToSchema, IntoParams)]
struct HostBody {
    /// `scheme://host[:port]`; host an exact name or `*.domain`.
    pattern: String,
}

/// An allowed host, in canonical form, and whether it was new.
#[derive(Serialize, ToSchema)]
struct HostAdded {
    pattern: String,
    added: bool,
}

/// Allow the app's scripts to reach a host (app admin). Nothing is allowed
/// by default; names that resolve to private addresses stay refused unless
/// the operator allows their range.
#[utoipa::path(post, path = "/api/v1/apps/{app}/hosts", tag = "apps",
    params(("app" = String, Path, description = "App name or id")),
    request_body = HostBody,
    responses((status = 200, body = HostAdded), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn allow_host(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<HostBody>,
) -> Answer<Json<HostAdded>> {
    let app = app_named(&api, &app).await?;
    let (pattern, added) = api
        .host
        .admin()
        .allow_host(app.id, &body.pattern, Some(&p))
        .await?;
    Ok(Json(HostAdded { pattern, added }))
}

/// Stop allowing a host (app admin).
#[utoipa::path(delete, path = "/api/v1/apps/{app}/hosts", tag = "apps",
    params(("app" = String, Path, description = "App name or id"), HostBody),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn deny_host(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    Query(query): Query<HostBody>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host
        .admin()
        .deny_host(app.id, &query.pattern, Some(&p))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The app's variables and secrets; a secret's value is never returned.
#[utoipa::path(get, path = "/api/v1/apps/{app}/vars", tag = "apps",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = [AppVar]), (status = 403, body = Problem)))]
async fn list_vars(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Vec<AppVar>>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(api.host.admin().vars(app.id, Some(&p)).await?))
}

/// A variable's new value.
#[derive(Deserialize, ToSchema)]
struct VarBody {
    /// The value.
    value: String,
    /// Store it as a secret: encrypted with the host's PICLOUD_SECRET_KEY,
    /// readable only by scripts, never listed.
    #[serde(default)]
    secret: bool,
}

/// Set a variable or secret (app admin).
#[utoipa::path(put, path = "/api/v1/apps/{app}/vars/{name}", tag = "apps",
    params(("app" = String, Path, description = "App name or id"), ("name" = String, Path)),
    request_body = VarBody,
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem, description = "a secret, and the host has no PICLOUD_SECRET_KEY")))]
async fn set_var(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<VarBody>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host
        .admin()
        .set_var(app.id, &name, &body.value, body.secret, Some(&p))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a variable or secret (app admin).
#[utoipa::path(delete, path = "/api/v1/apps/{app}/vars/{name}", tag = "apps",
    params(("app" = String, Path, description = "App name or id"), ("name" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn unset_var(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, name)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host.admin().unset_var(app.id, &name, Some(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The app's scripts.
#[utoipa::path(get, path = "/api/v1/apps/{app}/scripts", tag = "scripts",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = [Script]), (status = 403, body = Problem)))]
async fn list_scripts(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Vec<Script>>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(api.host.admin().scripts(app.id, &p).await?))
}

/// Deploy a component (the raw `.wasm` bytes as the body) as script
/// `name`, with the same checks as `script deploy`.
#[utoipa::path(put, path = "/api/v1/apps/{app}/scripts/{name}", tag = "scripts",
    params(("app" = String, Path, description = "App name or id"), ("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 200, body = Script), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem)))]
async fn deploy_script(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, name)): Path<(String, String)>,
    request: Request,
) -> Answer<Json<Script>> {
    let app = app_named(&api, &app).await?;
    // Refused before the upload is read: a refusal needs no body.
    crate::admin::require(
        &**api.host.authorizer(),
        &p,
        Capability::ScriptDeploy(app.id),
    )
    .await?;
    let limit = api.host.runtime().ceiling().script_max_bytes as usize;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the script is over the limit of {limit} bytes (PICLOUD_SCRIPT_MAX_BYTES)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // Read with the script limit, not the API's JSON limit.
    let wasm = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    Ok(Json(api.host.deploy(app.id, &name, &wasm, Some(&p)).await?))
}

/// Remove a script and its triggers.
#[utoipa::path(delete, path = "/api/v1/apps/{app}/scripts/{name}", tag = "scripts",
    params(("app" = String, Path, description = "App name or id"), ("name" = String, Path, description = "Script name or id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_script(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, name)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host.admin().remove_script(app.id, &name, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
struct InvokeQuery {
    /// Give up after this many milliseconds (default 10000, at most 300000).
    timeout_ms: Option<u64>,
}

/// Invoke a script synchronously with the JSON body as its payload; the
/// answer is its reply (JSON when it is JSON, else text).
#[utoipa::path(post, path = "/api/v1/apps/{app}/scripts/{name}/invoke", tag = "scripts",
    params(("app" = String, Path, description = "App name or id"), ("name" = String, Path), InvokeQuery),
    request_body = Value,
    responses((status = 200, description = "The script's reply"), (status = 204, description = "No reply body"),
        (status = 403, body = Problem), (status = 502, body = Problem), (status = 504, body = Problem)))]
async fn invoke(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, name)): Path<(String, String)>,
    Query(q): Query<InvokeQuery>,
    JsonBody(payload): JsonBody<Value>,
) -> Answer<Response> {
    let app = app_named(&api, &app).await?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(10_000).min(300_000));
    let reply = api.host.invoke(app.id, &name, payload, &p, timeout).await?;
    Ok(match reply {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(body) => {
            let kind = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                Ok(_) => "application/json",
                Err(_) => "text/plain; charset=utf-8",
            };
            ([(header::CONTENT_TYPE, kind)], body).into_response()
        }
    })
}

/// A trigger, with its script's name.
#[derive(Serialize, ToSchema)]
struct TriggerView {
    #[serde(flatten)]
    trigger: Trigger,
    /// The name of the script it runs.
    script_name: String,
}

/// The app's triggers.
#[utoipa::path(get, path = "/api/v1/apps/{app}/triggers", tag = "triggers",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = [TriggerView]), (status = 403, body = Problem)))]
async fn list_triggers(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Vec<TriggerView>>> {
    let app = app_named(&api, &app).await?;
    let triggers = api.host.admin().triggers(app.id, &p).await?;
    let scripts = api.host.store().list_scripts(app.id).await?;
    Ok(Json(
        triggers
            .into_iter()
            .map(|trigger| TriggerView {
                script_name: scripts
                    .iter()
                    .find(|s| s.id == trigger.script_id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                trigger,
            })
            .collect(),
    ))
}

/// A trigger to register: a `kv` one (`collection`, `ops`, `ordered`) or a
/// `dead_letter` one (`source`).
#[derive(Deserialize, ToSchema)]
struct NewTriggerBody {
    /// `kv`, `dead_letter`, `cron`, `queue` or `pubsub`.
    kind: String,
    /// The script it runs (name or id).
    script: String,
    /// Its name (default `<script>-on-<collection>`).
    name: Option<String>,
    /// kv: `*`, `prefix*` or a collection name.
    collection: Option<String>,
    /// kv: a comma-separated subset of `set,delete` (default both).
    ops: Option<String>,
    /// kv: run one key's events one at a time, in write order.
    #[serde(default)]
    ordered: bool,
    /// dead_letter: the original sources it fires on (default `*`).
    source: Option<String>,
    /// cron: five cron fields, or six with seconds first.
    schedule: Option<String>,
    /// cron: the IANA time zone (default `UTC`).
    timezone: Option<String>,
    /// cron: `last` (default) or `skip`, for ticks missed while no
    /// dispatcher ran.
    catch_up: Option<String>,
    /// queue: the queue it consumes.
    queue: Option<String>,
    /// queue: most messages per invocation (default 1).
    batch: Option<u32>,
    /// pubsub: `*`, `prefix*` or a topic.
    topic: Option<String>,
    /// Its retry policy (every field optional: the host's defaults).
    #[serde(default)]
    retry: crate::retry::RetryPolicy,
    /// Its own depth limit, below the host's.
    max_depth: Option<u32>,
}

/// Register a trigger; its script runs as the caller (app admin).
#[utoipa::path(post, path = "/api/v1/apps/{app}/triggers", tag = "triggers",
    params(("app" = String, Path, description = "App name or id")),
    request_body = NewTriggerBody,
    responses((status = 201, body = Trigger), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn add_trigger(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<NewTriggerBody>,
) -> Answer<(StatusCode, Json<Trigger>)> {
    let app = app_named(&api, &app).await?;
    let mut options = match body.kind.as_str() {
        "kv" => {
            let Some(collection) = &body.collection else {
                return Err(Problem::bad_request(
                    "invalid_trigger",
                    "a kv trigger needs `collection`",
                ));
            };
            let ops = KvOps::parse(body.ops.as_deref().unwrap_or(""))
                .map_err(|e| Problem::bad_request("invalid_trigger", e.to_string()))?;
            let kv = TriggerOptions::kv(&body.script, collection, ops);
            if body.ordered { kv.ordered() } else { kv }
        }
        "dead_letter" => {
            TriggerOptions::dead_letter(&body.script, body.source.as_deref().unwrap_or("*"))
        }
        "cron" => {
            let Some(schedule) = &body.schedule else {
                return Err(Problem::bad_request(
                    "invalid_trigger",
                    "a cron trigger needs `schedule`",
                ));
            };
            let catch_up = body.catch_up.as_deref().unwrap_or("last").parse().map_err(
                |e: crate::model::InvalidValue| {
                    Problem::bad_request("invalid_trigger", e.to_string())
                },
            )?;
            let tz = body.timezone.as_deref().unwrap_or("UTC");
            TriggerOptions::cron(&body.script, schedule, tz, catch_up)
        }
        "queue" => {
            let Some(queue) = &body.queue else {
                return Err(Problem::bad_request(
                    "invalid_trigger",
                    "a queue trigger needs `queue`",
                ));
            };
            TriggerOptions::queue(&body.script, queue, body.batch.unwrap_or(1))
        }
        "pubsub" => {
            let Some(topic) = &body.topic else {
                return Err(Problem::bad_request(
                    "invalid_trigger",
                    "a pubsub trigger needs `topic`",
                ));
            };
            TriggerOptions::pubsub(&body.script, topic)
        }
        other => {
            return Err(Problem::bad_request(
                "invalid_trigger",
                format!(
                    "unknown trigger kind '{other}': use kv, dead_letter, cron, queue or pubsub"
                ),
            ));
        }
    };
    options.name = body.name;
    options.retry = body.retry;
    options.max_depth = body.max_depth;
    let trigger = api.host.admin().add_trigger(app.id, options, &p).await?;
    Ok((StatusCode::CREATED, Json(trigger)))
}

fn trigger_id(text: &str) -> Answer<TriggerId> {
    text.parse().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "trigger_not_found",
            format!("unknown trigger '{text}': give a trigger id"),
        )
    })
}

/// Remove a trigger (app admin).
#[utoipa::path(delete, path = "/api/v1/apps/{app}/triggers/{id}", tag = "triggers",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_trigger(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    api.host
        .admin()
        .remove_trigger(app.id, trigger_id(&id)?, &p)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    api: Api,
    p: String,
    app: String,
    id: String,
    enabled: bool,
) -> Answer<Json<Trigger>> {
    let app = app_named(&api, &app).await?;
    let t = api
        .host
        .admin()
        .set_trigger_enabled(app.id, trigger_id(&id)?, enabled, &p)
        .await?;
    Ok(Json(t))
}

/// Enable a trigger (app admin); its held retries and replays run again.
#[utoipa::path(post, path = "/api/v1/apps/{app}/triggers/{id}/enable", tag = "triggers",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = Trigger), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn enable_trigger(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<Trigger>> {
    set_enabled(api, p, app, id, true).await
}

/// Disable a trigger (app admin): it stops matching.
#[utoipa::path(post, path = "/api/v1/apps/{app}/triggers/{id}/disable", tag = "triggers",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = Trigger), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn disable_trigger(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<Trigger>> {
    set_enabled(api, p, app, id, false).await
}

#[derive(Deserialize, IntoParams)]
struct PageQuery {
    /// The `next` cursor of the page before.
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

/// A page of keys.
#[derive(Serialize, ToSchema)]
struct KeyPage {
    /// Keys in order.
    keys: Vec<String>,
    /// The cursor of the next page, if there may be one.
    next: Option<String>,
}

/// Keys of a collection, in order, a page at a time.
#[utoipa::path(get, path = "/api/v1/apps/{app}/kv/{collection}", tag = "kv",
    params(("app" = String, Path, description = "App name or id"), ("collection" = String, Path), PageQuery),
    responses((status = 200, body = KeyPage), (status = 403, body = Problem)))]
async fn kv_keys(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, collection)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Answer<Json<KeyPage>> {
    let app = app_named(&api, &app).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let keys = api
        .host
        .admin()
        .kv_keys(app.id, &collection, q.after.as_deref(), limit, &p)
        .await?;
    let next = (keys.len() == limit as usize)
        .then(|| keys.last().cloned())
        .flatten();
    Ok(Json(KeyPage { keys, next }))
}

/// One entry: its value, version and time.
#[utoipa::path(get, path = "/api/v1/apps/{app}/kv/{collection}/{key}", tag = "kv",
    params(("app" = String, Path, description = "App name or id"), ("collection" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = KvEntry), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn kv_get(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, collection, key)): Path<(String, String, String)>,
) -> Answer<Json<KvEntry>> {
    let app = app_named(&api, &app).await?;
    match api
        .host
        .admin()
        .kv_get(app.id, &collection, &key, &p)
        .await?
    {
        Some(entry) => Ok(Json(entry)),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!(
                "no key '{key}' in collection '{collection}' of {}",
                app.name
            ),
        )),
    }
}

/// Write the JSON body as the entry's value (and enqueue its kv event).
#[utoipa::path(put, path = "/api/v1/apps/{app}/kv/{collection}/{key}", tag = "kv",
    params(("app" = String, Path, description = "App name or id"), ("collection" = String, Path), ("key" = String, Path)),
    request_body = Value,
    responses((status = 200, body = KvEntry), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn kv_set(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, collection, key)): Path<(String, String, String)>,
    JsonBody(value): JsonBody<Value>,
) -> Answer<Json<KvEntry>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(
        api.host
            .admin()
            .kv_set(app.id, &collection, &key, &value, &p)
            .await?,
    ))
}

/// Where a sent or published message went.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Sent {
    /// The message's event id.
    id: crate::model::EventId,
}

/// How long a queue message waits.
#[derive(serde::Deserialize, utoipa::IntoParams)]
struct SendParams {
    /// Deliver it no sooner than this many milliseconds from now.
    delay_ms: Option<u64>,
}

/// Send the JSON body to the app's queue (its `queue` trigger consumes it).
#[utoipa::path(post, path = "/api/v1/apps/{app}/queues/{queue}/messages", tag = "messages",
    params(("app" = String, Path, description = "App name or id"), ("queue" = String, Path), SendParams),
    request_body = Value,
    responses((status = 202, body = Sent), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn send_to_queue(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, queue)): Path<(String, String)>,
    Query(params): Query<SendParams>,
    JsonBody(body): JsonBody<Value>,
) -> Answer<(StatusCode, Json<Sent>)> {
    let app = app_named(&api, &app).await?;
    let delay = params.delay_ms.unwrap_or(0);
    let id = api
        .host
        .admin()
        .send_to_queue(app.id, &queue, body, delay, &p)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Sent { id })))
}

/// Publish the JSON body on the app's topic (every matching `pubsub`
/// trigger gets it).
#[utoipa::path(post, path = "/api/v1/apps/{app}/topics/{topic}/messages", tag = "messages",
    params(("app" = String, Path, description = "App name or id"), ("topic" = String, Path)),
    request_body = Value,
    responses((status = 202, body = Sent), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn publish(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, topic)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Answer<(StatusCode, Json<Sent>)> {
    let app = app_named(&api, &app).await?;
    let id = api.host.admin().publish(app.id, &topic, body, &p).await?;
    Ok((StatusCode::ACCEPTED, Json(Sent { id })))
}

/// Delete the entry (and enqueue its kv event).
#[utoipa::path(delete, path = "/api/v1/apps/{app}/kv/{collection}/{key}", tag = "kv",
    params(("app" = String, Path, description = "App name or id"), ("collection" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn kv_delete(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, collection, key)): Path<(String, String, String)>,
) -> Answer<StatusCode> {
    let app = app_named(&api, &app).await?;
    match api
        .host
        .admin()
        .kv_delete(app.id, &collection, &key, &p)
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!(
                "no key '{key}' in collection '{collection}' of {}",
                app.name
            ),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
struct DeadLetterQuery {
    /// Only unresolved ones.
    #[serde(default)]
    unresolved: bool,
    /// Only with this original source.
    source: Option<String>,
    /// Only of this trigger id.
    trigger: Option<String>,
    /// Only created at or after this RFC 3339 time.
    since: Option<String>,
    /// Only created before this RFC 3339 time.
    until: Option<String>,
    /// Oldest first (default newest first).
    #[serde(default)]
    oldest_first: bool,
    /// The `next` cursor of the page before.
    after: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<u32>,
}

/// A page of dead letters.
#[derive(Serialize, ToSchema)]
struct DeadLetterPage {
    /// The dead letters.
    items: Vec<DeadLetter>,
    /// The cursor of the next page, if there may be one.
    #[schema(value_type = Option<String>)]
    next: Option<DeadLetterId>,
}

fn time(what: &str, text: Option<&str>) -> Answer<Option<Timestamp>> {
    text.map(|t| {
        Timestamp::parse_rfc3339(what, t).map_err(|e| Problem::bad_request("invalid_time", e))
    })
    .transpose()
}

fn dead_letter_id(text: &str) -> Answer<DeadLetterId> {
    text.parse().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "dead_letter_not_found",
            format!("unknown dead letter '{text}': give a dead letter id"),
        )
    })
}

/// The app's dead letters, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/apps/{app}/dead-letters", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id"), DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), (status = 403, body = Problem)))]
async fn list_dead_letters(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    Query(q): Query<DeadLetterQuery>,
) -> Answer<Json<DeadLetterPage>> {
    let app = app_named(&api, &app).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = DeadLetterFilter {
        app_id: Some(app.id),
        unresolved_only: q.unresolved,
        source: q.source,
        trigger_id: q.trigger.as_deref().map(trigger_id).transpose()?,
        created_after: time("since", q.since.as_deref())?,
        created_before: time("until", q.until.as_deref())?,
        limit: Some(limit),
        newest_first: !q.oldest_first,
        after: q.after.as_deref().map(dead_letter_id).transpose()?,
    };
    let items = api.host.admin().dead_letters(&filter, &p).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(DeadLetterPage { items, next }))
}

/// The badge.
#[derive(Serialize, ToSchema)]
struct Count {
    /// Unresolved dead letters of the app.
    unresolved: i64,
}

/// How many of the app's dead letters are unresolved (the badge).
#[utoipa::path(get, path = "/api/v1/apps/{app}/dead-letters/count", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id")),
    responses((status = 200, body = Count), (status = 403, body = Problem)))]
async fn count_dead_letters(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
) -> Answer<Json<Count>> {
    let app = app_named(&api, &app).await?;
    Ok(Json(Count {
        unresolved: api.host.admin().unresolved_count(app.id, &p).await?,
    }))
}

/// A dead letter and every run of its original event.
#[derive(Serialize, ToSchema)]
struct DeadLetterDetail {
    dead_letter: DeadLetter,
    /// Its attempts, oldest first, each with its error and log lines.
    runs: Vec<Run>,
}

/// One dead letter, with its history.
#[utoipa::path(get, path = "/api/v1/apps/{app}/dead-letters/{id}", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = DeadLetterDetail), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn show_dead_letter(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<DeadLetterDetail>> {
    let app = app_named(&api, &app).await?;
    let admin = api.host.admin();
    crate::admin::require(&**api.host.authorizer(), &p, Capability::KvRead(app.id)).await?;
    let id = dead_letter_id(&id)?;
    admin.dead_letter_of(app.id, id).await?;
    let (dead_letter, runs) = admin.dead_letter_history(id, Some(&p)).await?;
    Ok(Json(DeadLetterDetail { dead_letter, runs }))
}

async fn resolve(
    api: Api,
    p: String,
    app: String,
    id: String,
    resolution: Resolution,
) -> Answer<Json<DeadLetter>> {
    let app = app_named(&api, &app).await?;
    let id = dead_letter_id(&id)?;
    Ok(Json(
        api.host
            .admin()
            .resolve_in(app.id, id, resolution, &p)
            .await?,
    ))
}

/// Replay a dead letter: re-enqueue it for its trigger (app admin).
#[utoipa::path(post, path = "/api/v1/apps/{app}/dead-letters/{id}/replay", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = DeadLetter), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn replay_dead_letter(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<DeadLetter>> {
    resolve(api, p, app, id, Resolution::Replayed).await
}

/// Ignore a dead letter (app admin).
#[utoipa::path(post, path = "/api/v1/apps/{app}/dead-letters/{id}/ignore", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = DeadLetter), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn ignore_dead_letter(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<DeadLetter>> {
    resolve(api, p, app, id, Resolution::Ignored).await
}

/// A resolution.
#[derive(Deserialize, ToSchema)]
struct ResolutionBody {
    /// replayed, ignored, handled_by_script or handler_failed.
    resolution: String,
}

/// Resolve a dead letter with any resolution of the vocabulary (app admin).
#[utoipa::path(post, path = "/api/v1/apps/{app}/dead-letters/{id}/resolve", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    request_body = ResolutionBody,
    responses((status = 200, body = DeadLetter), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn resolve_dead_letter(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ResolutionBody>,
) -> Answer<Json<DeadLetter>> {
    let resolution: Resolution =
        body.resolution
            .parse()
            .map_err(|e: crate::model::InvalidValue| {
                Problem::bad_request("invalid_resolution", e.to_string())
            })?;
    resolve(api, p, app, id, resolution).await
}

/// Which unresolved dead letters a bulk replay takes (every one by default).
#[derive(Deserialize, Default, ToSchema)]
struct BulkFilter {
    /// Only with this original source.
    source: Option<String>,
    /// Only of this trigger id.
    trigger: Option<String>,
    /// Only created at or after this RFC 3339 time.
    since: Option<String>,
    /// Only created before this RFC 3339 time.
    until: Option<String>,
}

/// A progress line of a bulk replay.
#[derive(Serialize, ToSchema)]
struct Progress {
    /// Dead letters settled so far.
    done: u64,
    /// How many match.
    total: u64,
}

/// Replay every unresolved dead letter matching the filter, with no cap
/// (app admin). The answer is streamed as NDJSON: a `{"done", "total"}`
/// line every few hundred, then the `{"replayed", "failed",
/// "first_error"}` report.
#[utoipa::path(post, path = "/api/v1/apps/{app}/dead-letters/replay", tag = "dead letters",
    params(("app" = String, Path, description = "App name or id")),
    request_body = BulkFilter,
    responses((status = 200, content_type = "application/x-ndjson", body = BulkReport,
        description = "Progress lines, then the report"), (status = 403, body = Problem)))]
async fn bulk_replay(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<BulkFilter>,
) -> Answer<Response> {
    let app = app_named(&api, &app).await?;
    let filter = DeadLetterFilter {
        app_id: Some(app.id),
        source: body.source,
        trigger_id: body.trigger.as_deref().map(trigger_id).transpose()?,
        created_after: time("since", body.since.as_deref())?,
        created_before: time("until", body.until.as_deref())?,
        ..DeadLetterFilter::default()
    };
    // Refused before the stream starts: a refusal is a problem, not a line.
    crate::admin::require(
        &**api.host.authorizer(),
        &p,
        Capability::AppDeadLetterManage(app.id),
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let admin = api.host.admin();
    tokio::spawn(async move {
        let line = |v: &dyn erased::Line| Bytes::from(format!("{}\n", v.json()));
        let mut last = 0;
        let result = admin
            .replay_matching(&filter, Some(&p), |done, total| {
                if done == total || done >= last + 200 {
                    last = done;
                    // A caller that went away stops reading; the replay goes on.
                    let _ = tx.try_send(line(&Progress { done, total }));
                }
            })
            .await;
        let end = match result {
            Ok(report) => line(&report),
            Err(e) => line(&Problem::from(e)),
        };
        let _ = tx.send(end).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

mod erased {
    /// Anything written as one NDJSON line.
    pub(super) trait Line {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Line for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
    }
}

#[derive(Deserialize, IntoParams)]
struct RunQuery {
    /// Only this script's (name or id).
    script: Option<String>,
    /// Only this trigger's (id).
    trigger: Option<String>,
    /// Only runs that did not succeed.
    #[serde(default)]
    failed: bool,
    /// Only runs that finished at or after this RFC 3339 time.
    since: Option<String>,
    /// The `next` cursor of the page before.
    after: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<u32>,
}

/// A page of runs.
#[derive(Serialize, ToSchema)]
struct RunPage {
    /// Newest first.
    items: Vec<Run>,
    /// The cursor of the next (older) page, if there may be one.
    #[schema(value_type = Option<String>)]
    next: Option<RunId>,
}

async fn run_filter(api: &Api, app: &App, q: RunQuery) -> Answer<RunFilter> {
    let script_id = match &q.script {
        Some(s) => Some(api.host.store().find_script(app.id, s).await?.id),
        None => None,
    };
    Ok(RunFilter {
        script_id,
        trigger_id: q.trigger.as_deref().map(trigger_id).transpose()?,
        failed_only: q.failed,
        since: time("since", q.since.as_deref())?,
        after: q
            .after
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    Problem::bad_request("invalid_cursor", format!("'{a}' is not a run id"))
                })
            })
            .transpose()?,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
        ..RunFilter::app(app.id)
    })
}

/// The app's runs, newest first (needs logs access).
#[utoipa::path(get, path = "/api/v1/apps/{app}/runs", tag = "runs",
    params(("app" = String, Path, description = "App name or id"), RunQuery),
    responses((status = 200, body = RunPage), (status = 403, body = Problem)))]
async fn list_runs(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    Query(q): Query<RunQuery>,
) -> Answer<Json<RunPage>> {
    let app = app_named(&api, &app).await?;
    let filter = run_filter(&api, &app, q).await?;
    let items = api.host.admin().list_runs(&filter, Some(&p)).await?;
    let next = (items.len() == filter.limit as usize)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(RunPage { items, next }))
}

/// One run, with its log lines.
#[utoipa::path(get, path = "/api/v1/apps/{app}/runs/{id}", tag = "runs",
    params(("app" = String, Path, description = "App name or id"), ("id" = String, Path)),
    responses((status = 200, body = Run), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn show_run(
    State(api): State<Api>,
    Caller(p): Caller,
    Path((app, id)): Path<(String, String)>,
) -> Answer<Json<Run>> {
    let app = app_named(&api, &app).await?;
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "run_not_found",
            format!("unknown run '{id}' of {}", app.name),
        )
    };
    let run_id: RunId = id.parse().map_err(|_| not_found())?;
    let run = api.host.admin().get_run(run_id, Some(&p)).await?;
    if run.app_id != app.id {
        return Err(not_found());
    }
    Ok(Json(run))
}

/// New runs as they are recorded, also those of dispatchers in other
/// processes: server-sent events, each `event: run` with the run as JSON
/// (its log lines included). Filters as for the listing.
#[utoipa::path(get, path = "/api/v1/apps/{app}/runs/stream", tag = "runs",
    params(("app" = String, Path, description = "App name or id"), RunQuery),
    responses((status = 200, content_type = "text/event-stream", description = "`event: run` frames"),
        (status = 403, body = Problem)))]
async fn stream_runs(
    State(api): State<Api>,
    Caller(p): Caller,
    Path(app): Path<String>,
    Query(q): Query<RunQuery>,
) -> Answer<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let app = app_named(&api, &app).await?;
    let filter = run_filter(&api, &app, q).await?;
    let follower = api.host.admin().follow_runs(filter, Some(&p)).await?;
    let stream = futures_util::stream::unfold(
        (follower, std::collections::VecDeque::<Run>::new()),
        |(mut follower, mut queue)| async move {
            loop {
                if let Some(run) = queue.pop_front() {
                    let event = Event::default()
                        .event("run")
                        .id(run.id.to_string())
                        .json_data(&run)
                        .unwrap_or_else(|_| Event::default().comment("unencodable run"));
                    return Some((Ok(event), (follower, queue)));
                }
                match follower.next().await {
                    Ok(runs) => queue.extend(runs),
                    Err(e) => {
                        tracing::warn!(error = %e, "a live run stream stopped");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
