//! `mesh up --ui`: a read-only live page of the running mesh.
//!
//! ```text
//!   Lab ──View──▶ Page::publish ──watch──▶ GET /events (server-sent events, one `state` per change)
//!                                    └───▶ GET /state  (the same picture, once)
//!   GET / , /app.js , /style.css: the page itself, embedded in the binary (works offline)
//! ```
//!
//! The lab publishes at most every [`PUBLISH_EVERY`]; each event carries the whole [`view::View`]
//! (bounded lists), so a page that missed some simply shows the newest. The server binds loopback
//! only, answers only requests whose `Host` is that address (a DNS-rebinding page elsewhere cannot
//! read it), holds at most [`MAX_WATCHERS`] event streams, and serves a strict
//! Content-Security-Policy: the page runs its own script and talks to its own origin, nothing else.

pub mod view;

use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Fewest time between two pictures the lab publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Event streams served at once (open tabs); one more is refused with 503.
pub const MAX_WATCHERS: usize = 16;
/// Where `--ui` with no address serves: loopback, a port the kernel picks.
pub const DEFAULT_ADDR: &str = "127.0.0.1:0";

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Shared {
    picture: watch::Receiver<Arc<str>>,
    watchers: Arc<Semaphore>,
    /// The `Host` values this server answers: its own address, and `localhost:PORT`.
    hosts: Arc<[String]>,
}

/// The page being served.
pub struct Page {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    picture: watch::Sender<Arc<str>>,
    task: JoinHandle<()>,
}

impl Page {
    /// Binds `addr` (loopback only) and serves the page until dropped.
    pub async fn serve(addr: SocketAddr) -> anyhow::Result<Page> {
        if !addr.ip().is_loopback() {
            bail!(
                "--ui {addr}: the live page has no login, so it serves on loopback only \
                 (127.0.0.1 or [::1]); reach it from elsewhere through an SSH tunnel"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--ui: binding {addr}"))?;
        let local = listener.local_addr()?;
        let (picture, watched) = watch::channel(Arc::<str>::from("{}"));
        let shared = Shared {
            picture: watched,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            hosts: vec![local.to_string(), format!("localhost:{}", local.port())].into(),
        };
        let app = router(shared);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the live page stopped serving");
            }
        });
        Ok(Page {
            url: format!("http://{local}/"),
            picture,
            task,
        })
    }

    /// Shows `view` to every open page.
    pub fn publish(&self, view: &view::View) {
        match serde_json::to_string(view) {
            Ok(json) => {
                self.picture.send_replace(Arc::from(json));
            }
            Err(e) => tracing::warn!(error = %e, "the live page's picture did not serialize"),
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/state", get(state))
        .route("/events", get(events))
        .layer(middleware::from_fn_with_state(shared.clone(), own_host))
        .with_state(shared)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Refuses a request for another host name, and sets the headers every answer carries.
async fn own_host(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !shared.hosts.iter().any(|h| h == host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!("this page answers only for {}", shared.hosts.join(" or ")),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn state(State(shared): State<Shared>) -> Response {
    let picture = shared.picture.borrow().clone();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        picture.to_string(),
    )
        .into_response()
}

async fn events(State(shared): State<Shared>) -> Response {
    let Ok(permit) = shared.watchers.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_WATCHERS} pages are already watching this mesh"),
        )
            .into_response();
    };
    let mut picture = shared.picture.clone();
    // The first event is the picture as it is now.
    picture.mark_changed();
    let stream = futures::stream::unfold((picture, permit), |(mut picture, permit)| async move {
        picture.changed().await.ok()?;
        let json = picture.borrow_and_update().clone();
        let event = Event::default().event("state").data(&*json);
        Some((Ok::<_, Infallible>(event), (picture, permit)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
