//! `cpu-starve`: the target's processes get at most a share of CPU time,
//! as on an overcommitted node or behind a noisy neighbour: they run, but
//! slower, and everything they do takes longer.

use serde::Serialize;

/// The smallest share: 1% of a CPU, 1 ms of a 100 ms period, the least
/// quota the kernel takes (`min_cfs_quota_period`, kernel/sched/core.c).
pub const MIN_MILLICPUS: u32 = 10;
/// The largest: more CPUs than any machine chaos runs on.
pub const MAX_MILLICPUS: u32 = 1024 * 1000;

/// `cpu-starve`: at most `millicpus` thousandths of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuStarve {
    #[serde(rename = "cpus", serialize_with = "cpus")]
    pub millicpus: u32,
}

fn cpus<S: serde::Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_cpus(*m))
}

/// `250` as `0.25`, `2000` as `2`.
pub fn format_cpus(millicpus: u32) -> String {
    let text = format!("{}.{:03}", millicpus / 1000, millicpus % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl CpuStarve {
    /// `--cpus`: a number of CPUs (`0.25`, `2`) or a percentage of one
    /// (`25%`), to a thousandth of a CPU.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--cpus {text:?}: expected a number of CPUs (0.25, 1.5) or a percentage of one CPU (25%), from \
                 {} to {}",
                format_cpus(MIN_MILLICPUS),
                format_cpus(MAX_MILLICPUS)
            )
        };
        let t = text.trim();
        let (number, scale) = match t.strip_suffix('%') {
            Some(p) => (p.trim(), 10u64),
            None => (t, 1000u64),
        };
        // Decimal digits by hand: f64 would take `inf`, `1e3` and `0x1`.
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
            || whole.len() > 9
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        // Thousandths of the unit, then of a CPU; finer digits must be 0.
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        if frac.chars().skip(3).any(|c| c != '0') {
            return Err(format!("--cpus {text:?}: at most three decimals (thousandths of a CPU)"));
        }
        let thousandths = whole * 1000 + digits.parse::<u64>().map_err(|_| bad())?;
        if scale == 10 && !thousandths.is_multiple_of(100) {
            return Err(format!("--cpus {text:?}: a percentage takes one decimal at most (0.1% of a CPU)"));
        }
        let milli = thousandths * scale / 1000;
        match u32::try_from(milli) {
            Ok(m) if (MIN_MILLICPUS..=MAX_MILLICPUS).contains(&m) => Ok(Self { millicpus: m }),
            _ => Err(bad()),
        }
    }

    /// The quota for a period (both in µs, as `cpu.max` takes them).
    pub fn quota_us(&self, period_us: u64) -> u64 {
        period_us * u64::from(self.millicpus) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_a_number_or_a_percentage_of_one() {
        let m = |t: &str| CpuStarve::parse(t).map(|c| c.millicpus);
        assert_eq!(m("0.25"), Ok(250));
        assert_eq!(m("2"), Ok(2000));
        assert_eq!(m(".5"), Ok(500));
        assert_eq!(m("1.500"), Ok(1500));
        assert_eq!(m("25%"), Ok(250));
        assert_eq!(m("2.5%"), Ok(25));
        assert_eq!(m("150%"), Ok(1500));
        assert_eq!(m("1%"), Ok(10));
        for bad in ["", "%", "0", "0.005", "0.5%", "-1", "1e3", "inf", "0x1", "2000", "1.2.3", " 25 %x"] {
            assert!(m(bad).is_err(), "{bad:?} accepted");
        }
        assert!(m("0.2505").unwrap_err().contains("three decimals"));
        assert!(m("2.55%").unwrap_err().contains("one decimal"));
        assert_eq!(format_cpus(250), "0.25");
        assert_eq!(format_cpus(2000), "2");
        assert_eq!(format_cpus(10), "0.01");
        assert_eq!(CpuStarve { millicpus: 250 }.quota_us(100_000), 25_000);
    }

    #[test]
    fn steps_build_the_same_fault_as_the_flags() {
        use crate::faults::{Fault, fault_of_step as parse};
        let f = parse("{fault: cpu-starve, cpus: 20%, duration: 30s}").unwrap();
        assert_eq!(f, Fault::CpuStarve(CpuStarve { millicpus: 200 }));
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"fault":"cpu-starve","cpus":"0.2"}"#);
        let e = parse("{fault: cpu-starve, duration: 30s}").unwrap_err();
        assert!(e.contains("cpus"), "{e}");
    }
}
