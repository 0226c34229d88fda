//! `GET /admin/migrations/events`: what the runs of this server do, as
//! server-sent events, from the engine's own events: each migration as it
//! starts and ends, then the run's answer. The admin page shows a run live
//! from it, whichever page or client started it.

use super::App;
use super::api::Caller;
use crate::report::{Event, Reporter};
use crate::state::LockHolder;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, watch};

/// How often a quiet stream says it is alive (proxies close idle ones).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most streams open at once, apart from the connection cap's other
/// uses: streams are the one way to hold a connection for long, so they
/// may never take more than a quarter of [`super::MAX_CONNECTIONS`].
pub const MAX_STREAMS: usize = 64;

/// The most streams one token may hold open (tabs, say).
pub const MAX_STREAMS_PER_TOKEN: usize = 8;

/// A stream ends after this long; the page opens another.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Events not yet sent to a slow reader before it misses some.
const BACKLOG: usize = 256;

/// The events of this server's runs, to every stream open.
pub(super) struct Events {
    sender: broadcast::Sender<Bytes>,
    /// Set at shutdown: every stream ends.
    stop: watch::Sender<bool>,
    /// The number of the next run.
    next_run: std::sync::atomic::AtomicU64,
    /// Streams open, per token.
    open: Mutex<HashMap<String, usize>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            sender: broadcast::channel(BACKLOG).0,
            stop: watch::channel(false).0,
            next_run: std::sync::atomic::AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl Events {
    /// Sends `name` with `data` (a JSON object) to every open stream.
    pub(super) fn send(&self, name: &str, data: &Value) {
        let _ = self.sender.send(frame(name, data));
    }

    /// A number for a new run, that its events carry.
    pub(super) fn new_run(&self) -> u64 {
        self.next_run
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends every stream (shutdown), so that none holds the drain.
    pub(super) fn close(&self) {
        self.stop.send_replace(true);
    }
}

/// One server-sent event. JSON has no raw line breaks, so `data` is one
/// line.
fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A stream's place among [`MAX_STREAMS`], given back when it ends, with
/// an audit line saying how long it was open and why it ended.
struct StreamPlace {
    app: Arc<App>,
    token: String,
    client: SocketAddr,
    started: Instant,
    /// Why it ended, when it ended of itself.
    ended: Option<&'static str>,
}

impl StreamPlace {
    fn take(app: &Arc<App>, token: &str, client: SocketAddr) -> Option<StreamPlace> {
        let mut open = app.events.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(token).copied().unwrap_or(0);
        if total >= MAX_STREAMS || mine >= MAX_STREAMS_PER_TOKEN {
            return None;
        }
        *open.entry(token.to_owned()).or_insert(0) += 1;
        Some(StreamPlace {
            app: Arc::clone(app),
            token: token.to_owned(),
            client,
            started: Instant::now(),
            ended: None,
        })
    }
}

impl StreamPlace {
    /// The stream ends of itself, for `why`.
    fn end(&mut self, why: &'static str) {
        self.ended = Some(why);
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        {
            let mut open = self
                .app
                .events
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = open.get_mut(&self.token) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.token);
                }
            }
        }
        eprintln!(
            "{}",
            json!({
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "audit": "stream_ended",
                "client": self.client.to_string(),
                "token": self.token,
                "route": "/admin/migrations/events",
                "reason": self.ended.unwrap_or("client_gone"),
                "duration_ms": (self.started.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
            })
        );
    }
}

