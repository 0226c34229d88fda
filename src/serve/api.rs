//! The routes, the guard in front of them (allow-list, token, audit line)
//! and the JSON the seed's clients expect (SPEC "Admin HTTP API").

use super::auth::{Refused, Role};
use super::events::RunEvents;
use super::shapes;
use super::{App, BODY_LIMIT, READ_TIMEOUT};
use crate::engine::UpOptions;
use crate::error::DbFailure;
use crate::error::Error;
use crate::report::UpOutcome;
use crate::state::LockHolder;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Who is asking: set by the guard for the handlers.
#[derive(Clone)]
pub(super) struct Caller {
    pub(super) token: String,
    role: Role,
    pub(super) client: SocketAddr,
}

/// What a request came to, for the audit line (set by the handlers; the
/// status code speaks where they set none).
#[derive(Clone, Copy)]
struct Outcome(&'static str);

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/migrations/status", get(status))
        .route("/admin/migrations/history", get(history))
        .route("/admin/migrations/run", post(run))
        .route("/admin/migrations/approve", post(approve))
        .route("/admin/migrations/lock", get(lock))
        .route("/admin/migrations/events", get(super::events::stream))
        .route("/admin/session", get(session))
        .route("/", get(super::page::index))
        .route("/assets/{file}", get(super::page::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

fn json_response(status: StatusCode, body: Value, outcome: &'static str) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.extensions_mut().insert(Outcome(outcome));
    response
}

pub(super) fn error(
    status: StatusCode,
    error: &str,
    details: impl Into<String>,
    outcome: &'static str,
) -> Response {
    json_response(status, shapes::error(error, details), outcome)
}

/// The audit line of a request, written when the answer is ready, or when
/// the client went away first (then without a status).
struct AuditLine {
    started: Instant,
    client: SocketAddr,
    token: Option<String>,
    method: Method,
    path: String,
    written: bool,
    /// Whose `dropped` says that shutdown gave up on the requests still
    /// open.
    app: Arc<App>,
}

impl AuditLine {
    fn write(&mut self, status: Option<StatusCode>, outcome: &str) {
        self.written = true;
        let line = json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "audit": "request",
            "client": self.client.to_string(),
            "token": self.token,
            "method": self.method.as_str(),
            "route": self.path,
            "status": status.map(|s| s.as_u16()),
            "outcome": outcome,
            "duration_ms": (self.started.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
        });
        eprintln!("{line}");
    }

    fn answered(&mut self, response: &Response) {
        let status = response.status();
        let outcome = response
            .extensions()
            .get::<Outcome>()
            .map(|o| o.0)
            .unwrap_or(if status.is_success() { "ok" } else { "error" });
        self.write(Some(status), outcome);
    }
}

impl Drop for AuditLine {
    fn drop(&mut self) {
        if !self.written {
            let outcome = if self.app.dropped.load(std::sync::atomic::Ordering::SeqCst) {
                "shutdown"
            } else {
                "client_gone"
            };
            self.write(None, outcome);
        }
    }
}

/// In front of every route: the allow-list (not for `/healthz`, which the
/// kubelet's probes reach from the node), then the token (not for
/// `/healthz`, nor `/metrics` with `--public-metrics`); around it all, the
/// audit line.
async fn guard(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let path = request.uri().path().to_owned();
    let mut audit = AuditLine {
        started: Instant::now(),
        client,
        token: None,
        method: request.method().clone(),
        path: path.clone(),
        written: false,
        app: Arc::clone(&app),
    };
    let health = path == "/healthz";
    // The page and its files carry no data: what it shows, it reads with
    // the token typed into it.
    let page = path == "/" || path.starts_with("/assets/");
    let open = health || page || (path == "/metrics" && app.public_metrics);
    // Hyper lets a head larger than its buffer through when it arrives in
    // one read: the limit is counted here, as the client sent it.
    let head_length = request.method().as_str().len()
        + request.uri().to_string().len()
        + " HTTP/1.1\r\n".len()
        + 1
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + 2)
            .sum::<usize>()
        + 2;
    let blocked = if open {
        None
    } else {
        app.throttle.blocked(client.ip())
    };
    let response = if head_length > super::HEAD_LIMIT {
        error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
            format!(
                "the request line and headers may be at most {} bytes",
                super::HEAD_LIMIT
            ),
            "head_too_large",
        )
    } else if !health && !app.allow.allows(client.ip()) {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this client's address is not in the allowed networks",
            "not_allowed",
        )
    } else if let Some(wait) = blocked {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed attempts",
            format!(
                "this client failed to authenticate {} times within {} s: try again in \
                 {seconds} s",
                super::throttle::FAILURES_ALLOWED,
                super::throttle::WINDOW.as_secs()
            ),
            "throttled",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        response
    } else {
        let given: Vec<&HeaderValue> = request
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .collect();
        let checked = match given.as_slice() {
            [] => app.tokens.check(None),
            [one] => app.tokens.check(Some(one.as_bytes())),
            // Two answers to "who are you" are no answer.
            _ => Err(Refused::Missing),
        };
        match checked {
            Ok((name, role)) => {
                audit.token = Some(name.to_owned());
                request.extensions_mut().insert(Caller {
                    token: name.to_owned(),
                    role,
                    client,
                });
                next.run(request).await
            }
            Err(_) if open => next.run(request).await,
            Err(refused) => {
                // A wrong token is a guess; a missing one guesses nothing.
                if matches!(refused, Refused::Unknown) {
                    app.throttle.failed(client.ip());
                }
                refusal(refused)
            }
        }
    };
    // Refused requests are written one by one only the first few times in
    // a client's window; the rest are counted and said in one line.
    let refused = matches!(
        response.extensions().get::<Outcome>().map(|o| o.0),
        Some("unauthorized" | "forbidden" | "not_allowed" | "throttled" | "head_too_large")
    );
    if refused && !app.throttle.audit_refusal(client.ip()) {
        audit.written = true;
    } else {
        audit.answered(&response);
    }
    let mut response = response;
    super::page::secure(response.headers_mut());
    response
}

