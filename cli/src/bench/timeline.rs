//! Latency over time, for finding stalls: each operation of a load run is kept with the moment it
//! was due, then sorted into seconds and into "a round was running" or not; the nodes' own logs
//! say which storage commits and event-loop turns were slow.
//!
//! ```text
//!  ops (due at, ms) ──► per second: ops, p99, max, round?   ──► the worst seconds
//!                   └─► during a round / outside any round: ops, p99, max
//!  node.log ──► "slow storage commit" / "slow event loop turn" lines: count, longest
//! ```

use super::percentile;
use serde::Serialize;
use std::path::Path;

/// Seconds listed as the worst of a run.
pub const WORST_SECONDS: usize = 5;
/// Log bytes read at most when counting a node's slow lines.
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// One operation: when it was due (seconds from the start of the run) and how long it took from
/// then (ms).
#[derive(Clone, Copy)]
pub struct Op {
    pub due_s: f64,
    pub ms: f64,
}

/// The operations due within one second.
#[derive(Serialize)]
pub struct Second {
    pub t_s: u64,
    pub ops: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Whether a round ran during this second.
    pub round: bool,
}

/// Latency of a set of operations.
#[derive(Serialize, Default)]
pub struct Latency {
    pub ops: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        Latency {
            ops: ms.len() as u64,
            p50_ms: percentile(&ms, 0.5),
            p99_ms: percentile(&ms, 0.99),
            max_ms: percentile(&ms, 1.0),
        }
    }
}

/// When rounds ran: (start, end) in seconds from the start of the run.
pub type Rounds = [(f64, f64)];

fn overlaps(rounds: &Rounds, from: f64, to: f64) -> bool {
    rounds.iter().any(|&(start, end)| start < to && from < end)
}

/// The run second by second.
pub fn seconds(ops: &[Op], rounds: &Rounds) -> Vec<Second> {
    let last = ops.iter().map(|op| op.due_s).fold(0.0, f64::max);
    let mut buckets = vec![Vec::new(); last as usize + 1];
    for op in ops {
        buckets[op.due_s.max(0.0) as usize].push(op.ms);
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(t, ms)| {
            let latency = Latency::of(ms);
            Second {
                t_s: t as u64,
                ops: latency.ops,
                p99_ms: latency.p99_ms,
                max_ms: latency.max_ms,
                round: overlaps(rounds, t as f64, t as f64 + 1.0),
            }
        })
        .collect()
}

/// The slowest seconds, slowest first.
pub fn worst(seconds: &[Second]) -> Vec<&Second> {
    let mut sorted: Vec<&Second> = seconds.iter().filter(|s| s.ops > 0).collect();
    sorted.sort_by(|a, b| b.max_ms.total_cmp(&a.max_ms));
    sorted.truncate(WORST_SECONDS);
    sorted
}

/// Operations that were under way while a round ran, and the others.
pub fn by_round(ops: &[Op], rounds: &Rounds) -> (Latency, Latency) {
    let (during, outside): (Vec<&Op>, Vec<&Op>) = ops
        .iter()
        .partition(|op| overlaps(rounds, op.due_s, op.due_s + op.ms / 1000.0));
    (
        Latency::of(during.iter().map(|op| op.ms).collect()),
        Latency::of(outside.iter().map(|op| op.ms).collect()),
    )
}

/// A node's slow commits and slow event-loop turns, from its log.
#[derive(Serialize, Default, Debug, PartialEq)]
pub struct Slow {
    pub commits: u64,
    pub longest_commit_ms: u64,
    pub turns: u64,
    pub longest_turn_ms: u64,
}

/// Counts the lines `node.log` holds about slow commits and turns (text or JSON logs); a log that
/// cannot be read counts nothing.
pub fn slow(log: &Path) -> Slow {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(log) {
        let _ = file.take(MAX_LOG_BYTES).read_to_string(&mut text);
    }
    slow_in(&text)
}

