//! Health and load of the servers of one ComfyUI provider (`base_urls`): which server the next
//! job goes to. Pure state, no I/O and no clock of its own: every call is given `now`, so the
//! pick and the backoff are tested without sleeping ([`super::comfyui::ComfyProvider`] does the
//! HTTP and the probing).
//!
//! Rules:
//! - A job goes to the healthy server with the fewest jobs in flight; ties go to the lowest
//!   index (config order), so tests can tell where a job lands.
//! - A server starts *unknown*: probed (`GET /system_stats`) by the first pick. A failed probe
//!   of an unknown or down server keeps it down and doubles its backoff ([`PROBE_BACKOFF_BASE`]
//!   → [`PROBE_BACKOFF_CAP`]); a good probe, or any good answer, brings it up.
//! - An up server goes down after [`DOWN_AFTER`] consecutive failures (transport errors or 5xx
//!   on any request), and is probed again after the backoff.
//! - In-flight counts are kept per prompt id, so counting the same job twice (a resumed wait,
//!   a wait the engine calls again after a transient error) is harmless.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Consecutive failures that take an up server down.
pub const DOWN_AFTER: u32 = 2;
/// Wait before the first re-probe of a down server; doubled after each failed probe.
pub const PROBE_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest wait between probes of a down server.
pub const PROBE_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// What is known of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    /// Jobs submitted there whose wait has not ended.
    pub in_flight: u32,
    /// Answered well last time it was asked. `false` for a server never asked yet.
    pub healthy: bool,
    /// Failures in a row since the last good answer.
    pub failures: u32,
    /// When a down (or unknown) server may be probed; `None` = at once.
    pub next_probe_at: Option<Instant>,
    /// The wait after the next failed probe.
    backoff: Duration,
}

impl ServerHealth {
    fn new() -> ServerHealth {
        ServerHealth { in_flight: 0, healthy: false, failures: 0, next_probe_at: None, backoff: PROBE_BACKOFF_BASE }
    }
}

/// The pool: one [`ServerHealth`] per configured server (config order) and the jobs in flight.
#[derive(Debug)]
pub struct PoolState {
    servers: Vec<ServerHealth>,
    /// prompt id → server index, for the jobs counted in `in_flight`.
    jobs: HashMap<String, usize>,
}

impl PoolState {
    /// `n` unknown servers.
    pub fn new(n: usize) -> PoolState {
        PoolState { servers: vec![ServerHealth::new(); n], jobs: HashMap::new() }
    }

    /// The state of server `i`.
    #[cfg(test)]
    pub fn server(&self, i: usize) -> Option<&ServerHealth> {
        self.servers.get(i)
    }

