//! One line of `otpmesh node --json`: an event of the node, or what its process says of itself.
//! `mesh up` and the scenario runner read these lines typed ([`Line`]), never by field name.

use otpmesh_node::NodeEvent;
use serde::{Deserialize, Serialize};

/// A line a node process prints (at most [`MAX_LINE_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Process(Process),
    Node(NodeEvent),
}

/// Longest line a reader takes; a longer one is skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// What the process says of itself, around the node's own events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Process {
    Started {
        peer_id: libp2p::PeerId,
        role: String,
        #[serde(default)]
        metrics: Option<String>,
        #[serde(default)]
        radius: Option<String>,
        #[serde(default)]
        http: Option<String>,
    },
    /// A control line on stdin was refused.
    ControlRefused {
        reason: String,
    },
    Stopped,
}

impl Line {
    /// Reads a line; an error names why it is not an event of this version.
    pub fn parse(text: &str) -> Result<Line, String> {
        if text.len() > MAX_LINE_BYTES {
            return Err(format!(
                "a line of {} bytes, more than {MAX_LINE_BYTES}",
                text.len()
            ));
        }
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The event's name, as `"event"` carries it.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .get("event")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        }
    }

    /// The role's event, if the line is one.
    pub fn role(&self) -> Option<&otpmesh_protocol::role::Event> {
        match self {
            Line::Node(NodeEvent::Role(e)) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => Err(std::fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpmesh_protocol::digest::Digest32;
    use otpmesh_protocol::phrase::ClientId;
    use otpmesh_protocol::role::{Event, Failure};
    use otpmesh_protocol::round::RoundId;

    #[test]
    fn lines_read_back_as_what_was_printed() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let lines = [
            Line::Process(Process::Started {
                peer_id: peer,
                role: "distributor".into(),
                metrics: Some("http://127.0.0.1:1/metrics".into()),
                radius: None,
                http: None,
            }),
            Line::Process(Process::Stopped),
            Line::Process(Process::ControlRefused {
                reason: "no".into(),
            }),
            Line::Node(NodeEvent::Subscribed { peer }),
            Line::Node(NodeEvent::InputNeeded { round: RoundId(4) }),
            Line::Node(NodeEvent::Role(Event::RoundSealed {
                round: RoundId(3),
                commitment: Digest32([7; 32]),
                prev_commitment: Digest32([0; 32]),
                included: vec![ClientId(1), ClientId(2)],
            })),
            Line::Node(NodeEvent::Role(Event::RequestFailed {
                peer,
                request: "otp".into(),
                failure: Failure::QuorumUnavailable,
                reason: "2 of 3".into(),
            })),
        ];
        for line in lines {
            let text = line.to_string();
            assert_eq!(Line::parse(&text), Ok(line.clone()), "{text}");
            assert!(
                text.contains(&format!("\"event\":\"{}\"", line.name())),
                "{text}"
            );
        }
        assert!(Line::parse("{\"event\":\"launch_missiles\"}").is_err());
        assert!(Line::parse(&"x".repeat(MAX_LINE_BYTES + 1))
            .unwrap_err()
            .contains("more than"));
    }
}