fn slow_in(log: &str) -> Slow {
    let mut slow = Slow::default();
    for line in log.lines() {
        let (count, longest) = if line.contains("slow storage commit") {
            (&mut slow.commits, &mut slow.longest_commit_ms)
        } else if line.contains("slow event loop turn") {
            (&mut slow.turns, &mut slow.longest_turn_ms)
        } else {
            continue;
        };
        *count += 1;
        *longest = (*longest).max(field_ms(line).unwrap_or(0));
    }
    slow
}

/// The `ms` field of a text (`ms=12`) or JSON (`"ms":12`) log line.
fn field_ms(line: &str) -> Option<u64> {
    let at = line
        .find(" ms=")
        .map(|i| i + 4)
        .or_else(|| line.find("\"ms\":").map(|i| i + 5))?;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Clock ticks per second of the times in /proc (USER_HZ: 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// CPU seconds a process has used so far (user and system), from `/proc/PID/stat`.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// Some of the machine's CPU time so far (seconds, summed over cores), from /proc/stat.
#[derive(Clone, Copy, Default)]
pub struct MachineCpu {
    pub iowait_s: f64,
    /// Time the hypervisor ran someone else while this machine wanted to run.
    pub steal_s: f64,
}

impl MachineCpu {
    pub fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse::<f64>().map(|t| t / USER_HZ))
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        Some(MachineCpu {
            iowait_s: *v.get(4)?,
            steal_s: *v.get(7)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_each_op_at_its_due_time_and_mark_the_rounds() {
        let ops = [
            Op {
                due_s: 0.2,
                ms: 1.0,
            },
            Op {
                due_s: 0.9,
                ms: 3.0,
            },
            Op {
                due_s: 2.5,
                ms: 400.0,
            },
        ];
        let s = seconds(&ops, &[(2.1, 2.3)]);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].ops, s[0].max_ms, s[0].round), (2, 3.0, false));
        assert_eq!((s[1].ops, s[1].round), (0, false));
        assert_eq!((s[2].ops, s[2].max_ms, s[2].round), (1, 400.0, true));
        assert_eq!(worst(&s)[0].t_s, 2);
    }

    #[test]
    fn an_op_under_way_while_a_round_ran_counts_as_during() {
        // Due before the round started, still waiting when it did.
        let ops = [
            Op {
                due_s: 1.0,
                ms: 300.0,
            },
            Op {
                due_s: 0.0,
                ms: 2.0,
            },
        ];
        let (during, outside) = by_round(&ops, &[(1.2, 1.5)]);
        assert_eq!((during.ops, during.max_ms), (1, 300.0));
        assert_eq!((outside.ops, outside.max_ms), (1, 2.0));
    }

    #[test]
    fn cpu_times_are_read_for_this_process_and_the_machine() {
        let own = process_cpu_s(std::process::id()).expect("this process's stat");
        let busy = std::time::Instant::now();
        // Some work of its own, so its CPU time must move (bounded: at most 5 s).
        let mut x = 0u64;
        while process_cpu_s(std::process::id()).unwrap() < own + 0.02
            && busy.elapsed() < std::time::Duration::from_secs(5)
        {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        assert!(process_cpu_s(std::process::id()).unwrap() >= own + 0.02);
        let machine = MachineCpu::now().expect("/proc/stat");
        assert!(machine.iowait_s >= 0.0 && machine.steal_s >= 0.0);
    }

    #[test]
    fn slow_lines_are_counted_from_text_and_json_logs() {
        let log = "\
2026-12-08T01:00:00Z  WARN otpmesh_node::commit: slow storage commit ms=120 batches=3 records=40
2026-12-08T01:00:01Z  INFO otpmesh_node: round sealed
{\"level\":\"WARN\",\"fields\":{\"message\":\"slow event loop turn\",\"ms\":75,\"what\":\"swarm\"}}
2026-12-08T01:00:02Z  WARN otpmesh_node::commit: slow storage commit ms=64 batches=1 records=2
";
        assert_eq!(
            slow_in(log),
            Slow {
                commits: 2,
                longest_commit_ms: 120,
                turns: 1,
                longest_turn_ms: 75
            }
        );
    }
}
