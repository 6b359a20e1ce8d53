//! `login` steps: a user types a code at a verifier's door, as a service's client would.
//!
//! ```text
//! code: fresh (single: the user's last OTP · threshold: `otpmesh code` as the user, now)
//!       again (the code the user had last) · wrong (the fresh one, off by one)
//!   ─► RADIUS: Access-Request, PAP User-Password, Message-Authenticator; retransmitted every
//!      RETRANSMIT until an authentic Access-Accept/Reject (the verifier's RFC 5080 cache
//!      answers a retransmission without judging it again); Reply-Message = the outcome
//!   ─► HTTP: POST /validate/check {user, pass} with the bearer token; detail.message = outcome
//! ```
//! Both fronts are the verifier's real ones on 127.0.0.1, with the secrets from its 0600 files.

use super::backend::Backend;
use super::layout::Door;
use super::runner::{Judged, Runner};
use super::spec::{Front, LoginCode, LoginExpect};
use anyhow::{anyhow, bail, Context};
use otpmesh_node::verifier::radius;
use otpmesh_protocol::role::verifier::Outcome;
use otpmesh_protocol::role::Failure;
use otpmesh_protocol::threshold::code;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// How long a login may take, unless the step says.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a RADIUS client retransmits an unanswered request.
const RETRANSMIT: Duration = Duration::from_secs(1);
/// The largest HTTP answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// A fresh threshold code has at least this long left, or the next step's is taken: the steps
/// that follow a fresh login (its replays) then look at the same step.
const MIN_SECONDS_LEFT: u64 = 8;

/// What the door answered.
#[derive(Debug)]
pub struct Answer {
    /// Access-Accept, or `"value": true`.
    pub accepted: bool,
    /// The outcome the answer names (Reply-Message, `detail.message`).
    pub outcome: Option<Outcome>,
    /// The answer as text, for the report.
    pub text: String,
}

impl Answer {
    fn new(accepted: bool, message: String) -> Answer {
        Answer {
            accepted,
            outcome: Outcome::from_text(&message),
            text: format!(
                "{} ({message})",
                if accepted { "accepted" } else { "rejected" }
            ),
        }
    }
}

/// One Access-Request for (user, code) at the door's RADIUS front.
pub async fn radius(
    door: &Door,
    user: &str,
    code: &str,
    within: Duration,
) -> anyhow::Result<Answer> {
    use rand::RngCore;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut authenticator = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut authenticator);
    let id = authenticator[0];
    let secret = door.secret.as_bytes();
    let request = zeroize::Zeroizing::new(radius::access_request(
        id,
        authenticator,
        user,
        code.as_bytes(),
        secret,
        true,
    ));
    let end = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    while tokio::time::Instant::now() < end {
        socket.send_to(&request, door.radius).await?;
        let until = (tokio::time::Instant::now() + RETRANSMIT).min(end);
        while let Ok(got) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            let (n, _) = got?;
            if !radius::response_is_authentic(&buf[..n], &authenticator, secret) {
                continue;
            }
            let packet = radius::Packet::decode(&buf[..n])
                .map_err(|d| anyhow!("the verifier's answer does not decode: {d}"))?;
            let message = packet
                .attribute(radius::REPLY_MESSAGE)
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            return match packet.code {
                radius::ACCESS_ACCEPT => Ok(Answer::new(true, message)),
                radius::ACCESS_REJECT => Ok(Answer::new(false, message)),
                other => bail!("the verifier answered with RADIUS code {other}"),
            };
        }
    }
    bail!(
        "no authentic RADIUS answer from {} within {within:?}",
        door.radius
    )
}

/// One `POST /validate/check` for (user, code) at the door's HTTP front.
pub async fn http(door: &Door, user: &str, code: &str, within: Duration) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(door.http)
            .await
            .with_context(|| format!("connecting to the verifier's HTTP front {}", door.http))?;
        let body =
            zeroize::Zeroizing::new(serde_json::json!({"user": user, "pass": code}).to_string());
        let head = format!(
            "POST /validate/check HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            door.http,
            door.token.as_str(),
            body.len()
        );
        let head = zeroize::Zeroizing::new(head);
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| anyhow!("no HTTP answer from {} within {within:?}", door.http))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the HTTP answer has no body: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    // "HTTP/1.1 200 OK": the code is the second word.
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    if code != Some(200) {
        bail!("the HTTP front answered {status}: {body}");
    }
    let value: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("reading the HTTP answer {body:?}"))?;
    let accepted = value["result"]["value"]
        .as_bool()
        .ok_or_else(|| anyhow!("the HTTP answer has no result.value: {body}"))?;
    let message = value["detail"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Answer::new(accepted, message))
}

