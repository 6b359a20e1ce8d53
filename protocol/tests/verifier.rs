//! Threshold mode, the verifier: codes a person types (threshold TOTP), checked by the verifier
//! alone, once across every verifier and quorum. Real curve arithmetic and RSA on the sans-IO
//! roles (protocol/tests/common/sim.rs).

#[path = "common/sim.rs"]
mod sim;

use libp2p_identity::PeerId;
use otpmesh_protocol::mesh::{UserName, Verifier as Listed};
use otpmesh_protocol::role::verifier::Outcome;
use otpmesh_protocol::role::{threshold, Event, InboundId, Verifier};
use otpmesh_protocol::role::{Inbound, Typed};
use otpmesh_protocol::threshold::code;
use otpmesh_protocol::wire::{CodeRequest, Refusal, Request, Response};
use sim::*;

struct World {
    sim: Sim,
    alice: PeerId,
    verifiers: [PeerId; 2],
    ticket: u64,
}

fn world() -> World {
    let verifiers = [peer(), peer()];
    let mut sim = Sim::with(3, false, |mesh| {
        mesh.requesters[0].name = Some(UserName::new("alice").unwrap());
        mesh.settings.code_period_s = 15;
        for v in verifiers {
            mesh.verifiers.push(Listed {
                peer_id: v,
                addrs: vec![],
                users: vec!["alice".into()],
            });
        }
    });
    sim.seal_first_round();
    let alice = sim.requesters[0];
    for v in verifiers {
        let role = Verifier::new(v, sim.mesh.clone());
        sim.add(v, Box::new(role));
    }
    // A round serves codes once it is ROUND_MARGIN_MS old at a step's start.
    sim.advance(code::ROUND_MARGIN_MS + 15_000);
    World {
        sim,
        alice,
        verifiers,
        ticket: 0,
    }
}

impl World {
    /// Alice's code now, as `otpmesh code` gathers it.
    fn code(&mut self) -> Result<String, String> {
        self.sim.log.events.clear();
        let role = threshold::code::Code::new(self.alice, self.sim.mesh.clone());
        self.sim.add(self.alice, Box::new(role));
        self.sim.settle();
        let got = self.sim.find(|p, e| match e {
            Event::CodeReceived { code, .. } if *p == self.alice => Some(Ok(code.clone())),
            Event::RequestFailed { reason, .. } if *p == self.alice => Some(Err(reason.clone())),
            _ => None,
        });
        got.into_iter().next().expect("an answer")
    }

    /// What verifier `v` decides of `code` typed by `user`.
    fn check(&mut self, v: usize, user: &str, code: &str) -> (Outcome, String) {
        self.sim.log.events.clear();
        self.ticket += 1;
        let (verifier, ticket) = (self.verifiers[v], self.ticket);
        let actions = self.sim.on(verifier, |role, now, rng| {
            role.check(now, Typed::new(ticket, user, code), rng)
        });
        self.sim.run(verifier, actions);
        self.sim.settle();
        let ticket = self.ticket;
        let got = self.sim.find(|p, e| match e {
            Event::CheckDecided {
                ticket: t,
                outcome,
                detail,
                ..
            } if *p == verifier && *t == ticket => Some((*outcome, detail.clone())),
            _ => None,
        });
        got.into_iter().next().expect("a decision")
    }

    /// To the start of the next step.
    fn next_step(&mut self) {
        let period = self.sim.mesh.settings.code_period_s;
        let left = code::seconds_left(self.sim.world.now, period);
        self.sim.advance(left * 1000);
    }
}

fn other(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

#[test]
fn a_code_is_accepted_once_across_verifiers_and_quorums() {
    let mut w = world();
    let code = w.code().unwrap();
    assert_eq!(code.len(), 6);
    // Gathering her own code spent nothing: a second gather gives the same code.
    assert_eq!(w.code().unwrap(), code);
    assert_eq!(w.check(0, "alice", &code).0, Outcome::Accepted);
    assert_eq!(w.check(0, "alice", &code).0, Outcome::Used, "a replay");
    assert_eq!(
        w.check(1, "alice", &code).0,
        Outcome::Used,
        "another verifier"
    );
    assert_eq!(w.check(1, "bob", &code).0, Outcome::UnknownUser);
}

#[test]
fn a_wrong_guess_spends_the_steps_it_looked_at() {
    let mut w = world();
    let code = w.code().unwrap();
    let (outcome, detail) = w.check(0, "alice", &other(&code));
    assert_eq!(outcome, Outcome::Wrong, "{detail}");
    // The right code of this step is spent now, and so is the next step's.
    assert_eq!(w.check(1, "alice", &code).0, Outcome::Used);
    w.next_step();
    let next = w.code().unwrap();
    assert_eq!(w.check(1, "alice", &next).0, Outcome::Used);
    // Two steps on, a code works again.
    w.next_step();
    let later = w.code().unwrap();
    assert_eq!(w.check(1, "alice", &later).0, Outcome::Accepted);
}

#[test]
fn a_clock_one_step_behind_still_works() {
    let mut w = world();
    let code = w.code().unwrap();
    w.next_step();
    // The verifier is a step ahead of the code: the neighbour step matches.
    let (outcome, detail) = w.check(0, "alice", &code);
    assert_eq!(outcome, Outcome::Accepted, "{detail}");
    assert!(detail.contains("step"), "{detail}");
}

#[test]
fn two_distributors_down_still_serve_and_a_third_leaves_the_quorum_unavailable() {
    let mut w = world();
    let d = w.sim.distributors.clone();
    w.sim.world.down.extend([d[0], d[1]]);
    let code = w.code().unwrap();
    assert_eq!(w.check(0, "alice", &code).0, Outcome::Accepted);
    w.next_step();
    w.sim.world.down.insert(d[2]);
    let err = w.code().unwrap_err();
    assert!(err.contains("quorum unavailable"), "{err}");
    let (outcome, detail) = w.check(0, "alice", "123456");
    assert_eq!(outcome, Outcome::QuorumUnavailable, "{detail}");
    assert!(detail.contains("quorum unavailable"), "{detail}");
}

/// The verdict is the verifier's alone: the requester's identity key cannot get a verification
/// partial of its own code (which would spend it and show what a verifier compares with), and no
/// unlisted peer can.
#[test]
fn a_requesters_key_cannot_obtain_verification_partials() {
    let mut w = world();
    let step = code::step(w.sim.world.now, w.sim.mesh.settings.code_period_s);
    for asker in [w.alice, peer()] {
        let ask = Request::Code(CodeRequest {
            user: Some(UserName::new("alice").unwrap()),
            step,
            key: [9; 32],
        });
        let distributor = w.sim.distributors[0];
        let actions = w.sim.on(distributor, |role, now, rng| {
            role.request(now, Inbound::new(asker, InboundId(900), ask), rng)
        });
        let refused = actions.iter().find_map(|a| match a {
            otpmesh_protocol::role::Action::Reply {
                response: Response::Refused(Refusal::Unauthorised(why)),
                ..
            } => Some(why.clone()),
            _ => None,
        });
        let why = refused.expect("refused");
        assert!(why.contains("verifier"), "{why}");
    }
    // And the step was not spent: the code still verifies.
    let code = w.code().unwrap();
    assert_eq!(w.check(0, "alice", &code).0, Outcome::Accepted);
}
