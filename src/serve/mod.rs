//! `migrate serve`: the admin HTTP API (axum). Reads go through a small
//! deadpool-postgres pool; a run goes through the same engine as
//! `migrate up`, on a connection of its own, under the same advisory lock.
//! Every request is checked (allow-list, token), rate-limited where it
//! changes something, and written to the audit log (stderr, one JSON line
//! each); neither the DSN's password nor a token is ever written.

mod api;
mod auth;
mod deadline;
mod events;
mod limits;
mod page;
mod shapes;
mod throttle;

pub use auth::{MIN_TOKEN_LENGTH, Refused, Role, Tokens};
pub use deadline::WRITE_TIMEOUT;
pub use limits::{AllowList, RateLimit, RunBudget};

use crate::cli::ServeArgs;
use crate::dsn::{Dsn, TlsMode};
use crate::engine::parse_switch as parse_bool;
use crate::engine::{Database, LockMode, Migrator};
use crate::error::Error;
use crate::metrics::Live;
use crate::migration::scan;
use crate::render::Printer;
use crate::settings::{Environment, Settings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a read (status, history, health) may take before the client
/// gets a 504.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body read (`run`'s `{"confirm": true}` needs a few
/// bytes).
pub const BODY_LIMIT: usize = 16 * 1024;

/// The serve-only settings, resolved: flag, then environment, then default.
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub tokens: Tokens,
    pub public_metrics: bool,
    pub allow: AllowList,
    pub run_limit: u32,
    pub require_approval: bool,
}

impl ServeSettings {
    pub fn resolve(args: &ServeArgs, environment: &Environment) -> Result<ServeSettings, Error> {
        let given = |name: &str| environment.get_raw(name).map(str::to_owned);
        let env = |name: &str| environment.get(name).map(str::to_owned);
        let (listen, origin) = match (&args.listen, env("MIGRATE_LISTEN")) {
            (Some(flag), _) => (flag.clone(), "--listen"),
            (None, Some(var)) => (var, "MIGRATE_LISTEN"),
            (None, None) => ("127.0.0.1:8080".to_owned(), "--listen"),
        };
        let listen = listen.parse::<SocketAddr>().map_err(|_| Error::Config {
            origin: origin.into(),
            message: format!("`{listen}` is not an address and port, e.g. 127.0.0.1:8080"),
        })?;
        let token_file = args
            .token_file
            .clone()
            .or_else(|| env("MIGRATE_TOKEN_FILE").map(Into::into));
        let tokens = Tokens::load(env(auth::ENV_TOKEN_NAME).as_deref(), token_file.as_deref())?;
        let public_metrics = args.public_metrics
            || match env("MIGRATE_PUBLIC_METRICS") {
                None => false,
                Some(value) => parse_bool(&value).ok_or_else(|| Error::Config {
                    origin: "MIGRATE_PUBLIC_METRICS".into(),
                    message: format!("`{value}` is not one of true, false, 1, 0, yes, no"),
                })?,
            };
        let allow = if args.allow_from.is_empty() {
            // Set but empty is refused like `--allow-from ''`: a template
            // that meant to name networks must not open the server to all.
            let listed: Vec<String> = given("MIGRATE_ALLOW_FROM").into_iter().collect();
            AllowList::parse(&listed, "MIGRATE_ALLOW_FROM")?
        } else {
            AllowList::parse(&args.allow_from, "--allow-from")?
        };
        let run_limit = match (args.run_limit, env("MIGRATE_RUN_LIMIT")) {
            (Some(n), _) => Some((n, "--run-limit".to_owned())),
            (None, Some(text)) => Some((
                text.parse::<u32>().map_err(|_| Error::Config {
                    origin: "MIGRATE_RUN_LIMIT".into(),
                    message: format!("`{text}` is not a whole number of runs per minute"),
                })?,
                "MIGRATE_RUN_LIMIT".to_owned(),
            )),
            (None, None) => None,
        };
        let run_limit = match run_limit {
            Some((0, origin)) => {
                return Err(Error::Config {
                    origin,
                    message: "at least 1 run per minute".into(),
                });
            }
            Some((n, _)) => n,
            None => 6,
        };
        let require_approval = args.require_approval
            || match env("MIGRATE_REQUIRE_APPROVAL") {
                None => false,
                Some(value) => parse_bool(&value).ok_or_else(|| Error::Config {
                    origin: "MIGRATE_REQUIRE_APPROVAL".into(),
                    message: format!("`{value}` is not one of true, false, 1, 0, yes, no"),
                })?,
            };
        Ok(ServeSettings {
            listen,
            tokens,
            public_metrics,
            allow,
            run_limit,
            require_approval,
        })
    }
}

