//! `memory-pressure`: the target is pushed into reclaim, as when a node
//! runs short of memory or a neighbour's cache grows: its page cache is
//! reclaimed, its anonymous memory swapped where there is swap, and its
//! allocations slowed while it stays over the boundary.

use serde::Serialize;

/// The least `--high`: below it the target could hardly run at all.
pub const MIN_BYTES: u64 = 1 << 20;

/// Where the boundary goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum High {
    /// So many bytes.
    Bytes(u64),
    /// This share (1 to 99) of what the target uses when the attack
    /// starts (its `memory.current`).
    Percent(u32),
}

/// `memory-pressure`: the target's memory.high for the attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPressure {
    pub high: High,
}

impl Serialize for MemoryPressure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self.high {
            High::Bytes(b) => m.serialize_entry("high", &format_bytes(b))?,
            High::Percent(p) => m.serialize_entry("high", &format!("{p}%"))?,
        }
        m.end()
    }
}

pub use super::size::format as format_bytes;

impl MemoryPressure {
    /// `--high`: a size (`256M`, `1.5G`, `65536K`, bytes; K, M, G, T are
    /// powers of 1024, as cgroup files take them) or a share of what the
    /// target uses (`50%`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(p) if (1..=99).contains(&p) => Ok(Self { high: High::Percent(p) }),
                _ => Err(format!(
                    "--high {text:?}: a share of what the target uses is a whole percentage from 1% to 99%"
                )),
            };
        }
        let bytes = super::size::parse(t).ok_or_else(|| {
            format!(
                "--high {text:?}: expected a size (256M, 1.5G, 65536K) or a share of what the target uses (50%)"
            )
        })?;
        if bytes < MIN_BYTES {
            return Err(format!(
                "--high {text:?} is less than {}: the target could hardly run",
                format_bytes(MIN_BYTES)
            ));
        }
        Ok(Self { high: High::Bytes(bytes) })
    }

    /// The boundary in bytes for a target using `current` bytes.
    pub fn bytes(&self, current: u64) -> u64 {
        match self.high {
            High::Bytes(b) => b,
            High::Percent(p) => current / 100 * u64::from(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_is_a_size_or_a_share() {
        let b = |t: &str| MemoryPressure::parse(t).map(|m| m.high);
        assert_eq!(b("256M"), Ok(High::Bytes(256 << 20)));
        assert_eq!(b("256MiB"), Ok(High::Bytes(256 << 20)));
        assert_eq!(b("1.5G"), Ok(High::Bytes(3 << 29)));
        assert_eq!(b("65536k"), Ok(High::Bytes(64 << 20)));
        assert_eq!(b("2097152"), Ok(High::Bytes(2 << 20)));
        assert_eq!(b("50%"), Ok(High::Percent(50)));
        for bad in
            ["", "%", "0%", "100%", "50.5%", "M", "-1M", "1e3M", "inf", "1.2345G", "100", "512K", "1P", "x"]
        {
            assert!(b(bad).is_err(), "{bad:?} accepted");
        }
        assert!(b("512K").unwrap_err().contains("hardly run"));
        assert_eq!(format_bytes(256 << 20), "256M");
        assert_eq!(format_bytes(3 << 29), "1536M");
        assert_eq!(format_bytes(4097), "4097");
        assert_eq!(MemoryPressure { high: High::Percent(50) }.bytes(1000), 500);
    }

    #[test]
    fn steps_build_the_same_fault_as_the_flags() {
        use crate::faults::{Fault, fault_of_step as parse};
        let f = parse("{fault: memory-pressure, high: 64M, duration: 30s}").unwrap();
        assert_eq!(f, Fault::MemoryPressure(MemoryPressure { high: High::Bytes(64 << 20) }));
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"fault":"memory-pressure","high":"64M"}"#);
        assert!(parse("{fault: memory-pressure, duration: 30s}").unwrap_err().contains("high"));
    }
}
