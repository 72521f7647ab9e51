//! Counters and latency percentiles of a `derain run`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Frame counters updated from pad probes and the appsink callback (any streaming thread).
#[derive(Debug)]
pub struct Counters {
    /// Nanoseconds are measured from here.
    pub t0: Instant,
    /// Frames accepted by the first queue of the processing chain.
    pub frames_in: AtomicU64,
    /// Frames that reached the application (the appsink).
    pub frames_out: AtomicU64,
    /// Records the consumer thread could not take (its queue was full): counted, not waited for.
    pub records_dropped: AtomicU64,
    /// When the first frame came in and the last went out (ns since `t0`, 0 = not yet).
    pub first_in_ns: AtomicU64,
    pub last_out_ns: AtomicU64,
}

impl Counters {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            records_dropped: AtomicU64::new(0),
            first_in_ns: AtomicU64::new(0),
            last_out_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `t0` (at least 1, so 0 can mean "never").
    pub fn now_ns(&self) -> u64 {
        (self.t0.elapsed().as_nanos() as u64).max(1)
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Frames out per second between the first frame in and the last frame out.
    pub fn fps(&self) -> Option<f64> {
        let (a, b) = (Self::get(&self.first_in_ns), Self::get(&self.last_out_ns));
        let out = Self::get(&self.frames_out);
        (a > 0 && b > a && out > 0).then(|| out as f64 / ((b - a) as f64 / 1e9))
    }
}

/// Latencies in log-spaced bins, 1% wide, from 10 µs to about 100 s: constant memory however long
/// the run, quantiles to within 1%.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const MIN_NS: f64 = 10_000.0;
const RATIO: f64 = 1.01;
const BINS: usize = 1620; // 10 µs · 1.01^1620 ≈ 100 s

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BINS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    /// Bin `i` holds latencies in `[MIN·R^(i-1), MIN·R^i)` (bin 0: below MIN; the last bin: the
    /// rest).
    fn bin(ns: u64) -> usize {
        let v = ns as f64;
        if v < MIN_NS {
            return 0;
        }
        let i = ((v / MIN_NS).ln() / RATIO.ln()).floor() as usize + 1;
        i.min(BINS - 1)
    }

    /// The middle (geometric) of bin `i`.
    fn value(i: usize) -> f64 {
        if i == 0 {
            return MIN_NS / 2.0;
        }
        MIN_NS * RATIO.powf(i as f64 - 0.5)
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::bin(ns)] += 1;
        self.total += 1;
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0..=1, nearest rank) in milliseconds, `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i) / 1e6);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        // 1..=1000 ms: p50 = 500 ms, p99 = 990 ms.
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000);
        }
        assert_eq!(h.len(), 1000);
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 / 500.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p99 / 990.0 - 1.0).abs() < 0.01, "{p99}");
        let p100 = h.quantile_ms(1.0).unwrap();
        assert!((p100 / 1000.0 - 1.0).abs() < 0.01, "{p100}");
    }

    #[test]
    fn extremes_land_in_the_end_bins() {
        let mut h = LatencyHistogram::default();
        h.record(0);
        h.record(u64::MAX);
        assert!(h.quantile_ms(0.5).unwrap() < 0.01);
        assert!(h.quantile_ms(1.0).unwrap() > 50_000.0);
    }
}
