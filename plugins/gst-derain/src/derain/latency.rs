//! The processing-delay estimate the element answers LATENCY queries with, and when it moves.
//!
//! Every move makes the element post a latency message, and every such message makes the pipeline
//! re-query and redistribute latency to all its sinks and sources. So the estimate rises as soon
//! as the measured p99 passes it (an answer that is too low makes synchronised sinks drop frames),
//! but with headroom so the same noise does not raise it again, and at most once a second while
//! the p99 of a short window still jumps with every preempted frame; it falls only after many
//! frames and seconds of evidence (an answer that is too high costs only a little extra delay).

use std::time::{Duration, Instant};

/// A raised estimate is the measured p99 times this, so ordinary jitter stays below it.
pub const HEADROOM: f64 = 1.25;
/// A p99 above the estimate by less than this is noise; so is a fall by less than this or than a
/// fifth of the estimate.
pub const MIN_STEP: Duration = Duration::from_millis(2);
/// Raising waits this long after the last move (a new frame size excepted).
pub const GROW_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Lowering needs at least this many timings at the current frame size...
pub const SHRINK_MIN_SAMPLES: usize = 100;
/// ...and this long since the estimate last moved.
pub const SHRINK_MIN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone)]
pub struct LatencyEstimate {
    current: Option<Duration>,
    last_change: Option<Instant>,
}

impl LatencyEstimate {
    /// The current estimate (zero before any measurement).
    pub fn get(&self) -> Duration {
        self.current.unwrap_or_default()
    }

    /// Whether `candidate` is more than noise away from `current`.
    fn material(current: Duration, candidate: Duration) -> bool {
        let diff = current.abs_diff(candidate);
        diff > MIN_STEP && diff > current / 5
    }

    fn set(&mut self, value: Duration, now: Instant) -> bool {
        self.current = Some(value);
        self.last_change = Some(now);
        true
    }

    /// A warm-up run at a new frame size took `measured`. The first one sets the estimate;
    /// later ones (caps changes) only raise it, and only when materially slower. Returns whether
    /// the estimate changed (and the pipeline should be told).
    pub fn warm_up(&mut self, measured: Duration, now: Instant) -> bool {
        match self.current {
            None => self.set(measured, now),
            Some(cur) if measured > cur && Self::material(cur, measured) => {
                self.set(measured.mul_f64(HEADROOM), now)
            }
            Some(_) => false,
        }
    }

    /// The p99 of the last `samples` processing times is `p99`. Returns whether the estimate
    /// changed (and the pipeline should be told).
    pub fn observe(&mut self, p99: Duration, samples: usize, now: Instant) -> bool {
        let Some(cur) = self.current else {
            return self.set(p99.mul_f64(HEADROOM), now);
        };
        let since_change = |min: Duration| {
            self.last_change
                .is_none_or(|t| now.duration_since(t) >= min)
        };
        if p99 > cur + MIN_STEP {
            // Deferred, not lost: the next frame after the interval brings it up again.
            return since_change(GROW_MIN_INTERVAL) && self.set(p99.mul_f64(HEADROOM), now);
        }
        let target = p99.mul_f64(HEADROOM);
        let settled = samples >= SHRINK_MIN_SAMPLES && since_change(SHRINK_MIN_INTERVAL);
        if settled && target < cur && Self::material(cur, target) {
            return self.set(target, now);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_warm_up_sets_the_estimate() {
        let mut e = LatencyEstimate::default();
        let t = Instant::now();
        assert_eq!(e.get(), Duration::ZERO);
        assert!(e.warm_up(ms(40), t));
        assert_eq!(e.get(), ms(40));
    }

    #[test]
    fn noise_moves_nothing_and_growth_is_announced_once() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(ms(100), t0);
        let mut changes = 0;
        // p99 wandering between 90 and 110 ms: raised once, to 1.25x the first p99 above the
        // estimate, and never moved again however long it goes on.
        for i in 0..2000u64 {
            let p99 = ms(90 + (i * 37) % 21);
            changes += u32::from(e.observe(p99, 1000, t0 + ms(1000 + 10 * i)));
        }
        assert_eq!(changes, 1);
        assert!(e.get() >= ms(125), "{:?}", e.get());
        // Frames get 50% slower: raised at once, with headroom, and only once.
        let t1 = t0 + ms(30_000);
        assert!(e.observe(ms(200), 1000, t1));
        assert_eq!(e.get(), ms(200).mul_f64(HEADROOM));
        for i in 0..100u64 {
            assert!(!e.observe(ms(190 + i % 20), 1000, t1 + ms(i)));
        }
    }

    #[test]
    fn the_answer_is_never_below_the_p99_for_long() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(ms(100), t0);
        // 10% above: more than MIN_STEP, so raised (once the second since the warm-up is over).
        assert!(e.observe(ms(110), 200, t0 + ms(1500)));
        assert!(e.get() >= ms(110));
    }

    #[test]
    fn raising_waits_a_second_after_the_last_move() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(ms(10), t0);
        assert!(
            !e.observe(ms(30), 5, t0 + ms(200)),
            "too soon after the warm-up"
        );
        assert_eq!(e.get(), ms(10));
        assert!(e.observe(ms(30), 40, t0 + ms(1000)));
        assert!(!e.observe(ms(60), 50, t0 + ms(1500)));
        assert!(e.observe(ms(60), 80, t0 + ms(2000)));
        assert_eq!(e.get(), ms(75));
    }

    #[test]
    fn lowering_waits_for_samples_and_time() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(ms(100), t0);
        // Much faster frames, but too few of them or too soon: kept.
        assert!(!e.observe(ms(20), 10, t0 + ms(10_000)));
        assert!(!e.observe(ms(20), 500, t0 + ms(1_000)));
        assert_eq!(e.get(), ms(100));
        assert!(e.observe(ms(20), 500, t0 + ms(6_000)));
        assert_eq!(e.get(), ms(25));
    }

    #[test]
    fn small_absolute_changes_are_noise() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(Duration::from_micros(300), t0);
        // 300 us to 1.5 ms is five times, but under MIN_STEP: not worth a pipeline-wide update.
        assert!(!e.observe(Duration::from_micros(1500), 1000, t0 + ms(100)));
    }

    #[test]
    fn caps_changes_only_raise() {
        let mut e = LatencyEstimate::default();
        let t0 = Instant::now();
        e.warm_up(ms(50), t0);
        assert!(
            !e.warm_up(ms(10), t0 + ms(10)),
            "a smaller size keeps the estimate"
        );
        assert!(!e.warm_up(ms(55), t0 + ms(20)), "within noise");
        assert!(e.warm_up(ms(200), t0 + ms(30)), "a larger size raises it");
        assert_eq!(e.get(), ms(250));
    }
}
