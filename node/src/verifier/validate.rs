//! The HTTP front: `POST /validate/check`, answered in privacyIDEA's shape so an integration
//! written for it can point here.
//!
//! ```text
//! POST /validate/check   Authorization: Bearer TOKEN   body (≤ 4 KiB): user=…&pass=…  or
//!                        {"user": "…", "pass": "…"}
//!   200 {"result":{"status":true,"value":true|false},"detail":{"message":"accepted|wrong|…"}}
//!   401 / 400 / 404 / 405 / 413 / 429 {"result":{"status":false,"error":{"code":…,"message":"…"}}}
//!   (429: past the party's rate_per_s, with Retry-After: 1)
//! ```

use super::rate::Buckets;
use super::{Label, Metrics, Party};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::{debug, info};
use zeroize::Zeroizing;

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest body.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A request's head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing.
pub const MAX_CONNECTION_TIME: Duration = Duration::from_secs(30);

/// The relying parties and their rate buckets (by index in the tokens file).
struct Parties {
    listed: Vec<Party>,
    buckets: Mutex<Buckets<usize>>,
}

/// Serves `/validate/check` on `listener` until the node stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    parties: Vec<Party>,
    node: crate::Client,
    metrics: Metrics,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let parties = Arc::new(Parties {
        listed: parties,
        buckets: Mutex::new(Buckets::default()),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(error = %e, "validate: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .dropped
                .get_or_create(&Label {
                    front: "http",
                    outcome: "busy",
                })
                .inc();
            continue;
        };
        let (parties, node, metrics) = (parties.clone(), node.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let (parties, node, metrics) = (parties.clone(), node.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(respond(request, &parties, &node, &metrics).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_TIME, connection).await;
        });
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    answer(
        status,
        json!({"result": {"status": false, "error": {"code": status.as_u16(), "message": message}}}),
    )
}

/// The relying party whose token `header` carries, by index (every token compared, in constant
/// time).
fn party(parties: &[Party], header: Option<&HeaderValue>) -> Option<usize> {
    let given = header?.as_bytes().strip_prefix(b"Bearer ")?;
    let mut found = None;
    for (i, p) in parties.iter().enumerate() {
        if bool::from(p.token.as_bytes().ct_eq(given)) {
            found = Some(i);
        }
    }
    found
}

/// (user, pass) from a form or JSON body.
pub fn credentials(json: bool, body: &[u8]) -> Option<(String, Zeroizing<String>)> {
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let user = v.get("user")?.as_str()?.to_string();
        let pass = Zeroizing::new(v.get("pass")?.as_str()?.to_string());
        return Some((user, pass));
    }
    let (mut user, mut pass) = (None, None);
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "user" => user = Some(v.into_owned()),
            "pass" => pass = Some(Zeroizing::new(v.into_owned())),
            _ => {}
        }
    }
    Some((user?, pass?))
}

/// Every reason the HTTP front counts a request as dropped, so the counters exist at zero.
pub const DROP_LABELS: [&str; 7] = [
    "busy",
    "not_found",
    "method",
    "unauthorised",
    "rate_limited",
    "too_large",
    "missing_parameter",
];

async fn respond(
    request: Request<Incoming>,
    parties: &Parties,
    node: &crate::Client,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let dropped = |why: &'static str| {
        metrics
            .dropped
            .get_or_create(&Label {
                front: "http",
                outcome: why,
            })
            .inc();
    };
    if request.uri().path() != "/validate/check" {
        dropped("not_found");
        return error(StatusCode::NOT_FOUND, "only POST /validate/check is served");
    }
    if request.method() != Method::POST {
        dropped("method");
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "POST /validate/check");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(index) = party(&parties.listed, request.headers().get(AUTHORIZATION)) else {
        dropped("unauthorised");
        info!("validate: request without a known bearer token refused");
        return error(StatusCode::UNAUTHORIZED, "a known bearer token is required");
    };
    let party = &parties.listed[index];
    let within_rate = parties.buckets.lock().expect("validate buckets lock").take(
        index,
        party.rate_per_s,
        Instant::now(),
    );
    if !within_rate {
        dropped("rate_limited");
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("more than {} checks a second", party.rate_per_s),
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let party = party.name.clone();
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => Zeroizing::new(b.to_bytes().to_vec()),
        Err(_) => {
            dropped("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a body is at most {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let Some((user, pass)) = credentials(json, &body) else {
        dropped("missing_parameter");
        return error(StatusCode::BAD_REQUEST, "user and pass are required");
    };
    let (outcome, detail) = match node.check(user.clone(), pass).await {
        Ok(o) => o,
        Err(_) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
        }
    };
    metrics
        .answered
        .get_or_create(&Label {
            front: "http",
            outcome: outcome.as_str(),
        })
        .inc();
    info!(?user, %party, outcome = outcome.as_str(), %detail, "validate: checked");
    answer(
        StatusCode::OK,
        json!({
            "result": {"status": true, "value": outcome.accepted()},
            "detail": {"message": outcome.as_str()}
        }),
    )
}
