//! Parsing and printing of the quantities users type: durations, percents,
//! CIDRs. Shared by CLI flags and experiment files so both accept the same
//! spellings and reject the same mistakes with the same messages.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

/// The longest attack we accept. Longer ones are almost always a typo
/// (`--duration 2h` meant `2m`), and a fault that outlives its operator's
/// attention is what this tool exists to prevent.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parse `500ms`, `30s`, `2m`, `1h30m`, `1.5s`. A bare number is refused:
/// seconds or milliseconds is exactly the ambiguity that causes outages.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. 30s, 2m or 1h30m".into());
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {s:?}; a duration is positive, e.g. 30s"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}; write e.g. 30s, 2m or 1h30m"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "duration {s:?} has no unit; write {value}s or {value}ms (units: ms, s, m, h)"
                ));
            }
            other => return Err(format!("unknown unit {other:?} in duration {s:?} (units: ms, s, m, h)")),
        };
        total += value * scale;
    }
    if !total.is_finite() || total > MAX_DURATION.as_secs_f64() * 1000.0 {
        return Err(format!("duration {s:?} is absurdly long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Print a duration the way `parse_duration` reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// An attack duration: positive and at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttackDuration(pub Duration);

impl FromStr for AttackDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d.is_zero() {
            return Err("a zero duration injects nothing; give e.g. 30s".into());
        }
        if d > MAX_DURATION {
            return Err(format!(
                "{s} is longer than the {} chaos allows for one attack; split it, or check the unit",
                format_duration(MAX_DURATION)
            ));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for AttackDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// A probability in percent, 0 to 100 inclusive, with up to 1e-7 resolution.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize)]
pub struct Percent(f64);

impl Percent {
    pub fn new(value: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&value) || value.is_nan() {
            return Err(format!("{value}% is outside 0..100"));
        }
        Ok(Self(value))
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// The threshold `t` such that `prandom_u32 < t` happens with this
    /// probability: `round(p/100 * 2^32)`, so 100% is 2^32 (always).
    pub fn threshold(self) -> u64 {
        (self.0 / 100.0 * 4_294_967_296.0).round() as u64
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_end_matches('%');
        let v: f64 = t.parse().map_err(|_| format!("{s:?} is not a percentage; write e.g. 5 or 0.5"))?;
        Self::new(v)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// An IP network, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32
/// or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr =
            a.parse().map_err(|_| format!("{s:?} is not an IP network; write e.g. 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length {p:?} in {s:?} must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `addr` is in the network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports for an IPv4
    /// peer) is its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A bandwidth in bits per second: `10mbit`, `1.5gbit`, `500kbit`,
/// `100Mbit/s`. Units are decimal (k = 1000) and count bits, as tc's do;
/// byte units (`mbps`, which tc reads as megabytes) are refused as
/// ambiguous, and so is a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    pub bits_per_second: u64,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let lower = s.to_ascii_lowercase();
        let lower = lower.strip_suffix("/s").unwrap_or(&lower);
        let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
        let (num, unit) = lower.split_at(split);
        if num.is_empty() {
            return Err(format!("invalid rate {s:?}; write e.g. 10mbit or 1gbit"));
        }
        let value: f64 = num.parse().map_err(|_| format!("invalid number in rate {s:?}"))?;
        let scale = match unit.trim() {
            "bit" => 1e0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "tbit" => 1e12,
            "" => return Err(format!("rate {s:?} has no unit; write {value}mbit or {value}kbit")),
            u @ ("bps" | "kbps" | "mbps" | "gbps" | "b" | "kb" | "mb" | "gb") => {
                return Err(format!(
                    "rate unit {u:?} in {s:?} is ambiguous (tc reads it as bytes per second); write bits: {value}{}",
                    u.trim_end_matches("ps").trim_end_matches('b').to_owned() + "bit"
                ));
            }
            other => return Err(format!("unknown unit {other:?} in rate {s:?} (units: kbit, mbit, gbit)")),
        };
        let bits = value * scale;
        if !bits.is_finite() || bits < 1.0 || bits > u64::MAX as f64 {
            return Err(format!("rate {s:?} is out of range"));
        }
        Ok(Self { bits_per_second: bits.round() as u64 })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_second;
        for (scale, unit) in
            [(1_000_000_000_000, "tbit"), (1_000_000_000, "gbit"), (1_000_000, "mbit"), (1_000, "kbit")]
        {
            if b >= scale && b.is_multiple_of(scale / 1000) {
                let v = b as f64 / scale as f64;
                return write!(f, "{v}{unit}");
            }
        }
        write!(f, "{b}bit")
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let net = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.1.0.0/16").contains(ip("10.1.255.3")));
        assert!(!net("10.1.0.0/16").contains(ip("10.2.0.1")));
        assert!(net("10.1.0.0/16").contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(net("0.0.0.0/0").contains(ip("192.0.2.1")) && !net("0.0.0.0/0").contains(ip("::1")));
        assert!(
            net("2001:db8::/32").contains(ip("2001:db8:1::1")) && !net("2001:db8::/32").contains(ip("::1"))
        );
        assert!(net("::/0").contains(ip("fe80::1")) && net("10.0.0.7").contains(ip("10.0.0.7")));
    }

    #[test]
    fn attack_durations_are_bounded() {
        assert!("0s".parse::<AttackDuration>().unwrap_err().contains("zero"));
        assert!("25h".parse::<AttackDuration>().unwrap_err().contains("longer than"));
        assert_eq!("24h".parse::<AttackDuration>().unwrap().0, MAX_DURATION);
    }

    #[test]
    fn formats_round_trip() {
        for s in ["500ms", "30s", "2m", "2m5s", "1h", "1h1m1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn percent_thresholds_are_exact_at_the_ends() {
        assert_eq!(Percent::new(0.0).unwrap().threshold(), 0);
        assert_eq!(Percent::new(100.0).unwrap().threshold(), 1 << 32);
        assert_eq!(Percent::new(50.0).unwrap().threshold(), 1 << 31);
        assert!("101".parse::<Percent>().is_err());
        assert!("-1".parse::<Percent>().is_err());
        assert!("NaN".parse::<Percent>().is_err());
        assert_eq!("5%".parse::<Percent>().unwrap().value(), 5.0);
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.prefix, 16);
        assert_eq!("10.0.0.1".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().prefix, 32);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("foo".parse::<Cidr>().is_err());
    }

    #[test]
    fn rates() {
        let bps = |s: &str| s.parse::<Rate>().map(|r| r.bits_per_second);
        assert_eq!(bps("10mbit"), Ok(10_000_000));
        assert_eq!(bps("100Mbit/s"), Ok(100_000_000));
        assert_eq!(bps("1.5gbit"), Ok(1_500_000_000));
        assert_eq!(bps("500kbit"), Ok(500_000));
        assert!(bps("10").unwrap_err().contains("no unit"));
        assert!(bps("10mbps").unwrap_err().contains("ambiguous"));
        assert!(bps("10furlongs").unwrap_err().contains("unknown unit"));
        assert!(bps("-1mbit").is_err());
        for s in ["10mbit", "1.5gbit", "500kbit", "56kbit", "100bit", "2.048mbit"] {
            assert_eq!(s.parse::<Rate>().unwrap().to_string(), s);
        }
    }
}