/// The answer to a request without a valid token.
fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Missing => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer <token>`",
                "unauthorized",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"migrate\""),
            );
            response
        }
        Refused::Unknown => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token is not valid",
            "forbidden",
        ),
    }
}

async fn method_not_allowed(method: Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{method} is not served here"),
        "method_not_allowed",
    )
}

async fn not_found() -> Response {
    not_found_response()
}

pub(super) fn not_found_response() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found",
        "no such route",
        "not_found",
    )
}

/// A pooled connection lent to a read: dropped before [`Detached::done`]
/// (the read was cut off), its query is cancelled and it leaves the pool.
struct Detached {
    object: Option<deadpool_postgres::Object>,
    dsn: crate::dsn::Dsn,
}

impl Detached {
    /// The read ended: the connection goes back to the pool.
    fn done(mut self) {
        drop(self.object.take());
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        let token = object.cancel_token();
        drop(deadpool_postgres::Object::take(object));
        let dsn = self.dsn.clone();
        tokio::spawn(async move {
            let cancel = async {
                if dsn.tls_mode() == crate::dsn::TlsMode::Disable {
                    token.cancel_query(tokio_postgres::NoTls).await
                } else if let Ok(tls) = crate::store::tls::connector(&dsn) {
                    token.cancel_query(tls).await
                } else {
                    Ok(())
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
        });
    }
}

/// A read, bounded by [`READ_TIMEOUT`], on a pooled connection.
async fn read<T>(
    app: &App,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, Error>,
) -> Result<T, Response> {
    let work = async {
        let client = app.pool.get().await.map_err(|err| {
            let why = match err {
                // The server's own words (the DSN's password is not among
                // them), not the pool's "error creating an object".
                deadpool_postgres::PoolError::Backend(err) => DbFailure::from(err).to_string(),
                other => other.to_string(),
            };
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable",
                format!("{}: {why}", app.migrator.database().dsn.describe()),
                "unavailable",
            )
        })?;
        // A read cut off by READ_TIMEOUT is cancelled on the server and its
        // connection leaves the pool, rather than going on holding it. No
        // statement_timeout is set for the session: a pooler in front would
        // hand that setting to other clients.
        let client = Detached {
            object: Some(client),
            dsn: app.migrator.database().dsn.clone(),
        };
        let result = f(client.object.as_ref().expect("set above")).await;
        client.done();
        result.map_err(|err| failure_response(&err))
    };
    match tokio::time::timeout(READ_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "timed out",
            format!(
                "no answer from the database within {}s",
                READ_TIMEOUT.as_secs()
            ),
            "timeout",
        )),
    }
}

/// The status, title and audit outcome of an error.
fn failure_parts(err: &Error) -> (StatusCode, &'static str, &'static str) {
    match err {
        Error::MigrationFailed { .. }
        | Error::BootstrapFailed { .. }
        | Error::LockReleased { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "migration failed",
            "failed",
        ),
        Error::Drift { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the files and the database disagree",
            "drift",
        ),
        Error::Conflict(_) => (StatusCode::CONFLICT, "conflict", "conflict"),
        Error::Connect { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
            "unavailable",
        ),
        // A read ended by the pool's statement_timeout.
        Error::Database { failure, .. } if failure.code.as_deref() == Some("57014") => {
            (StatusCode::GATEWAY_TIMEOUT, "timed out", "timeout")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "failed", "failed"),
    }
}

fn failure_response(err: &Error) -> Response {
    let (status, title, outcome) = failure_parts(err);
    error(status, title, err.to_string(), outcome)
}

/// Whether a new connection can be made and answers, on a connection of
/// its own (a busy pool is not an unreachable database); one check at a
/// time, and its answer reused for a second, so that this one route
/// without a token cannot be used to flood the database with connections.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let mut last = app.health.lock().await;
    let reachable = match *last {
        Some((at, reachable)) if at.elapsed() < Duration::from_secs(1) => reachable,
        _ => {
            let dsn = &app.migrator.database().dsn;
            let check = async {
                let store = crate::store::Store::connect(dsn).await.ok()?;
                let answered = store.ping().await;
                store.close().await;
                answered.then_some(())
            };
            let reachable = matches!(
                tokio::time::timeout(Duration::from_secs(2), check).await,
                Ok(Some(()))
            );
            *last = Some((Instant::now(), reachable));
            reachable
        }
    };
    drop(last);
    if reachable {
        json_response(
            StatusCode::OK,
            json!({ "status": "ok", "database": "reachable" }),
            "ok",
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "database": "unreachable" }),
            "unavailable",
        )
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut response = app.live.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let report = match read(&app, async |client| app.migrator.status_on(client).await).await {
        Ok(report) => report,
        Err(response) => return response,
    };
    let (mut body, pending) = shapes::status(&report);
    app.live.set_pending(pending);
    let database = app.migrator.database();
    body["database"] = json!({
        "target": database.dsn.describe(),
        "schema": database.tracking.schema,
        "table": database.tracking.table,
    });
    // What runs after the migrations, every run.
    body["bootstrap_scripts"] = json!(match (&database.bootstrap, app.skip_bootstrap) {
        (Some(bootstrap), false) => bootstrap.scripts.iter().map(|s| s.file_name()).collect(),
        _ => Vec::new(),
    });
    body["approval"] = app
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(Pending::shown)
        .unwrap_or(Value::Null);
    json_response(StatusCode::OK, body, "ok")
}

/// `GET /admin/migrations/lock`: who holds the migration lock, as `migrate
/// lock` says it.
async fn lock(State(app): State<Arc<App>>) -> Response {
    match read(&app, async |client| app.migrator.lock_on(client).await).await {
        Ok(report) => json_response(StatusCode::OK, shapes::lock(&report), "ok"),
        Err(response) => response,
    }
}