/// What every request handler shares.
pub(crate) struct App {
    /// The folder's migrations (read when the server starts) and the
    /// database settings every run starts from.
    migrator: Migrator,
    pool: deadpool_postgres::Pool,
    tokens: Tokens,
    allow: AllowList,
    public_metrics: bool,
    run_limit: RunBudget,
    /// Failed authentications per client, and refused requests not yet
    /// audited one by one.
    throttle: throttle::AuthThrottle,
    /// `--require-approval`: how long a run request waits for a second
    /// token's approval.
    approval_window: Option<Duration>,
    /// The run request awaiting approval, if any.
    pending: std::sync::Mutex<Option<api::Pending>>,
    /// Held by the run in progress; shutdown waits for it.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Set at the first signal: no run starts after it.
    stopping: AtomicBool,
    /// Set when shutdown stops waiting for the requests still open.
    dropped: AtomicBool,
    live: Live,
    skip_bootstrap: bool,
    out_of_order: bool,
    /// The last health check: when, and whether the database answered.
    health: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// What the runs do, to the event streams open.
    events: events::Events,
}

/// Runs the server until SIGTERM or SIGINT; a migration that is running
/// then finishes and is recorded before the process ends.
pub async fn run(settings: &Settings, args: &ServeArgs, printer: &Printer) -> Result<(), Error> {
    let serve = ServeSettings::resolve(args, &settings.environment)?;
    if settings.target.is_some() || settings.dry_run {
        return Err(Error::Usage(
            "--target and --dry-run are for `migrate up`: a run through the API applies every \
             pending migration"
                .into(),
        ));
    }
    let mut database = settings.database()?;
    // The API never runs without the lock, and never waits for it: a run
    // that finds it held answers 409 at once.
    database.lock = LockMode::SkipIfLocked;
    // A run with the database down answers 503 at once rather than
    // waiting for it.
    database.wait_for_db = Duration::ZERO;
    database.bootstrap = settings.bootstrap_scripts()?;
    // Read once, now: a file problem stops the server from starting, and
    // what it shows and runs is what it checked, whatever happens to the
    // folder later.
    let folder = settings.migrations_dir.clone();
    let migrations =
        tokio::task::spawn_blocking(move || scan(&folder).and_then(|scanned| scanned.load()))
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
            .map_err(Error::Files)?;
    let migrator = Migrator::new(migrations, database);
    let pool = pool(&migrator.database().dsn)?;

    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .map_err(|err| Error::Config {
            origin: "--listen".into(),
            message: format!("cannot listen on {}: {err}", serve.listen),
        })?;
    let address = listener.local_addr().map_err(|err| Error::Config {
        origin: "--listen".into(),
        message: err.to_string(),
    })?;
    let app = Arc::new(App {
        migrator,
        pool,
        tokens: serve.tokens,
        allow: serve.allow,
        public_metrics: serve.public_metrics,
        run_limit: RunBudget::per_minute(serve.run_limit),
        throttle: throttle::AuthThrottle::default(),
        approval_window: serve.require_approval.then_some(APPROVAL_WINDOW),
        pending: std::sync::Mutex::new(None),
        running: Arc::new(tokio::sync::Mutex::new(())),
        stopping: AtomicBool::new(false),
        dropped: AtomicBool::new(false),
        live: Live::default(),
        skip_bootstrap: settings.skip_bootstrap,
        out_of_order: settings.out_of_order,
        health: tokio::sync::Mutex::new(None),
        events: events::Events::default(),
    });
    if !address.ip().is_loopback() && app.allow.is_empty() {
        printer.warn(format!(
            "listening on {address} for every client: put it behind an internal ingress, or \
             name the networks allowed with --allow-from"
        ));
    }
    printer.line(format!(
        "listening on http://{address} ({} to {})",
        migrator_target(&app),
        app.migrator.database().tracking.display_state()
    ));
    // Listening from now on, so that a second signal is never missed.
    let mut signals = Signals::new()?;
    let on_first_signal = || {
        // A run that has taken `running` checks `stopping` after: either
        // it sees the flag and does not start, or this sees the run.
        app.stopping.store(true, Ordering::SeqCst);
        // The event streams end now, and hold no part of the drain.
        app.events.close();
        let run_in_progress = app.running.try_lock().is_err();
        if run_in_progress {
            printer.line(
                "shutting down: waiting for the running migration to finish (signal again to \
                 stop without waiting; the database rolls back what has not committed)",
            );
        }
        run_in_progress
    };
    // Refused requests not written one by one: one line per client and
    // window, once the window ends (and the rest at the end).
    let summaries = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticks.tick().await;
                write_unaudited(&app, false);
            }
        })
    };
    let mut forced = serve_connections(
        listener,
        api::router(Arc::clone(&app)),
        &mut signals,
        on_first_signal,
        &app,
    )
    .await;
    if !forced {
        // A run whose client is gone still finishes, unless told again.
        tokio::select! {
            _finished = app.running.lock() => {}
            () = signals.next() => forced = true,
        }
    }
    summaries.abort();
    write_unaudited(&app, true);
    if forced && app.running.try_lock().is_err() {
        // Returning ends the runtime: the run's connection closes and the
        // database rolls its transaction back.
        return Err(Error::Stopped(
            "stopped without waiting for the running migration: the database rolls back \
             what it had not committed; the journal has no entry for it"
                .into(),
        ));
    }
    printer.line("stopped");
    Ok(())
}