/// The stream: a `hello` first (so the client knows it is connected), then
/// the events as they come, a comment every [`KEEP_ALIVE`], and the end at
/// shutdown or after [`STREAM_LIFETIME`].
pub(super) async fn stream(State(app): State<Arc<App>>, request: Request) -> Response {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return super::api::not_found_response();
    };
    let Some(place) = StreamPlace::take(&app, &caller.token, caller.client) else {
        let mut response = super::api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams",
            format!(
                "at most {MAX_STREAMS} streams are open at once, {MAX_STREAMS_PER_TOKEN} per \
                 token: close one, or try again later"
            ),
            "too_many_streams",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(30));
        return response;
    };
    let receiver = app.events.sender.subscribe();
    let stop = app.events.stop.subscribe();
    let hello = frame(
        "hello",
        &json!({ "keep_alive_seconds": KEEP_ALIVE.as_secs() }),
    );
    struct Open {
        receiver: broadcast::Receiver<Bytes>,
        stop: watch::Receiver<bool>,
        first: Option<Bytes>,
        until: tokio::time::Instant,
        place: StreamPlace,
    }
    let open = Open {
        receiver,
        stop,
        first: Some(hello),
        until: tokio::time::Instant::now() + STREAM_LIFETIME,
        place,
    };
    let body = futures_util::stream::unfold(open, |mut open| async move {
        if let Some(first) = open.first.take() {
            return Some((Ok::<_, std::convert::Infallible>(first), open));
        }
        if *open.stop.borrow() {
            open.place.end("shutdown");
            return None;
        }
        let next = tokio::select! {
            received = open.receiver.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    frame("lagged", &json!({ "missed": missed }))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": still here\n\n"),
            () = tokio::time::sleep_until(open.until) => {
                open.place.end("lifetime");
                return None;
            }
            _ = open.stop.wait_for(|stop| *stop) => {
                open.place.end("shutdown");
                return None;
            }
        };
        Some((Ok(next), open))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    // A reverse proxy (nginx) would otherwise hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The engine's events of one API run: sent to the streams, written to the
/// log, and the lock's holder kept when the lock is taken elsewhere.
pub(super) struct RunEvents<'a> {
    pub run: u64,
    pub events: &'a Events,
    pub holder: Mutex<Option<LockHolder>>,
}

impl Reporter for RunEvents<'_> {
    fn event(&self, event: Event<'_>) {
        let run = self.run;
        let (name, data, logged) = match event {
            Event::LockSkipped { holder } => {
                *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = holder.cloned();
                return;
            }
            Event::Plan {
                steps, bootstrap, ..
            } => (
                "plan",
                json!({
                    "run": run,
                    "migrations": steps.iter().map(|s| json!({
                        "version": s.migration.version.as_str(),
                        "name": s.migration.name,
                    })).collect::<Vec<_>>(),
                    "bootstrap_scripts": bootstrap,
                }),
                None,
            ),
            Event::Applying {
                migration,
                index,
                total,
            } => (
                "migration_started",
                json!({
                    "run": run,
                    "version": migration.version.as_str(),
                    "name": migration.name,
                    "index": index,
                    "total": total,
                }),
                None,
            ),
            Event::Applied {
                migration, applied, ..
            } => (
                "migration_applied",
                json!({
                    "run": run,
                    "version": migration.version.as_str(),
                    "name": migration.name,
                    "duration_ms": applied.duration.as_millis() as u64,
                }),
                Some("migration applied"),
            ),
            Event::Failed {
                migration, failure, ..
            } => (
                "migration_failed",
                json!({
                    "run": run,
                    "version": migration.version.as_str(),
                    "name": migration.name,
                    "error": failure.to_string(),
                }),
                Some("migration failed"),
            ),
            Event::Blocked {
                migration,
                blockers,
            } => (
                "migration_blocked",
                json!({
                    "run": run,
                    "version": migration.version.as_str(),
                    "name": migration.name,
                    "blockers": blockers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
                None,
            ),
            Event::Retrying {
                migration,
                attempt,
                attempts,
                pause,
            } => (
                "migration_retrying",
                json!({
                    "run": run,
                    "version": migration.version.as_str(),
                    "name": migration.name,
                    "attempt": attempt,
                    "attempts": attempts,
                    "pause_ms": pause.as_millis() as u64,
                }),
                None,
            ),
            Event::Bootstrapping { script, .. } => (
                "bootstrap_started",
                json!({ "run": run, "script": script }),
                None,
            ),
            Event::Bootstrapped { script, duration } => (
                "bootstrap_ran",
                json!({
                    "run": run,
                    "script": script,
                    "duration_ms": duration.as_millis() as u64,
                }),
                Some("bootstrap script ran"),
            ),
            _ => return,
        };
        self.events.send(name, &data);
        if let Some(logged) = logged {
            let mut line = data;
            line["event"] = json!(logged);
            if let Some(object) = line.as_object_mut() {
                object.remove("run");
            }
            eprintln!("{line}");
        }
    }

    /// The client confirmed in its request.
    fn confirm(&self) -> bool {
        true
    }
}