/// `GET /admin/session`: who the token is, what it may do, and whether
/// runs need a second token's approval (the page asks it at sign-in).
async fn session(State(app): State<Arc<App>>, request: Request) -> Response {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return refusal(Refused::Missing);
    };
    json_response(
        StatusCode::OK,
        json!({
            "token": caller.token,
            "role": match caller.role {
                Role::Read => "read",
                Role::Run => "run",
            },
            "require_approval": app.approval_window.is_some(),
        }),
        "ok",
    )
}

async fn history(State(app): State<Arc<App>>) -> Response {
    let report = match read(&app, async |client| app.migrator.history_on(client).await).await {
        Ok(report) => report,
        Err(response) => return response,
    };
    json_response(StatusCode::OK, shapes::history(&report), "ok")
}

/// A run's body: `{"confirm": true}`, and optionally the versions the
/// client confirmed (`"expect": ["001", "002"]`): a run that would apply
/// any other is refused (409) before anything runs.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    confirm: bool,
    #[serde(default)]
    expect: Option<Vec<String>>,
}

/// An approval's body: `{"approval": "<id>"}`, and optionally the versions
/// the approver confirmed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    approval: String,
    #[serde(default)]
    expect: Option<Vec<String>>,
}

/// What both confirmed: a run may apply only versions in each list given.
fn both_expect(first: Option<Vec<String>>, second: Option<Vec<String>>) -> Option<Vec<String>> {
    match (first, second) {
        (Some(first), Some(second)) => {
            Some(first.into_iter().filter(|v| second.contains(v)).collect())
        }
        (first, second) => first.or(second),
    }
}