/// The audit of a request or connection refused before the router (a
/// connection over the caps, a head too large, malformed or too slow):
/// aggregated per client as other refusals are.
fn audit_below_router(app: &App, peer: SocketAddr, outcome: &str) {
    if app.throttle.audit_refusal(peer.ip()) {
        eprintln!(
            "{}",
            serde_json::json!({
                "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "audit": "request",
                "client": peer.to_string(),
                "token": null,
                "method": null,
                "route": null,
                "status": null,
                "outcome": outcome,
                "duration_ms": null,
            })
        );
    }
}

/// One audit line for each client's refused requests that were counted
/// rather than written (all windows with `all`, else the ended ones).
fn write_unaudited(app: &App, all: bool) {
    for unaudited in app.throttle.ended(all) {
        eprintln!(
            "{}",
            serde_json::json!({
                "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "audit": "refused",
                "client": unaudited.client.to_string(),
                "since": humantime::format_rfc3339_millis(unaudited.since).to_string(),
                "requests": unaudited.requests,
            })
        );
    }
}

fn migrator_target(app: &App) -> String {
    app.migrator.database().dsn.describe()
}

/// How long a run request waits for its approval (`--require-approval`).
pub const APPROVAL_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The most connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 256;

/// The most bytes of a request's head (request line and headers). Hyper
/// refuses a head that does not fit its buffer of this size; one that
/// arrives whole in a single read may be larger, and is refused by the
/// router's guard, which counts it.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// The most connections of one client (an IPv6 one by its /64) at once, so
/// that one address cannot take the others' places.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;

/// Connections from outside `--allow-from`, which may only ask for
/// `/healthz` (the kubelet's probes come from the node): a few places of
/// their own, apart from [`MAX_CONNECTIONS`].
pub const MAX_OUTSIDE_CONNECTIONS: usize = 16;

/// How many connections each client has open.
#[derive(Clone, Default)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One client's place, given back when its connection ends.
struct ClientPlace {
    clients: PerClient,
    key: std::net::IpAddr,
}

