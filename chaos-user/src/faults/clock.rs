//! Clock skew: shift what the target's processes read as the time of day.

use std::{
    fmt,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use chaos_abi::clock::{
    CLOCK_REALTIME, CLOCK_REALTIME_ALARM, CLOCK_REALTIME_COARSE, CLOCK_TAI, ClockRule, NSEC_PER_SEC,
    WALL_CALLS,
};
use serde::Serialize;

/// The largest offset accepted either way: 100 years. Certificates,
/// licences and leap-year bugs live within it; anything larger is a typo.
pub const MAX_OFFSET_DAYS: i64 = 36_500;

const NS_PER_DAY: i64 = 86_400 * NSEC_PER_SEC as i64;

/// A signed offset, to the nanosecond: `+90s`, `-2h`, `+1d12h`, `-250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    pub ns: i64,
}

impl Offset {
    /// Whole seconds (rounded down) and nanoseconds in `[0, 10^9)`, as the
    /// rule carries them.
    pub fn split(self) -> (i64, u64) {
        let n = NSEC_PER_SEC as i64;
        (self.ns.div_euclid(n), self.ns.rem_euclid(n) as u64)
    }
}

impl FromStr for Offset {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let example = "e.g. +90s, -2h, +400d or -1h30m";
        let (sign, body) = match s.as_bytes().first() {
            Some(b'+') => (1i64, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            Some(_) => {
                return Err(format!(
                    "offset {s:?} has no sign: write +{s} (the target's clocks run ahead) or -{s} (behind)"
                ));
            }
            None => return Err(format!("empty offset; write a signed duration, {example}")),
        };
        let mut total: i128 = 0;
        let mut rest = body;
        if rest.is_empty() {
            return Err(format!("offset {s:?} has no duration after its sign; {example}"));
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("invalid offset {s:?}: expected a number at {rest:?}; {example}"));
            }
            let value: i128 =
                rest[..digits].parse().map_err(|_| format!("offset {s:?}: number too large; {example}"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            if unit.starts_with('.') {
                return Err(format!(
                    "offset {s:?}: fractions are not accepted; use a smaller unit, e.g. +1500ms for +1.5s"
                ));
            }
            let scale: i128 = match unit {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => i128::from(NS_PER_DAY),
                "" => {
                    return Err(format!(
                        "offset {s:?} has no unit: write {}{value}s, {}{value}m, ... (units: ms, s, m, h, d)",
                        &s[..1],
                        &s[..1]
                    ));
                }
                other => {
                    return Err(format!("unknown unit {other:?} in offset {s:?} (units: ms, s, m, h, d)"));
                }
            };
            total = total.saturating_add(value.saturating_mul(scale));
            if total > i128::from(MAX_OFFSET_DAYS) * i128::from(NS_PER_DAY) {
                return Err(format!(
                    "offset {s:?} is absurd: at most {MAX_OFFSET_DAYS}d (100 years) either way"
                ));
            }
        }
        if total == 0 {
            return Err(format!("offset {s:?} is zero: it would shift nothing; {example}"));
        }
        Ok(Self { ns: sign * total as i64 })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.ns < 0 { '-' } else { '+' };
        let mut ns = self.ns.unsigned_abs();
        let mut out = String::new();
        for (unit, size) in [
            ("d", NS_PER_DAY as u64),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
        ] {
            if ns >= size {
                out += &format!("{}{unit}", ns / size);
                ns %= size;
            }
        }
        if ns > 0 {
            out += &format!("{ns}ns");
        }
        write!(f, "{sign}{out}")
    }
}

impl Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A clock a skew may shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SkewClock {
    /// The wall clock: CLOCK_REALTIME, CLOCK_REALTIME_COARSE,
    /// CLOCK_REALTIME_ALARM, gettimeofday() and time().
    Realtime,
    /// CLOCK_TAI (the wall clock plus leap seconds), so that programs
    /// comparing it with the wall clock keep seeing the usual difference.
    Tai,
}