/// Reads a small JSON object body into `T`, refusing a key given twice (the
/// last one would win) and a field this server does not know (it would be
/// ignored); `None` for any other body that is not a `T` (`example` says
/// what to send).
async fn read_body<T: serde::de::DeserializeOwned>(
    request: Request,
    example: &str,
) -> Result<Option<T>, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
            format!("the body may be at most {BODY_LIMIT} bytes: {example}"),
            "too_large",
        )
    };
    // Said up front, refused up front (not after waiting for the bytes).
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let body = tokio::time::timeout(
        READ_TIMEOUT,
        axum::body::to_bytes(request.into_body(), BODY_LIMIT),
    );
    let body = match body.await {
        Ok(Ok(body)) => body,
        // A body that trickles in (or never comes) holds a connection.
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request timeout",
                format!("the body did not arrive within {}s", READ_TIMEOUT.as_secs()),
                "timeout",
            ));
        }
        Ok(Err(_)) => return Err(too_large()),
    };
    // An object: serde would take `[true]` for a struct too.
    let object = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object());
    match serde_json::from_slice::<T>(&body) {
        Ok(_) if !object => Ok(None),
        Ok(body) => Ok(Some(body)),
        Err(err)
            if err.to_string().contains("duplicate field")
                || err.to_string().contains("unknown field") =>
        {
            Err(error(
                StatusCode::BAD_REQUEST,
                "bad request body",
                format!("{err}: send exactly {example}"),
                "bad_body",
            ))
        }
        Err(_) => Ok(None),
    }
}

/// The run token of the request, or the answer that refuses it.
// The error is the answer itself, sent at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn caller_of(request: &Request) -> Result<Caller, Response> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no token",
                "unauthorized",
            )
        })?;
    if caller.role == Role::Read {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may read (status, history, metrics), not run migrations",
            "read_only",
        ));
    }
    Ok(caller)
}

/// `POST /admin/migrations/run` with `{"confirm": true}`: the run, or with
/// `--require-approval` a request another token must approve.
async fn run(State(app): State<Arc<App>>, request: Request) -> Response {
    let caller = match caller_of(&request) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let (confirmed, expect) = match read_body::<RunBody>(request, r#"{"confirm": true}"#).await {
        Ok(Some(body)) => (body.confirm, body.expect),
        Ok(None) => (false, None),
        Err(response) => return response,
    };
    if !confirmed {
        return error(
            StatusCode::BAD_REQUEST,
            "confirmation required",
            "send the JSON body {\"confirm\": true} to apply the pending migrations",
            "unconfirmed",
        );
    }
    let actor = format!("{} (API, from {})", caller.token, caller.client.ip());
    if let Some(window) = app.approval_window {
        return request_approval(&app, &caller, actor, expect, window);
    }
    start_run(app, caller, actor, expect).await
}

/// A run waiting for a second token's approval.
pub(super) struct Pending {
    id: String,
    requested_by: String,
    actor: String,
    /// The versions the requester confirmed, if it said.
    expect: Option<Vec<String>>,
    until: Instant,
}

