//! Good and bad events over time, for burn rates and budgets: minute
//! buckets for the burn-rate windows (up to 3 days), hour buckets for the
//! SLO's own window (up to a year). Bounded: at most 4,320 minute and 8,784
//! hour buckets of 24 bytes, whatever the traffic.
//!
//! A window is counted in whole buckets: `sum(w)` adds the buckets that
//! started less than `w` ago, so a 5-minute window covers the current
//! (partial) minute and the four before it, between 4 and 5 minutes of
//! events; a 28-day budget the same in hours.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Seconds of a minute and an hour bucket.
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// One bucket: its start (unix seconds) and its events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: u64,
    pub good: u64,
    pub bad: u64,
}

/// Events at one resolution, oldest first, covering at most `span` seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub width: u64,
    pub span: u64,
    pub buckets: VecDeque<Bucket>,
}

impl Ring {
    fn new(width: u64, span: u64) -> Self {
        Ring {
            width,
            span,
            buckets: VecDeque::new(),
        }
    }

    fn add(&mut self, now: u64, good: u64, bad: u64) {
        let start = now - now % self.width;
        match self.buckets.back_mut() {
            Some(b) if b.start == start => {
                b.good += good;
                b.bad += bad;
            }
            // A clock stepped back: add to the newest bucket rather than
            // break the order.
            Some(b) if b.start > start => {
                b.good += good;
                b.bad += bad;
            }
            _ => self.buckets.push_back(Bucket { start, good, bad }),
        }
        self.trim(now);
    }

    fn trim(&mut self, now: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start + self.span + self.width <= now)
        {
            self.buckets.pop_front();
        }
        // Bounded even if the clock jumps: never more buckets than the span holds.
        let max = (self.span / self.width + 1) as usize;
        while self.buckets.len() > max {
            self.buckets.pop_front();
        }
    }

    /// Good and bad events in the buckets that started less than `secs` ago.
    fn sum(&self, now: u64, secs: u64) -> (u64, u64) {
        let from = (now - now % self.width).saturating_sub(secs.saturating_sub(self.width));
        self.buckets
            .iter()
            .rev()
            .take_while(|b| b.start >= from)
            .fold((0, 0), |(g, b), x| (g + x.good, b + x.bad))
    }
}

/// The history of one SLO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Unix seconds of the first observation (agent start, or the oldest
    /// kept across restarts).
    pub since: u64,
    pub minutes: Ring,
    pub hours: Ring,
}

impl History {
    /// An empty history for an SLO whose budget period is `window` seconds.
    pub fn new(now: u64, window: u64) -> Self {
        History {
            since: now,
            minutes: Ring::new(MINUTE, super::LONGEST.length.as_secs()),
            hours: Ring::new(HOUR, window.max(HOUR)),
        }
    }

    pub fn add(&mut self, now: u64, good: u64, bad: u64) {
        self.minutes.add(now, good, bad);
        self.hours.add(now, good, bad);
    }

    /// Events over the last `secs` seconds: minute resolution up to the
    /// longest burn-rate window, hours beyond.
    pub fn sum(&self, now: u64, secs: u64) -> (u64, u64) {
        if secs <= self.minutes.span {
            self.minutes.sum(now, secs)
        } else {
            self.hours.sum(now, secs)
        }
    }

    /// Seconds of the past this history covers.
    pub fn covered(&self, now: u64) -> u64 {
        now.saturating_sub(self.since)
    }

    /// Drop what is older than the rings keep (after a restart).
    pub fn trim(&mut self, now: u64) {
        self.minutes.trim(now);
        self.hours.trim(now);
    }

    /// Whether a loaded history has the shape this SLO needs.
    pub fn fits(&self, window: u64) -> bool {
        self.minutes.width == MINUTE
            && self.minutes.span == super::LONGEST.length.as_secs()
            && self.hours.width == HOUR
            && self.hours.span == window.max(HOUR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_whole_buckets() {
        let t0 = 1_000_020; // 20 s into a minute
        let mut h = History::new(t0, 28 * 86400);
        h.add(t0, 20, 10);
        assert_eq!(h.sum(t0, 300), (20, 10));
        // Four minutes later the events are still in the 5m window...
        assert_eq!(h.sum(t0 + 240, 300), (20, 10));
        // ...and out of it once their minute is five buckets back.
        assert_eq!(h.sum(t0 + 300, 300), (0, 0));
        // The 1h window and the budget period still have them.
        assert_eq!(h.sum(t0 + 300, 3600), (20, 10));
        assert_eq!(h.sum(t0 + 5 * 86400, 28 * 86400), (20, 10));
        assert_eq!(h.sum(t0 + 29 * 86400, 28 * 86400), (0, 0));
    }

    #[test]
    fn bounded_whatever_happens() {
        let mut h = History::new(0, 7 * 86400);
        for i in 0..20_000u64 {
            h.add(i * 60, 1, 0);
        }
        assert!(h.minutes.buckets.len() <= 4321);
        assert!(h.hours.buckets.len() <= 7 * 24 + 1);
        // A clock jump forward empties what is out of range.
        h.add(10_000_000_000, 0, 1);
        assert_eq!(h.minutes.buckets.len(), 1);
    }
}
