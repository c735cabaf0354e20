//! Exact binomial intervals, for asserting that a measured rate is what was
//! configured: with n trials at probability p, a count outside the central
//! 99.9% interval happens once in a thousand runs by chance.

/// The central interval `[lo, hi]` holding at least `1 - alpha` of the
/// Binomial(n, p) mass (`alpha/2` cut from each tail).
pub fn interval(n: u64, p: f64, alpha: f64) -> (u64, u64) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    // log pmf(k) = ln n! - ln k! - ln (n-k)! + k ln p + (n-k) ln q
    let mut lf = vec![0.0f64; n as usize + 1];
    for k in 1..=n as usize {
        lf[k] = lf[k - 1] + (k as f64).ln();
    }
    let pmf = |k: u64| {
        (lf[n as usize] - lf[k as usize] - lf[(n - k) as usize] + k as f64 * lp + (n - k) as f64 * lq).exp()
    };
    let half = alpha / 2.0;
    let mut cdf = 0.0;
    let mut lo = 0;
    for k in 0..=n {
        cdf += pmf(k);
        if cdf > half {
            lo = k;
            break;
        }
    }
    let mut tail = 0.0;
    let mut hi = n;
    for k in (0..=n).rev() {
        tail += pmf(k);
        if tail > half {
            hi = k;
            break;
        }
    }
    (lo, hi)
}

/// Check that `count` of `n` is within the 99.9% interval of `p`.
pub fn check_rate(what: &str, count: u64, n: u64, p: f64) -> anyhow::Result<()> {
    let (lo, hi) = interval(n, p, 0.001);
    anyhow::ensure!(
        (lo..=hi).contains(&count),
        "{what}: {count} of {n} ({:.2}%), outside the 99.9% binomial interval [{lo}, {hi}] of {:.2}%",
        100.0 * count as f64 / n as f64,
        100.0 * p
    );
    Ok(())
}

/// The `q` quantile (0..=1) of a sample, by linear interpolation between
/// order statistics.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The sample standard deviation.
pub fn sd(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_sane() {
        assert_eq!(interval(2000, 0.0, 0.001), (0, 0));
        assert_eq!(interval(2000, 1.0, 0.001), (2000, 2000));
        let (lo, hi) = interval(2000, 0.5, 0.001);
        // normal approximation: 1000 +- 3.29 * 22.36
        assert!((922..=930).contains(&lo) && (1070..=1078).contains(&hi), "{lo} {hi}");
        let (lo, hi) = interval(2000, 0.01, 0.001);
        assert!((5..=8).contains(&lo) && (35..=38).contains(&hi), "{lo} {hi}");
    }
}