impl Pending {
    /// What the status shows of it, while it can be approved.
    pub(super) fn shown(&self) -> Option<Value> {
        let now = Instant::now();
        (self.until > now).then(|| {
            json!({
                "approval": self.id,
                "requested_by": self.requested_by,
                "expires_in_seconds": (self.until - now).as_secs(),
                "migrations": self.expect,
            })
        })
    }
}

fn request_approval(
    app: &App,
    caller: &Caller,
    actor: String,
    expect: Option<Vec<String>>,
    window: Duration,
) -> Response {
    let mut pending = app.pending.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    // Asking again replaces one's own request (a changed list, say);
    // another token's request waits for its approval or its lapse.
    if let Some(waiting) = pending
        .as_ref()
        .filter(|p| p.until > now && p.requested_by != caller.token)
    {
        return error(
            StatusCode::CONFLICT,
            "a run awaits approval",
            format!(
                "{} asked for a run that awaits approval ({}, for {} s more): approve it with \
                 another token, or wait for it to lapse",
                waiting.requested_by,
                waiting.id,
                (waiting.until - now).as_secs()
            ),
            "awaiting_approval",
        );
    }
    let id = approval_id();
    let body = json!({
        "status": "awaiting_approval",
        "approval": id,
        "requested_by": caller.token,
        "expires_in_seconds": window.as_secs(),
        "migrations": expect,
    });
    *pending = Some(Pending {
        id,
        requested_by: caller.token.clone(),
        actor,
        expect,
        until: now + window,
    });
    drop(pending);
    app.events.send("approval_requested", &body);
    json_response(StatusCode::ACCEPTED, body, "awaiting_approval")
}