impl PerClient {
    fn enter(&self, client: std::net::IpAddr) -> Option<ClientPlace> {
        let key = throttle::key(client);
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ClientPlace {
            clients: self.clone(),
            key,
        })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// How long a client may take to send a request's head (also the next one
/// on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// After SIGTERM, how long requests in flight may take to finish before
/// their connections are dropped. A run is a task of its own and always
/// finishes; its answer then has [`ANSWER_TIMEOUT`] more to be sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// After a run that outlasted [`DRAIN_TIMEOUT`] has finished, how long its
/// answer (and any other) may take to be written before the process ends.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The accept loop: HTTP/1.1 with a deadline on each request's head and a
/// cap on connections (so slow or idle clients hold neither the server nor
/// its shutdown), each request told its peer address. (axum's own `serve`
/// sets no header deadline.)
///
/// Returns whether a second signal cut the shutdown short.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    signals: &mut Signals,
    on_first_signal: impl FnOnce() -> bool,
    app: &Arc<App>,
) -> bool {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let outside = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSIDE_CONNECTIONS));
    let per_client = PerClient::default();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(HEAD_LIMIT);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of file descriptors, say: breathe, then go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = signals.next() => break,
        };
        // An IPv4 client of a dual-stack socket is written as 10.1.2.3,
        // not ::ffff:10.1.2.3, in the audit log and the journal.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // Clients outside the allowed networks take none of the others'
        // places, and no client more than its share: the rest are closed
        // as they come.
        let pool = if app.allow.allows(peer.ip()) {
            &slots
        } else {
            &outside
        };
        let Ok(slot) = Arc::clone(pool).try_acquire_owned() else {
            drop(stream);
            audit_below_router(app, peer, "too_many_connections");
            continue;
        };
        let Some(place) = per_client.enter(peer.ip()) else {
            drop(stream);
            audit_below_router(app, peer, "too_many_connections");
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower_service::Service::call(&mut router.clone(), request)
            },
        );
        let connection = graceful.watch(http.serve_connection(
            hyper_util::rt::TokioIo::new(deadline::WriteDeadline::new(stream)),
            service,
        ));
        let app = Arc::clone(app);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // What hyper refused before any route saw it.
                let outcome = if err.is_parse_too_large() {
                    Some("head_too_large")
                } else if err.is_parse() {
                    Some("bad_request")
                } else if err.is_timeout() {
                    Some("head_timeout")
                } else {
                    None
                };
                if let Some(outcome) = outcome {
                    audit_below_router(&app, peer, outcome);
                }
            }
            drop(place);
            drop(slot);
        });
    }
    drop(listener);
    let run_at_signal = on_first_signal();
    // Requests in flight get DRAIN_TIMEOUT; a run in progress gets as long
    // as it takes, and then its answer ANSWER_TIMEOUT to reach the client.
    // (No run starts after the signal.)
    let deadline = async {
        tokio::time::sleep(DRAIN_TIMEOUT).await;
        if run_at_signal {
            let _finished = app.running.lock().await;
            tokio::time::sleep(ANSWER_TIMEOUT).await;
        }
    };
    let forced = tokio::select! {
        () = graceful.shutdown() => return false,
        () = deadline => false,
        () = signals.next() => true,
    };
    // The connections left are the server's to drop: their audit lines
    // say so, not that the client went away.
    app.dropped.store(true, Ordering::SeqCst);
    forced
}

/// SIGTERM (Kubernetes) and SIGINT (a terminal), listened for from the
/// start to the end, so that a second one is never lost.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind).map_err(|err| Error::Config {
                origin: "migrate serve".into(),
                message: format!("cannot listen for signals: {err}"),
            })
        };
        Ok(Signals {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// A small pool for the reads, named `migrate (serve)` in
/// pg_stat_activity unless the connection string names it.
fn pool(dsn: &Dsn) -> Result<deadpool_postgres::Pool, Error> {
    let dsn = if dsn.config.get_application_name() == Some("migrate") {
        dsn.with_application_name("migrate (serve)")
    } else {
        dsn.clone()
    };
    let mut config = dsn.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let manager_config = deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    };
    let manager = if dsn.tls_mode() == TlsMode::Disable {
        deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    } else {
        let tls = crate::store::tls::connector(&dsn)?;
        deadpool_postgres::Manager::from_config(config, tls, manager_config)
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(READ_TIMEOUT))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|err| Error::Config {
            origin: "migrate serve".into(),
            message: format!("cannot set up the connection pool: {err}"),
        })
}

impl App {
    /// The settings of one run: the caller is its actor in the journal.
    fn database_for(&self, actor: String) -> Database {
        let mut database = self.migrator.database().clone();
        database.actor = Some(actor);
        database
    }
}
