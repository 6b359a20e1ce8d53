//! How events look to people (one line each) and to scripts (one JSON object per line).

use otpmesh_node::NodeEvent;
use otpmesh_protocol::role::Event;
use std::time::{Duration, UNIX_EPOCH};

/// An RFC 3339 time for a Unix-milliseconds instant.
pub fn rfc3339(ms: u64) -> String {
    // humantime formats years up to 9999 only; a later time (from a broken peer) prints as a number.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    if ms >= YEAR_10000_MS {
        return format!("unix-ms {ms}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn json(event: &NodeEvent) -> String {
    serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"event\":\"unprintable\",\"error\":\"{e}\"}}"))
}

fn short(text: impl ToString) -> String {
    let t = text.to_string();
    if t.len() > 16 {
        format!("{}…", &t[..12])
    } else {
        t
    }
}

/// One human line, or `None` for events only scripts care about.
pub fn human(event: &NodeEvent) -> Option<String> {
    Some(match event {
        NodeEvent::Listening { addr } => format!("listening on {addr}"),
        NodeEvent::Connected { .. }
        | NodeEvent::Disconnected { .. }
        | NodeEvent::Subscribed { .. } => return None,
        NodeEvent::GossipRejected { peer, reason } => {
            format!("rejected gossip from {}: {reason}", short(peer))
        }
        NodeEvent::RequestRejected { peer, reason } => {
            format!("rejected request from {}: {reason}", short(peer))
        }
        NodeEvent::PeerPenalised { peer, reason } => {
            format!("penalised {}: {reason}", short(peer))
        }
        NodeEvent::InputNeeded { round } => format!("round {round}: waiting for your integer"),
        NodeEvent::Role(e) => match e {
            Event::RoundOpened {
                round,
                quorum,
                deadline_ms,
            } => {
                format!(
                    "round {round}: opened (quorum {quorum}, deadline {})",
                    rfc3339(*deadline_ms)
                )
            }
            Event::PhraseSubmitted { round, client, .. } => {
                format!("round {round}: phrase of client {client} sealed and sent")
            }
            Event::PhraseAccepted { round, client } => {
                format!("round {round}: phrase of client {client} decrypted")
            }
            Event::PhraseRejected {
                round,
                client,
                peer,
                reason,
                ..
            } => {
                format!(
                    "round {round}: phrase for client {client} from {} rejected: {reason}",
                    short(peer)
                )
            }
            Event::RoundSealed {
                round,
                commitment,
                included,
                ..
            } => format!(
                "round {round}: sealed with clients {:?}, commitment {}",
                included.iter().map(|c| c.0).collect::<Vec<_>>(),
                short(commitment)
            ),
            Event::RoundFailed { round, reason } => format!("round {round}: failed: {reason}"),
            Event::RoundDelivered { round, distributor } => {
                format!("round {round}: delivered to {}", short(distributor))
            }
            Event::RoundDeliveredAll { round } => {
                format!("round {round}: delivered to every distributor")
            }
            Event::DeliveryAbandoned { round, distributor } => {
                format!(
                    "round {round}: gave up delivering to {}",
                    short(distributor)
                )
            }
            Event::BeaconValue {
                round,
                value,
                caught_up,
                ..
            } => {
                let how = if *caught_up { " (fetched)" } else { "" };
                format!("round {round}: beacon {}{how}", value.to_hex())
            }
            Event::BeaconCatchUp {
                peer,
                accepted,
                problem,
            } => match problem {
                Some(p) => format!(
                    "beacon catch-up from {}: {accepted} values, then: {p}",
                    short(peer)
                ),
                None => format!("beacon catch-up from {}: {accepted} values", short(peer)),
            },
            Event::RoundStored { round, commitment } => {
                format!("round {round}: stored (commitment {})", short(commitment))
            }
            Event::ChainGap { round, .. } => {
                format!("round {round}: does not follow the last round held here")
            }
            Event::TranscriptChecked {
                round,
                client,
                included,
            } => {
                let verdict = if *included {
                    "includes"
                } else {
                    "does NOT include"
                };
                format!("round {round}: transcript {verdict} client {client}'s phrase")
            }
            Event::KeyMismatch { generator, .. } => {
                format!(
                    "generator {} sent a key that does not match its announcement",
                    short(generator)
                )
            }
            Event::OtpIssued {
                round,
                requester,
                counter,
                ..
            } => {
                format!(
                    "round {round}: OTP #{counter} issued to {}",
                    short(requester)
                )
            }
            Event::KdcRegistered {
                name,
                peer,
                replaced,
            } => {
                let again = if *replaced { " again" } else { "" };
                format!("kdc: {name} registered{again} (peer {})", short(peer))
            }
            Event::KdcSessionIssued {
                client,
                server,
                expires_at_ms,
            } => format!(
                "kdc: session key for {client} → {server}, ticket valid until {}",
                rfc3339(*expires_at_ms)
            ),
            Event::OtpVerified { requester, result } => {
                format!("verification for {}: {}", short(requester), result.as_str())
            }
            Event::LockedOut {
                requester,
                until_ms,
            } => format!(
                "{} locked out until {} (too many wrong codes)",
                short(requester),
                rfc3339(*until_ms)
            ),
            Event::UseReplicated {
                issuer,
                round,
                counter,
                ..
            } => {
                format!(
                    "round {round}: OTP #{counter} of {} is used (replicated)",
                    short(issuer)
                )
            }
            Event::VerifyAnswered { result, .. } => format!("verification: {}", result.as_str()),
            Event::Enrolled { peer, epoch } => {
                format!("enrolled with {} (epoch {epoch})", short(peer))
            }
            Event::TotpIssued { requester, round } => {
                format!("round {round}: TOTP token issued to {}", short(requester))
            }
            Event::TotpReceived { distributor, .. } => {
                format!("TOTP token received from {}", short(distributor))
            }
            Event::OtpReceived {
                round,
                otp,
                expires_at_ms,
                ..
            } => {
                format!(
                    "round {round}: OTP {otp} (expires {})",
                    rfc3339(*expires_at_ms)
                )
            }
            Event::Complained {
                round,
                index,
                against,
            } => format!(
                "round {round}: generator {index} complains about the dealings of clients {:?}",
                against.iter().map(|c| c.0).collect::<Vec<_>>()
            ),
            Event::ComplaintAnswered {
                round,
                client,
                index,
            } => format!(
                "round {round}: client {client} published its share for generator {index} (a complaint)"
            ),
            Event::DealingExcluded {
                round,
                client,
                reason,
            } => format!("round {round}: client {client}'s dealing left out: {reason}"),
            Event::ShareHeld { round, index } => {
                format!("round {round}: key share {index} held, handing it to distributor {index}")
            }
            Event::ShareUnavailable { round, reason } => {
                format!("round {round}: this generator cannot take part: {reason}")
            }
            Event::PartialIssued {
                round,
                requester,
                verification,
                ..
            } => {
                let what = if *verification {
                    "verification partial (OTP now used)"
                } else {
                    "partial"
                };
                format!("round {round}: {what} for {}", short(requester))
            }
            Event::ThresholdOtpReceived {
                round,
                counter,
                otp,
                expires_at_ms,
                ..
            } => format!(
                "round {round}: OTP {otp} (counter {counter}, expires {})",
                rfc3339(*expires_at_ms)
            ),
            Event::PasswordReceived {
                round, length, bits, ..
            } => format!("round {round}: a password of {length} characters ({bits} bits)"),
            Event::ThresholdVerified { result, .. } => {
                format!("verification by quorum: {}", result.as_str())
            }
            Event::RequestRefused {
                peer,
                request,
                reason,
                ..
            } => {
                format!("refused {request} request from {}: {reason}", short(peer))
            }
            Event::CodeReceived {
                code, seconds_left, ..
            } => format!("{code}  ({seconds_left} s left)"),
            Event::CheckDecided {
                user,
                outcome,
                detail,
                ..
            } => format!("check for {user}: {} ({detail})", outcome.as_str()),
            Event::RequestFailed {
                peer,
                request,
                reason,
                ..
            } => format!("{request} request to {} failed: {reason}", short(peer)),
        },
    })
}
