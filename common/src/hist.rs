//! OTLP base-2 exponential histogram buckets, computed from integer
//! nanoseconds without floating point (the kernel has none).
//!
//! OTLP bucket `i` at scale 3 holds values `v` (in seconds, the metric's unit)
//! with `2^(i/8) < v <= 2^((i+1)/8)`. Because durations are measured in ns
//! and exported in s, the boundaries inside each power-of-two octave of
//! nanoseconds are shifted by `8 * log2(1e9)`: [`THRESHOLDS`] holds those 8
//! boundary mantissas in Q1.63 fixed point. The index is then
//! `8 * msb(v) + #{k : mantissa(v) > T_k} - 240`, exactly OTLP's, so export
//! is lossless.
//!
//! Range: buckets cover (14.9 ns, 16384 s]; shorter durations count in the
//! zero bucket (`zero_threshold` = 2^-26 s), longer ones in the last bucket.
//! Relative error of a value reported from its bucket (lo, hi] as
//! 2·lo·hi/(lo+hi): at most (2^(1/8) - 1) / (2^(1/8) + 1) = 4.33 %.

/// Latency thresholds the kernel splits their bucket at (SLOs): for each,
/// `Histogram::split[k]` counts the durations of the threshold's bucket
/// that are at or below it, so "at or below the threshold" is exact
/// wherever the threshold falls.
pub const SPLITS: usize = 4;

/// OTLP exponential histogram scale: 2^SCALE buckets per power of two.
pub const SCALE: i32 = 3;
/// `8 * log2(1e9)` rounded up: the ns -> s shift of bucket indexes.
const NS_TO_S_SHIFT: i32 = 240;
/// Octave (power of two, in ns) of the first bucket.
pub const MIN_EXP: u32 = 4;
/// Number of buckets kept: 40 octaves.
pub const NUM_BUCKETS: usize = 320;
/// OTLP index of `buckets[0]`.
pub const OTLP_INDEX_OFFSET: i32 = 8 * MIN_EXP as i32 - NS_TO_S_SHIFT;
/// Durations `<= 2^(OTLP_INDEX_OFFSET/8)` s (14.9 ns) count as zero.
pub const ZERO_THRESHOLD_S: f64 = 1.490_116_119_384_765_6e-8; // 2^-26
/// The largest duration with its own bucket: 2^((OFFSET+NUM_BUCKETS)/8) s.
pub const MAX_TRACKED_S: f64 = 16384.0;

/// Boundary mantissas `2^((k - 0.821177168...)/8)` for k = 1..=8, in Q1.63.
/// T_8 is exactly `1e9 * 2^34`: whole seconds fall on a boundary.
pub const THRESHOLDS: [u64; 8] = [
    9_367_390_095_664_785_123,
    10_215_211_334_214_395_865,
    11_139_766_950_770_582_417,
    12_148_001_999_904_198_770,
    13_247_490_117_328_543_392,
    14_446_490_411_353_358_019,
    15_754_009_503_455_335_899,
    17_179_869_184_000_000_000,
];

/// Where a duration lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// At or below [`ZERO_THRESHOLD_S`].
    Zero,
    /// Index into `Histogram::buckets` (already clamped to the last bucket).
    Index(usize),
}