impl SkewClock {
    pub fn name(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Tai => "tai",
        }
    }

    /// Its bits in [`ClockRule::clocks`].
    pub fn bits(self) -> u32 {
        match self {
            Self::Realtime => {
                (1 << CLOCK_REALTIME)
                    | (1 << CLOCK_REALTIME_COARSE)
                    | (1 << CLOCK_REALTIME_ALARM)
                    | WALL_CALLS
            }
            Self::Tai => 1 << CLOCK_TAI,
        }
    }
}

impl FromStr for SkewClock {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "realtime" => Ok(Self::Realtime),
            "tai" => Ok(Self::Tai),
            c @ ("monotonic" | "boottime" | "monotonic_raw" | "monotonic-raw") => Err(format!(
                "{c} is not shifted: a monotonic clock that jumps when the attack starts, and back when it \
                 ends, breaks the one promise it makes (programs divide by elapsed time and wait on it); \
                 skew the wall clock (realtime, tai), or start the program in a time namespace \
                 (unshare --time --{}=OFFSET), which offsets it from the program's first instruction",
                if c == "boottime" { "boottime" } else { "monotonic" }
            )),
            other => Err(format!("unknown clock {other:?}: the clocks are realtime and tai")),
        }
    }
}

/// `chaos attack clock-skew`: the target's processes read the clocks in
/// `clocks` shifted by `offset`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClockSkew {
    pub offset: Offset,
    pub clocks: Vec<SkewClock>,
}

impl ClockSkew {
    /// `clocks` empty means realtime. Refuses an offset that would put the
    /// target's clock before 1970, where `time_t` readers break.
    pub fn new(offset: Offset, clocks: Vec<SkewClock>) -> Result<Self, String> {
        let mut clocks = if clocks.is_empty() { vec![SkewClock::Realtime] } else { clocks };
        clocks.sort();
        clocks.dedup();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        if now.saturating_add(offset.ns) <= 0 {
            return Err(format!(
                "offset {offset} would move the target's clock before 1970-01-01, where programs reading \
                 time_t break; use a smaller offset"
            ));
        }
        Ok(Self { offset, clocks })
    }

    /// Bits of every shifted clock id and call.
    pub fn mask(&self) -> u32 {
        self.clocks.iter().fold(0, |m, c| m | c.bits())
    }