/// A hard-to-guess id for an approval request.
fn approval_id() -> String {
    use sha2::Digest;
    let seed = format!(
        "{:?} {} {:?}",
        SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    sha2::Sha256::digest(seed.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /admin/migrations/approve` with `{"approval": "<id>"}`: a second,
/// different run token approves the run another asked for, and it starts.
async fn approve(State(app): State<Arc<App>>, request: Request) -> Response {
    let caller = match caller_of(&request) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let (id, approver_expects) =
        match read_body::<ApproveBody>(request, r#"{"approval": "<id>"}"#).await {
            Ok(Some(body)) => (body.approval, body.expect),
            Ok(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "approval required",
                    "send the JSON body {\"approval\": \"<id>\"} with the id the run request got",
                    "unconfirmed",
                );
            }
            Err(response) => return response,
        };
    let actor = {
        let mut pending = app.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match pending.as_ref() {
            Some(p) if p.id == id && p.until > now => {
                if p.requested_by == caller.token {
                    return error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "a run is approved by a second, different token than the one that asked \
                         for it",
                        "self_approval",
                    );
                }
                let actor = format!(
                    "{}, approved by {} (API, from {})",
                    p.actor,
                    caller.token,
                    caller.client.ip()
                );
                (actor, pending.take())
            }
            _ => {
                return error(
                    StatusCode::CONFLICT,
                    "no such run awaits approval",
                    "the approval is unknown, already used, or lapsed: ask for the run again",
                    "no_approval",
                );
            }
        }
    };
    let (actor, taken) = actor;
    let expect = both_expect(
        taken.as_ref().and_then(|p| p.expect.clone()),
        approver_expects,
    );
    let response = start_run(Arc::clone(&app), caller, actor, expect).await;
    // A run that could not start (busy here, the lock held elsewhere, the
    // budget spent, the database down) leaves the approval to be used
    // again, if nothing took its place meanwhile; one refused because the
    // pending migrations changed since it was asked for is used up.
    let outcome = response.extensions().get::<Outcome>().map(|o| o.0);
    if matches!(
        outcome,
        Some("busy" | "locked" | "rate_limited" | "unavailable" | "shutting_down")
    ) {
        let mut pending = app.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            *pending = taken;
        }
    }
    response
}

/// The header of a run's answer that gives the run's number in the event
/// stream.
pub const RUN_HEADER: &str = "migrate-run";

/// Starts a run as `actor`, charged to `caller`'s budget, and answers with
/// its result; the streams see it start, each migration, and the answer.
async fn start_run(
    app: Arc<App>,
    caller: Caller,
    actor: String,
    expect: Option<Vec<String>>,
) -> Response {
    let Ok(running) = Arc::clone(&app.running).try_lock_owned() else {
        return error(
            StatusCode::CONFLICT,
            "a run is in progress",
            "another request to this server is applying migrations",
            "busy",
        );
    };
    // Checked with `running` held: shutdown sets the flag, then looks for
    // a run (see serve::run).
    if app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
            "the server is stopping; send the run to the next one",
            "shutting_down",
        );
    }
    if let Err(wait) = app.run_limit.take(&caller.token) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many runs",
            format!("try again in {seconds} s"),
            "rate_limited",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    // The run is a task of its own: a client that goes away does not stop
    // it, and shutdown waits for it (it holds `running`).
    let task_app = Arc::clone(&app);
    let task = tokio::spawn(async move {
        let _running = running;
        let run = task_app.events.new_run();
        task_app.events.send(
            "run_started",
            &json!({ "run": run, "token": caller.token, "actor": actor }),
        );
        let migrator = task_app
            .migrator
            .with_database(task_app.database_for(actor));
        let log = RunEvents {
            run,
            events: &task_app.events,
            holder: Mutex::new(None),
        };
        let options = UpOptions {
            skip_bootstrap: task_app.skip_bootstrap,
            out_of_order: task_app.out_of_order,
            expect,
            ..UpOptions::default()
        };
        let result = migrator.up(&options, &log).await;
        let done = match &result {
            Ok(report) => report.done.clone(),
            Err(failed) => failed.done.clone(),
        };
        // Refused for the lock, or because the pending migrations are not
        // the ones confirmed: nothing ran.
        let ran = match &result {
            Ok(report) => report.outcome != UpOutcome::SkippedLocked,
            Err(failed) => {
                !(matches!(*failed.cause, Error::Conflict(_))
                    && failed.done.applied.is_empty()
                    && failed.done.bootstrap.is_empty())
            }
        };
        if ran {
            task_app.live.add_run(&done, result.is_ok());
        }
        // Refused because another process holds the lock, or with nothing
        // to apply or run: like a busy server, that costs the budget
        // nothing (a CI loop asking again and again locks nobody out).
        let nothing_done = result.is_ok() && done.applied.is_empty() && done.bootstrap.is_empty();
        if !ran || nothing_done {
            task_app.run_limit.give_back(&caller.token);
        }
        let holder = log.holder.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (status, body, outcome) = run_answer(&result, holder);
        // The run's end, also when its client is gone.
        eprintln!(
            "{}",
            json!({
                "event": "run finished",
                "token": caller.token,
                "client": caller.client.to_string(),
                "outcome": outcome,
                "applied": done.applied.len(),
            })
        );
        task_app.events.send(
            "run_finished",
            &json!({
                "run": run,
                "status": status.as_u16(),
                "outcome": outcome,
                "body": body,
            }),
        );
        (status, body, outcome, run)
    });
    match task.await {
        Ok((status, body, outcome, run)) => {
            let mut response = json_response(status, body, outcome);
            // The run's number, as its events carry it.
            response
                .headers_mut()
                .insert(RUN_HEADER, HeaderValue::from(run));
            response
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            "the run stopped unexpectedly",
            "failed",
        ),
    }
}

/// The answer to a run: its status, body and audit outcome.
fn run_answer(
    result: &Result<crate::report::UpReport, crate::report::RunFailed>,
    holder: Option<LockHolder>,
) -> (StatusCode, Value, &'static str) {
    match result {
        Ok(report) => match report.outcome {
            UpOutcome::Applied => (StatusCode::OK, shapes::run_applied(report), "applied"),
            UpOutcome::SkippedLocked => (
                StatusCode::CONFLICT,
                shapes::locked(holder.as_ref()),
                "locked",
            ),
            _ => (StatusCode::OK, shapes::run_up_to_date(), "up_to_date"),
        },
        Err(failed) => {
            // What committed before the failure stays applied: say which.
            let (status, title, outcome) = failure_parts(&failed.cause);
            (
                status,
                shapes::run_failed(title, failed.cause.to_string(), &failed.done.applied),
                outcome,
            )
        }
    }
}