    /// Servers to probe now: not healthy and due. Each is given its next probe time at once
    /// (`now` + backoff), so concurrent picks do not probe the same server twice; the result
    /// goes to [`Self::probed`].
    pub fn take_due_probes(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, s) in self.servers.iter_mut().enumerate() {
            if !s.healthy && s.next_probe_at.is_none_or(|t| t <= now) {
                s.next_probe_at = Some(now + s.backoff);
                due.push(i);
            }
        }
        due
    }

    /// Records a probe's outcome: good → up; bad → stays down, the backoff doubles (capped).
    pub fn probed(&mut self, i: usize, ok: bool, now: Instant) {
        if ok {
            self.succeeded(i);
        } else if let Some(s) = self.servers.get_mut(i) {
            s.failures = s.failures.saturating_add(1);
            s.healthy = false;
            s.next_probe_at = Some(now + s.backoff);
            s.backoff = (s.backoff * 2).min(PROBE_BACKOFF_CAP);
        }
    }

    /// A good answer from server `i`: up, failures forgotten, backoff reset.
    pub fn succeeded(&mut self, i: usize) {
        if let Some(s) = self.servers.get_mut(i) {
            s.healthy = true;
            s.failures = 0;
            s.next_probe_at = None;
            s.backoff = PROBE_BACKOFF_BASE;
        }
    }

    /// A transport error or 5xx from server `i`. Returns `true` when this failure took it
    /// down (for the log line). A server that was not up gets the probe backoff, as after a
    /// failed probe.
    pub fn failed(&mut self, i: usize, now: Instant) -> bool {
        let Some(s) = self.servers.get_mut(i) else { return false };
        s.failures = s.failures.saturating_add(1);
        if s.healthy {
            if s.failures >= DOWN_AFTER {
                s.healthy = false;
                s.backoff = PROBE_BACKOFF_BASE;
                s.next_probe_at = Some(now + s.backoff);
                return true;
            }
        } else if s.next_probe_at.is_none_or(|t| t <= now) {
            s.next_probe_at = Some(now + s.backoff);
        }
        false
    }

    /// Whether server `i` is known to be down: it failed since its last good answer and is
    /// not up (a server never asked yet is not down).
    pub fn is_down(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| !s.healthy && s.failures > 0)
    }

    /// Whether server `i` is up.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.healthy)
    }

    /// The healthy server with the fewest jobs in flight (lowest index on a tie), skipping
    /// `skip` (servers that just failed this submit); `None` when none is up.
    pub fn pick(&self, skip: &[usize]) -> Option<usize> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(i, s)| s.healthy && !skip.contains(i))
            .min_by_key(|(i, s)| (s.in_flight, *i))
            .map(|(i, _)| i)
    }

    /// Counts `prompt_id` as in flight on server `i` (once, however often it is called).
    pub fn track(&mut self, prompt_id: &str, i: usize) {
        if i >= self.servers.len() || self.jobs.contains_key(prompt_id) {
            return;
        }
        self.jobs.insert(prompt_id.to_string(), i);
        self.servers[i].in_flight += 1;
    }

    /// Stops counting `prompt_id` (its wait ended, or it was cancelled); no-op if not counted.
    pub fn untrack(&mut self, prompt_id: &str) {
        if let Some(i) = self.jobs.remove(prompt_id) {
            if let Some(s) = self.servers.get_mut(i) {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
        }
    }

    /// Jobs in flight per server, in config order.
    pub fn in_flight(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.in_flight).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(n: usize, now: Instant) -> PoolState {
        let mut p = PoolState::new(n);
        assert_eq!(p.take_due_probes(now), (0..n).collect::<Vec<_>>(), "every unknown server is probed first");
        for i in 0..n {
            p.probed(i, true, now);
        }
        p
    }

    #[test]
    fn pick_takes_the_fewest_in_flight_then_the_lowest_index() {
        let now = Instant::now();
        let mut p = up(3, now);
        let mut placed = vec![];
        for j in 0..7 {
            let i = p.pick(&[]).expect("a server is up");
            p.track(&format!("job{j}"), i);
            placed.push(i);
        }
        assert_eq!(placed, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p.in_flight(), [3, 2, 2]);
        // Counting the same job again changes nothing; ending it frees its server.
        p.track("job0", 2);
        assert_eq!(p.in_flight(), [3, 2, 2]);
        p.untrack("job0");
        p.untrack("job0");
        p.untrack("job3");
        assert_eq!(p.in_flight(), [1, 2, 2]);
        assert_eq!(p.pick(&[]), Some(0));
        assert_eq!(p.pick(&[0]), Some(1), "a server that just failed this submit is skipped");
        assert_eq!(p.pick(&[0, 1, 2]), None);
    }

    #[test]
    fn a_down_server_is_skipped_until_a_good_probe() {
        let t0 = Instant::now();
        let mut p = up(3, t0);
        assert!(!p.failed(0, t0), "one failure is not enough");
        assert_eq!(p.pick(&[]), Some(0));
        p.succeeded(0);
        assert!(!p.failed(0, t0));
        assert!(p.failed(0, t0), "two in a row take it down");
        assert!(!p.is_healthy(0));
        for j in 0..4 {
            let i = p.pick(&[]).expect("up");
            assert_ne!(i, 0, "never on the down server");
            p.track(&format!("j{j}"), i);
        }
        assert_eq!(p.in_flight(), [0, 2, 2]);
        // Not probed before its backoff ends.
        assert!(p.take_due_probes(t0 + PROBE_BACKOFF_BASE - Duration::from_millis(1)).is_empty());
        let t1 = t0 + PROBE_BACKOFF_BASE;
        assert_eq!(p.take_due_probes(t1), [0]);
        assert!(p.take_due_probes(t1).is_empty(), "a probe under way is not started twice");
        p.probed(0, true, t1);
        assert!(p.is_healthy(0));
        assert_eq!(p.pick(&[]), Some(0), "back up, and the least loaded");
    }

    #[test]
    fn failed_probes_back_off_exponentially_up_to_the_cap() {
        let mut now = Instant::now();
        let mut p = PoolState::new(1);
        let mut waits = vec![];
        for _ in 0..8 {
            assert_eq!(p.take_due_probes(now), [0]);
            p.probed(0, false, now);
            let next = p.server(0).and_then(|s| s.next_probe_at).expect("scheduled");
            waits.push((next - now).as_secs());
            assert!(p.take_due_probes(next - Duration::from_millis(1)).is_empty());
            now = next;
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(p.pick(&[]), None, "nothing up: the caller answers Transient");
        p.probed(0, true, now);
        assert_eq!(p.pick(&[]), Some(0));
        // Down again later: the backoff starts over.
        p.failed(0, now);
        p.failed(0, now);
        assert_eq!(p.server(0).and_then(|s| s.next_probe_at), Some(now + PROBE_BACKOFF_BASE));
    }

    #[test]
    fn a_failure_on_an_unknown_server_waits_for_the_backoff() {
        let now = Instant::now();
        let mut p = PoolState::new(2);
        // A resumed wait asked server 1 before any probe, and it failed.
        assert!(!p.is_down(1), "unknown is not down");
        p.failed(1, now);
        assert!(p.is_down(1));
        assert_eq!(p.take_due_probes(now), [0], "server 1 waits for its backoff");
        p.succeeded(1);
        assert!(p.is_healthy(1), "any good answer brings a server up");
    }
}
