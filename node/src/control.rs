//! The control channel: instructions a supervising process (the scenario runner) sends a node as
//! JSON lines, e.g. on its stdin. Only whoever holds that channel can use it.

use crate::{Client, NodeError};
use libp2p::PeerId;
use otpmesh_protocol::phrase::UserInput;
use otpmesh_protocol::round::RoundId;
use serde::{Deserialize, Serialize};

/// Longest control line: a gossip message over the limit (by up to a KiB, what the scenarios'
/// `oversized` attack publishes), hex-encoded, fits.
pub const MAX_CONTROL_LINE: usize = 2 * (otpmesh_protocol::wire::MAX_GOSSIP_BYTES + 1024) + 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlLine {
    /// Generator: open the next round now.
    OpenRound,
    /// Contributor: the user's integer for `round` (decimal text, up to i128).
    Input {
        round: RoundId,
        value: String,
    },
    /// Drop and refuse connections with `peer`.
    Block {
        peer: PeerId,
    },
    Unblock {
        peer: PeerId,
    },
    /// Publish these bytes on the gossip topic as they are (fault injection).
    PublishRaw {
        hex: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control line is {0} bytes, more than {MAX_CONTROL_LINE}")]
    TooLong(usize),
    #[error("not a control line: {0}")]
    Parse(String),
    #[error("input: {0}")]
    Input(#[from] otpmesh_protocol::phrase::PhraseError),
    #[error("publish_raw: hex: {0}")]
    Hex(#[from] hex::FromHexError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl ControlLine {
    pub fn parse(line: &str) -> Result<ControlLine, ControlError> {
        if line.len() > MAX_CONTROL_LINE {
            return Err(ControlError::TooLong(line.len()));
        }
        serde_json::from_str(line).map_err(|e| ControlError::Parse(e.to_string()))
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("control lines always serialise")
    }

    /// Carries the instruction out on `client`'s node.
    pub async fn apply(self, client: &Client) -> Result<(), ControlError> {
        match self {
            ControlLine::OpenRound => client.open_round().await?,
            ControlLine::Input { round, value } => {
                client.input(round, value.parse::<UserInput>()?).await?
            }
            ControlLine::Block { peer } => client.block(peer).await?,
            ControlLine::Unblock { peer } => client.unblock(peer).await?,
            ControlLine::PublishRaw { hex } => client.publish_raw(hex::decode(hex)?).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_errors_name_the_problem() {
        let line = ControlLine::Input {
            round: RoundId(3),
            value: "-7".into(),
        };
        assert_eq!(ControlLine::parse(&line.to_line()).unwrap(), line);
        assert_eq!(
            ControlLine::parse(r#"{"cmd":"open_round"}"#).unwrap(),
            ControlLine::OpenRound
        );
        let err = ControlLine::parse(r#"{"cmd":"launch_missiles"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("launch_missiles"), "{err}");
        assert!(matches!(
            ControlLine::parse(&"x".repeat(MAX_CONTROL_LINE + 1)),
            Err(ControlError::TooLong(_))
        ));
    }
}