/// Position of the most significant set bit of `v` (`v > 0`), branch-light
/// and loop-free so the BPF verifier sees a straight line.
#[inline(always)]
pub fn msb(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// OTLP scale-3 bucket index (seconds) of a duration of `ns` nanoseconds,
/// without clamping. `None` for 0.
#[inline(always)]
pub fn otlp_index(ns: u64) -> Option<i32> {
    if ns == 0 {
        return None;
    }
    let e = msb(ns);
    let m = ns << (63 - e);
    let c = (m > THRESHOLDS[0]) as i32
        + (m > THRESHOLDS[1]) as i32
        + (m > THRESHOLDS[2]) as i32
        + (m > THRESHOLDS[3]) as i32
        + (m > THRESHOLDS[4]) as i32
        + (m > THRESHOLDS[5]) as i32
        + (m > THRESHOLDS[6]) as i32
        + (m > THRESHOLDS[7]) as i32;
    Some(8 * e as i32 + c - NS_TO_S_SHIFT)
}

/// Bucket of a duration in the kernel's fixed range.
#[inline(always)]
pub fn bucket_index(ns: u64) -> Bucket {
    match otlp_index(ns) {
        None => Bucket::Zero,
        Some(i) => {
            let local = i - OTLP_INDEX_OFFSET;
            if local < 0 {
                Bucket::Zero
            } else if local as usize >= NUM_BUCKETS {
                Bucket::Index(NUM_BUCKETS - 1)
            } else {
                Bucket::Index(local as usize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Reference: OTLP's definition with f64 logarithms, and whether the value
    /// is so close to a boundary that f64 cannot decide it.
    fn reference(ns: u64) -> (i32, bool) {
        let s = ns as f64 * 1e-9;
        let x = s.log2() * 8.0;
        let idx = x.ceil() as i32 - 1;
        let ambiguous = (x - x.round()).abs() < 1e-9;
        (idx, ambiguous)
    }

    #[test]
    fn msb_matches_leading_zeros() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) | 1,
                (1u64 << shift).wrapping_mul(3) >> 1,
            ] {
                if v != 0 {
                    assert_eq!(msb(v), 63 - v.leading_zeros(), "v={v}");
                }
            }
        }
        assert_eq!(msb(u64::MAX), 63);
    }

    #[test]
    fn index_matches_f64_reference_over_whole_range() {
        // Every ns value up to 1 ms, then a geometric sweep to 2^62 ns with
        // neighbours of each point.
        let mut checked = 0u64;
        let mut check = |ns: u64| {
            let (want, ambiguous) = reference(ns);
            if !ambiguous {
                assert_eq!(otlp_index(ns), Some(want), "ns={ns}");
                checked += 1;
            }
        };
        for ns in 1..1_000_000 {
            check(ns);
        }
        let mut v = 1_000_000f64;
        while v < 4.6e18 {
            let ns = v as u64;
            for d in [0, 1, 2, 1000] {
                check(ns - d);
                check(ns + d);
            }
            v *= 1.000_37;
        }
        assert!(checked > 1_000_000);
    }

    #[test]
    fn exact_boundaries_at_whole_seconds_are_upper_inclusive() {
        // 1 s is the upper bound of bucket -1: (2^(-1/8), 1].
        assert_eq!(otlp_index(1_000_000_000), Some(-1));
        assert_eq!(otlp_index(1_000_000_001), Some(0));
        assert_eq!(otlp_index(2_000_000_000), Some(7));
        assert_eq!(otlp_index(2_000_000_001), Some(8));
        assert_eq!(otlp_index(4_000_000_000), Some(15));
    }

    #[test]
    fn clamping_and_zero_bucket() {
        assert_eq!(bucket_index(0), Bucket::Zero);
        assert_eq!(bucket_index(14), Bucket::Zero);
        // 15 ns is above 2^-26 s = 14.9 ns: first bucket.
        assert_eq!(bucket_index(15), Bucket::Index(0));
        assert_eq!(bucket_index(u64::MAX), Bucket::Index(NUM_BUCKETS - 1));
        // 16384 s is the last bucket's upper bound.
        assert_eq!(
            bucket_index(16_384_000_000_000),
            Bucket::Index(NUM_BUCKETS - 1)
        );
        assert_eq!(
            otlp_index(16_384_000_000_000),
            Some(OTLP_INDEX_OFFSET + NUM_BUCKETS as i32 - 1)
        );
        assert!((ZERO_THRESHOLD_S - 2f64.powi(-26)).abs() < 1e-30);
        assert_eq!(
            MAX_TRACKED_S,
            2f64.powf((OTLP_INDEX_OFFSET + NUM_BUCKETS as i32) as f64 / 8.0)
        );
    }

    #[test]
    fn thresholds_match_definition() {
        let shift = 8.0 * 1e9f64.log2() - 239.0;
        for (k, t) in THRESHOLDS.iter().enumerate() {
            let want = 2f64.powf(((k + 1) as f64 - (1.0 - shift)) / 8.0) * 2f64.powi(63);
            assert!((*t as f64 / want - 1.0).abs() < 1e-12, "k={k}");
        }
    }
}