impl Runner<'_> {
    /// A `login` step: `user` types a code at `verifier`'s `via` front.
    pub async fn login(
        &mut self,
        user: &str,
        verifier: &str,
        via: Front,
        choice: LoginCode,
        within: Duration,
        expect: &LoginExpect,
    ) -> anyhow::Result<Judged> {
        let threshold = self.scenario.settings.threshold.is_some();
        let digits = match threshold {
            true => self.scenario.settings.code_digits as usize,
            false => self.scenario.settings.digits.get() as usize,
        };
        let code = match choice {
            LoginCode::Fresh => {
                self.fresh_code(user, threshold, MIN_SECONDS_LEFT, within)
                    .await?
            }
            LoginCode::Again => self
                .state
                .typed
                .get(user)
                .cloned()
                .ok_or_else(|| anyhow!("{user} has typed no code to type again"))?,
            LoginCode::Wrong => match self.fresh_code(user, threshold, 0, within).await {
                Ok(fresh) => Zeroizing::new(wrong(&fresh, digits)),
                // Threshold mode with too few distributors for the user's own code: a code drawn
                // from the seed (one in 10^digits to be right by chance).
                Err(e) if threshold => {
                    tracing::debug!(%user, error = %e, "no code to be wrong about");
                    let drawn = super::layout::derive_u64(self.seed, &format!("wrong/{user}"));
                    Zeroizing::new(format!("{:0digits$}", drawn % 10u64.pow(digits as u32)))
                }
                Err(e) => return Err(e),
            },
        };
        if choice == LoginCode::Fresh {
            self.state.typed.insert(user.to_string(), code.clone());
        }
        let answer = match &mut self.backend {
            // The simulator has no sockets: the verifier decides as its fronts would ask it.
            Backend::Sim(sim) => match sim.check(verifier, user, &code, within)? {
                Some((outcome, _)) => Ok(Answer::new(outcome.accepted(), outcome.as_str().into())),
                None => Err(anyhow!("{verifier} decided nothing within {within:?}")),
            },
            _ => {
                let door = self
                    .layout
                    .node(verifier)
                    .door
                    .clone()
                    .ok_or_else(|| anyhow!("{verifier} has no fronts"))?;
                match via {
                    Front::Radius => radius(&door, user, &code, within).await,
                    Front::Http => http(&door, user, &code, within).await,
                }
            }
        };
        let want = expect.result.unwrap_or(Outcome::Accepted);
        let front = match via {
            Front::Radius => "RADIUS",
            Front::Http => "HTTP",
        };
        Ok(match answer {
            Ok(a) => Judged {
                passed: a.outcome == Some(want) && a.accepted == want.accepted(),
                outcome: format!("{user} at {verifier} ({front}): {}", a.text),
                expected: want.as_str().into(),
            },
            Err(e) => Judged {
                outcome: format!("{user} at {verifier} ({front}): {e:#}"),
                expected: want.as_str().into(),
                passed: false,
            },
        })
    }

    /// The user's newest code: its last OTP (single mode), or its current time-step code with at
    /// least `min_left` seconds left (threshold mode; while the mesh is younger than a round's
    /// margin, or too near a step's end, it waits for the next step, within `within`).
    async fn fresh_code(
        &mut self,
        user: &str,
        threshold: bool,
        min_left: u64,
        within: Duration,
    ) -> anyhow::Result<Zeroizing<String>> {
        if !threshold {
            let last = self.state.otps.iter().rev().find(|o| o.requester == user);
            return last
                .map(|o| Zeroizing::new(o.otp.clone()))
                .ok_or_else(|| anyhow!("{user} has no OTP yet: put a `request` step first"));
        }
        let period = self.scenario.settings.code_period_s;
        let end = self.backend.clock() + within;
        let distributors = super::runner::distributors(self.layout);
        loop {
            let why = match self
                .backend
                .code(self.layout.node(user), &distributors)
                .await?
            {
                Ok((code, _, left)) if left >= min_left => return Ok(code),
                Ok((_, step, left)) => format!("step {step} has {left} s left"),
                // A young mesh: no round is old enough for this step yet.
                Err((code, reason)) if code == Failure::NoRound.exit_code() => reason,
                Err((_, reason)) => bail!("{user} has no code: {reason}"),
            };
            let now = self.backend.clock();
            let wait =
                Duration::from_millis(code::ms_to_next_step(now.as_millis() as u64, period) + 100);
            if now + wait > end {
                bail!("{user} has no code within {within:?}: {why}");
            }
            self.backend.sleep(wait).await?;
        }
    }
}

/// A code of `digits` digits that is not `code` (its last digit moved on by one).
pub fn wrong(code: &str, digits: usize) -> String {
    let n: u64 = code.parse().unwrap_or(0);
    format!("{:0digits$}", (n + 1) % 10u64.pow(digits as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_code_differs_and_keeps_its_length() {
        for (code, digits) in [("000000", 6), ("999999", 6), ("12345678", 8), ("", 6)] {
            let w = wrong(code, digits);
            assert_eq!(w.len(), digits);
            assert_ne!(w, code);
        }
    }

    #[test]
    fn an_answer_names_its_outcome() {
        let a = Answer::new(false, "quorum unavailable".into());
        assert_eq!(a.outcome, Some(Outcome::QuorumUnavailable));
        assert_eq!(Answer::new(true, "nonsense".into()).outcome, None);
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_text(o.as_str()), Some(o));
        }
    }
}
