//! Percentiles from exponential buckets, for the live table. A bucket
//! (lo, hi] is reported at 2·lo·hi/(lo+hi), the point whose worst relative
//! error to any value in the bucket is smallest: (2^(1/8) - 1) / (2^(1/8) + 1)
//! = 4.33 % (the arithmetic midpoint would be off by up to 4.53 %).

use syscope_common::hist::{OTLP_INDEX_OFFSET, SCALE, ZERO_THRESHOLD_S};

use super::HistValue;

/// Bounds (seconds) of OTLP bucket `index` at our scale.
pub fn bucket_bounds_s(index: i32) -> (f64, f64) {
    let per_octave = f64::from(1u32 << SCALE);
    (
        (index as f64 / per_octave).exp2(),
        ((index + 1) as f64 / per_octave).exp2(),
    )
}

/// The value reported for bucket (lo, hi]: equal worst-case relative error
/// at both ends.
pub fn representative(lo: f64, hi: f64) -> f64 {
    2.0 * lo * hi / (lo + hi)
}

/// The `q` quantile (0..=1) in seconds; `None` for an empty histogram.
pub fn quantile_s(h: &HistValue, q: f64) -> Option<f64> {
    let count = h.count();
    if count == 0 {
        return None;
    }
    // Nearest rank: the smallest value with at least q * count at or below it.
    let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
    let mut seen = h.zero;
    if seen >= rank {
        return Some(ZERO_THRESHOLD_S / 2.0);
    }
    for (i, &n) in h.buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let (lo, hi) = bucket_bounds_s(OTLP_INDEX_OFFSET + i as i32);
            return Some(representative(lo, hi));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use syscope_common::{bucket_index, Bucket};

    const MAX_REL_ERR: f64 = 0.0433;

    fn hist_of(values_ns: &[u64]) -> HistValue {
        let mut h = HistValue::default();
        for &v in values_ns {
            h.sum_ns += v;
            match bucket_index(v) {
                Bucket::Zero => h.zero += 1,
                Bucket::Index(i) => h.buckets[i] += 1,
            }
        }
        h
    }

    #[test]
    fn quantiles_within_stated_error() {
        // 1..=10000 µs: exact quantiles are known.
        let values: Vec<u64> = (1..=10_000u64).map(|us| us * 1_000).collect();
        let h = hist_of(&values);
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1] as f64 * 1e-9;
            let got = quantile_s(&h, q).unwrap();
            let err = (got - exact).abs() / exact;
            assert!(
                err <= MAX_REL_ERR,
                "q={q} exact={exact} got={got} err={err}"
            );
        }
    }

    #[test]
    fn single_value_sweep_stays_within_error() {
        let mut v = 20u64;
        while v < 1_000_000_000_000 {
            let got = quantile_s(&hist_of(&[v]), 0.5).unwrap();
            let exact = v as f64 * 1e-9;
            assert!(
                (got - exact).abs() / exact <= MAX_REL_ERR,
                "v={v} got={got}"
            );
            v = v * 1001 / 1000 + 1;
        }
    }

    #[test]
    fn twenty_ms_sleep_bucket() {
        let got = quantile_s(&hist_of(&[20_000_000]), 0.99).unwrap();
        assert!((got - 0.020).abs() / 0.020 <= MAX_REL_ERR, "{got}");
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(quantile_s(&HistValue::default(), 0.5), None);
        assert!(quantile_s(&hist_of(&[0, 3]), 0.5).unwrap() < ZERO_THRESHOLD_S);
    }
}
