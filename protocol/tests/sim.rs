//! The simulator (`otpmesh_protocol::sim`): deterministic from its seed, its invariants hold
//! under loss, duplication, partitions and crashes, and a deliberate double acceptance is caught.

use otpmesh_protocol::sim::{net::Faults, Config, Report, Sim};

fn config(seed: u64, faults: &str) -> Config {
    Config {
        seed,
        contributors: 6,
        distributors: 3,
        requesters: 4,
        rounds: 2,
        requests: 6,
        faults: faults.parse::<Faults>().unwrap(),
        rsa_bits: 2048,
        sabotage: false,
        threshold: None,
    }
}

fn run(config: Config) -> Report {
    Sim::new(config).expect("a valid simulation").run_to_end()
}

#[test]
fn one_seed_one_trace_and_another_seed_another() {
    let (a, b) = (run(config(7, "loss=0.02")), run(config(7, "loss=0.02")));
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.trace, b.trace, "one seed, one trace");
    assert_eq!(
        (a.messages, a.lost, a.virtual_ms, a.otps_accepted),
        (b.messages, b.lost, b.virtual_ms, b.otps_accepted)
    );
    let c = run(config(8, "loss=0.02"));
    assert_ne!(a.trace, c.trace, "another seed, another trace");
}

#[test]
fn a_clean_run_serves_every_request_and_refuses_every_replay() {
    let r = run(config(1, ""));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.rounds_sealed, 2);
    assert_eq!(
        (r.otps_issued, r.otps_accepted, r.replays_refused),
        (12, 12, 12)
    );
    assert_eq!(r.requests_failed, 0);
}

#[test]
fn invariants_hold_under_loss_duplication_partitions_and_crashes() {
    for seed in 0..3 {
        let r = run(config(seed, "loss=0.05,dup=0.05,partition,crash"));
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(r.rounds_sealed >= 2, "seed {seed}: {r:?}");
        assert!(r.crashes >= 1 && r.partitions >= 1 && r.lost > 0 && r.duplicated > 0);
        assert!(
            r.otps_accepted > 0,
            "seed {seed}: some OTPs get through: {r:?}"
        );
    }
}

#[test]
fn a_distributor_that_accepts_a_replay_is_caught() {
    let r = run(Config {
        sabotage: true,
        ..config(3, "")
    });
    assert!(
        r.violations.iter().any(|v| v.contains("accepted 2 times")),
        "the double acceptance went unseen: {:?}",
        r.violations
    );
}

/// Swarm testing: many seeds, each with its own mix of faults, sizes and mode, bounded in count
/// (and so in time: well under a second each). A seed that breaks an invariant is printed with its
/// configuration; it then becomes a test of its own.
#[test]
fn swarm_of_seeds_with_random_faults_keeps_every_invariant() {
    let mixes = [
        "",
        "loss=0.1",
        "dup=0.1",
        "crash",
        "partition",
        "loss=0.05,dup=0.05,partition,crash",
    ];
    let mut failures = Vec::new();
    for seed in 96..144u64 {
        let faults = mixes[seed as usize % mixes.len()];
        let c = Config {
            contributors: 2 + (seed % 7) as u32,
            distributors: 1 + (seed % 4) as u32,
            requesters: 1 + (seed % 5) as u32,
            rounds: 1 + (seed % 3) as u32,
            requests: 1 + (seed % 6) as u32,
            // Half the seeds in threshold mode, 2 of 3 or 3 of 5, across every mix of faults.
            threshold: match (seed / 6) % 4 {
                0 => Some(otpmesh_protocol::threshold::Params::new(2, 3).unwrap()),
                1 => Some(otpmesh_protocol::threshold::Params::new(3, 5).unwrap()),
                _ => None,
            },
            ..config(seed, faults)
        };
        let summary = format!("{c:?}");
        let r = run(c);
        if !r.violations.is_empty() {
            failures.push(format!("{summary}: {:?}", r.violations));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn threshold(seed: u64, faults: &str) -> Config {
    Config {
        threshold: Some(otpmesh_protocol::threshold::Params::new(3, 5).unwrap()),
        ..config(seed, faults)
    }
}

#[test]
fn threshold_mode_serves_refuses_replays_and_keeps_the_quorum_through_outages() {
    let clean = run(threshold(21, ""));
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    assert!(clean.rounds_sealed >= 2, "{clean:?}");
    assert_eq!(
        (
            clean.otps_issued,
            clean.otps_accepted,
            clean.replays_refused
        ),
        (12, 12, 12),
        "{clean:?}"
    );
    // Every long-running node (5 generators, 5 distributors, 6 contributors) came to hold every
    // sealed round's beacon value, and they agree (a disagreement is a violation).
    assert_eq!(clean.beacon_rounds, clean.rounds_sealed, "{clean:?}");
    assert_eq!(clean.beacon_held, clean.rounds_sealed * 16, "{clean:?}");
    // A crash and a partition at once leave 3 of 5: still a quorum, and never a false
    // `quorum unavailable` (the checker would name it).
    let outages = run(threshold(22, "partition,crash"));
    assert!(outages.violations.is_empty(), "{:?}", outages.violations);
    assert!(
        outages.crashes >= 1 && outages.partitions >= 1,
        "{outages:?}"
    );
    assert!(outages.otps_accepted > 0, "{outages:?}");
    assert!(outages.beacon_rounds >= 1, "{outages:?}");
    let lossy = run(threshold(23, "loss=0.05,dup=0.05,partition,crash"));
    assert!(lossy.violations.is_empty(), "{:?}", lossy.violations);
    assert_eq!(run(threshold(22, "partition,crash")).trace, outages.trace);
}

/// At 10 % loss every generator that holds its share of a sealed round hands it over: a lost
/// handover is sent again until acknowledged, and a lost sealed transcript is published again by
/// the coordinator (`RESEAL_COPIES`). A generator that never got one of Q's dealings has no share
/// (counted apart); the round is served by the others.
#[test]
fn under_loss_every_sealed_round_is_handed_over_by_every_generator_holding_a_share() {
    let (mut sealed, mut undelivered) = (0, 0);
    for seed in 1..=6 {
        let r = run(threshold(seed, "loss=0.1"));
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        sealed += r.rounds_sealed;
        undelivered += r.rounds_undelivered;
    }
    assert!(sealed >= 6, "{sealed} rounds sealed");
    assert_eq!(undelivered, 0, "of {sealed} sealed rounds");
}