    /// The rule the eBPF side reads.
    pub fn rule(&self, deadline_ns: u64, slot: u32, flags: u32) -> ClockRule {
        let (offset_sec, offset_nsec) = self.offset.split();
        ClockRule { deadline_ns, offset_sec, offset_nsec, clocks: self.mask(), flags, slot, _pad: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(s: &str) -> Result<i64, String> {
        s.parse::<Offset>().map(|o| o.ns)
    }

    #[test]
    fn offsets_need_a_sign_and_a_unit() {
        assert_eq!(off("+90s"), Ok(90_000_000_000));
        assert_eq!(off("-2h"), Ok(-7_200_000_000_000));
        assert_eq!(off("+1d12h"), Ok(36 * 3_600_000_000_000));
        assert_eq!(off("-1h30m"), Ok(-5_400_000_000_000));
        assert_eq!(off("+250ms"), Ok(250_000_000));
        assert!(off("90s").unwrap_err().contains("no sign: write +90s"));
        assert!(off("+90").unwrap_err().contains("no unit"));
        assert!(off("+5y").unwrap_err().contains("unknown unit \"y\""));
        assert!(off("+").unwrap_err().contains("no duration"));
        assert!(off("+0s").unwrap_err().contains("zero"));
        assert!(off("+1.5s").unwrap_err().contains("fractions"));
        assert!(off("+s").unwrap_err().contains("expected a number"));
        assert!(off("+36501d").unwrap_err().contains("absurd"));
        assert!(off("-99999999999999999999d").unwrap_err().contains("absurd"));
        assert_eq!(off("-36500d"), Ok(-36_500 * NS_PER_DAY));
    }

    #[test]
    fn offsets_split_and_print() {
        assert_eq!("-1500ms".parse::<Offset>().unwrap().split(), (-2, 500_000_000));
        assert_eq!("+90s".parse::<Offset>().unwrap().split(), (90, 0));
        for s in ["+1m30s", "-2h", "+1d12h", "-1h30m", "+250ms", "+2d", "-1s500ms"] {
            assert_eq!(s.parse::<Offset>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn monotonic_clocks_are_refused_with_a_reason() {
        let e = "monotonic".parse::<SkewClock>().unwrap_err();
        assert!(e.contains("time namespace"), "{e}");
        assert!("boottime".parse::<SkewClock>().unwrap_err().contains("--boottime"));
        assert_eq!("TAI".parse::<SkewClock>(), Ok(SkewClock::Tai));
    }

    #[test]
    fn rules_carry_the_clock_bits() {
        let f = ClockSkew::new("-1500ms".parse().unwrap(), vec![]).unwrap();
        let r = f.rule(7, 3, 1);
        assert_eq!((r.offset_sec, r.offset_nsec, r.slot, r.flags, r.deadline_ns), (-2, 500_000_000, 3, 1, 7));
        assert_eq!(r.clocks, (1 << 0) | (1 << 5) | (1 << 8) | WALL_CALLS);
        let both = ClockSkew::new("+1s".parse().unwrap(), vec![SkewClock::Tai, SkewClock::Realtime]).unwrap();
        assert_eq!(both.mask(), r.clocks | (1 << 11));
        assert!(ClockSkew::new("-36500d".parse().unwrap(), vec![]).unwrap_err().contains("before 1970"));
    }
}

/// `fault: clock-skew` in experiment files (experiment/parse/fault_kinds.rs).
#[cfg(test)]
mod experiment_files {
    use super::*;
    use crate::faults::{Fault, fault_of_step as parse};

    #[test]
    fn clock_skew_steps_build_the_same_fault_as_the_flags() {
        let fault =
            parse("{fault: clock-skew, offset: -2h, clocks: [tai, realtime], duration: 30s}").unwrap();
        let want = ClockSkew::new("-2h".parse().unwrap(), vec![SkewClock::Realtime, SkewClock::Tai]).unwrap();
        assert_eq!(fault, Fault::ClockSkew(want));
        let one = parse("{fault: clock-skew, offset: '+400d', clocks: tai, duration: 1m}").unwrap();
        let Fault::ClockSkew(one) = one else { panic!("{one:?}") };
        assert_eq!((one.offset.to_string(), one.clocks), ("+400d".to_owned(), vec![SkewClock::Tai]));
        let default = parse("{fault: clock-skew, offset: +90s, duration: 1m}").unwrap();
        let Fault::ClockSkew(default) = default else { panic!() };
        assert_eq!(default.clocks, vec![SkewClock::Realtime]);
    }

    #[test]
    fn clock_skew_steps_refuse_nonsense_with_a_location() {
        for (step, says) in [
            ("{fault: clock-skew, offset: 90s, duration: 1m}", "no sign"),
            ("{fault: clock-skew, duration: 1m}", "offset"),
            ("{fault: clock-skew, offset: +90s, clocks: monotonic, duration: 1m}", "time namespace"),
            ("{fault: clock-skew, offset: +90s, clocks: [realtime, uptime], duration: 1m}", "unknown clock"),
            ("{fault: clock-skew, offset: -36500d, duration: 1m}", "before 1970"),
            ("{fault: clock-skew, offset: +90s, percent: 5, duration: 1m}", "percent"),
        ] {
            let err = parse(step).unwrap_err();
            assert!(err.contains(says) && err.contains("step.yaml:"), "{step}: {err}");
        }
    }
}
