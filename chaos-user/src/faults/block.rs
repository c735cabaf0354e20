//! `io-throttle`: the target's reads and writes of a disk are held to a
//! rate, as on a saturated or degraded disk, a throttled cloud volume or a
//! busy SAN: each I/O waits its turn, and what the target does on that
//! disk takes longer. Block I/O only: what the page cache answers, and
//! files on tmpfs, overlay or a network filesystem, never reach a disk.

use serde::Serialize;

use super::size;

/// The least byte rate: a page a second. Smaller would hold one I/O for
/// minutes.
pub const MIN_BPS: u64 = 4096;

/// The limits of `io.max`, one device line's fields (block/blk-throttle.c,
/// `tg_set_limit()`); `None` leaves a field as the target has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

impl Limits {
    /// Each set limit: its `io.max` field, its flag and its value.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
        [
            ("rbps", "--read-bps", self.read_bps),
            ("wbps", "--write-bps", self.write_bps),
            ("riops", "--read-iops", self.read_iops),
            ("wiops", "--write-iops", self.write_iops),
        ]
        .into_iter()
        .filter_map(|(field, flag, v)| Some((field, flag, v?)))
    }
}

/// Which disk: as given, resolved when the attack starts (a device node, a
/// `MAJ:MIN` or a path on the disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DeviceArg(pub String);

impl DeviceArg {
    /// An absolute path (a device node, or a file or directory on the
    /// disk) or `MAJ:MIN`; nothing is looked up here.
    pub fn parse(text: &str) -> Result<Self, String> {
        if majmin(text).is_some() || text.starts_with('/') {
            return Ok(Self(text.to_owned()));
        }
        Err(format!(
            "--device {text:?}: expected a disk as a device node (/dev/sda, /dev/nvme0n1), a file or directory \
             on it (/var/lib/mysql), or its MAJ:MIN (8:0), as an absolute path"
        ))
    }
}

/// `8:0` as (8, 0).
pub fn majmin(text: &str) -> Option<(u32, u32)> {
    let (maj, min) = text.split_once(':')?;
    let num = |t: &str| (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?;
    Some((num(maj)?, num(min)?))
}

/// `io-throttle`: the limits, on each of the disks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoThrottle {
    pub devices: Vec<DeviceArg>,
    pub limits: Limits,
}

impl Serialize for IoThrottle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("devices", &self.devices)?;
        for (_, flag, v) in self.limits.fields() {
            let name = &flag[2..];
            if name.ends_with("bps") {
                m.serialize_entry(name, &size::format(v))?;
            } else {
                m.serialize_entry(name, &v)?;
            }
        }
        m.end()
    }
}

impl IoThrottle {
    /// The fault from its flags' values; at least one device and one limit.
    pub fn new(devices: Vec<DeviceArg>, limits: Limits) -> Result<Self, String> {
        if devices.is_empty() {
            return Err("--device: name the disk to throttle (/dev/sda, 8:0, or a path on it)".into());
        }
        if limits.fields().next().is_none() {
            return Err(
                "give at least one limit: --read-bps, --write-bps, --read-iops or --write-iops".into()
            );
        }
        Ok(Self { devices, limits })
    }
}

/// `--read-bps`/`--write-bps`: bytes a second, as a size (`1M`, `512K`,
/// `1.5M/s`).
pub fn parse_bps(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match size::parse(t) {
        Some(b) if b >= MIN_BPS => Ok(b),
        Some(_) => {
            Err(format!("{text:?} is less than {}/s: each I/O would wait for minutes", size::format(MIN_BPS)))
        }
        None => Err(format!("{text:?}: expected bytes a second as a size (1M, 512K, 1.5M/s)")),
    }
}

/// `--read-iops`/`--write-iops`: I/Os a second, at least 1.
pub fn parse_iops(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?}: expected a whole number of I/Os a second, at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_devices_parse_or_say_why_not() {
        assert_eq!(parse_bps("2M"), Ok(2 << 20));
        assert_eq!(parse_bps("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_bps("4096"), Ok(4096));
        assert!(parse_bps("4095").unwrap_err().contains("less than 4K/s"));
        assert!(parse_bps("fast").unwrap_err().contains("expected"));
        assert_eq!(parse_iops("100"), Ok(100));
        for bad in ["0", "-1", "1.5", "", "1k"] {
            assert!(parse_iops(bad).is_err(), "{bad:?}");
        }
        assert_eq!(majmin("8:0"), Some((8, 0)));
        assert_eq!(majmin("259:12"), Some((259, 12)));
        for bad in ["8:", ":0", "8", "a:0", "8:0:1", "+8:0"] {
            assert_eq!(majmin(bad), None, "{bad:?}");
        }
        assert!(DeviceArg::parse("/dev/sda").is_ok());
        assert!(DeviceArg::parse("7:0").is_ok());
        assert!(DeviceArg::parse("sda").unwrap_err().contains("absolute path"));
        let none = IoThrottle::new(vec![DeviceArg("/dev/sda".into())], Limits::default());
        assert!(none.unwrap_err().contains("at least one limit"));
    }

    #[test]
    fn steps_build_the_same_fault_as_the_flags() {
        use crate::faults::{Fault, fault_of_step as parse};
        let f = parse(
            "{fault: io-throttle, devices: [/dev/loop0, '7:1'], write-bps: 1M, read-iops: 50, duration: 30s}",
        )
        .unwrap();
        let want = IoThrottle {
            devices: vec![DeviceArg("/dev/loop0".into()), DeviceArg("7:1".into())],
            limits: Limits { write_bps: Some(1 << 20), read_iops: Some(50), ..Limits::default() },
        };
        assert_eq!(f, Fault::IoThrottle(want));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"fault":"io-throttle","devices":["/dev/loop0","7:1"],"write-bps":"1M","read-iops":50}"#
        );
        assert!(parse("{fault: io-throttle, write-bps: 1M, duration: 30s}").unwrap_err().contains("device"));
        assert!(
            parse("{fault: io-throttle, devices: [/dev/sda], duration: 30s}").unwrap_err().contains("limit")
        );
    }
}
