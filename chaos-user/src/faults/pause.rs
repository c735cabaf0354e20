//! `pause`: the target's processes are frozen (cgroup v2's freezer), as
//! when a VM is paused, a process is stopped in a debugger or a node
//! stalls in a long garbage collection: alive, holding their sockets and
//! locks, answering nothing. For the whole attack, or in cycles: frozen for
//! `--for` at the start of every `--every`.

use std::time::Duration;

use serde::Serialize;

use crate::units::format_duration;

/// The shortest `--for`: freezing waits for every task of the cgroup to
/// reach the freezer (kernel/cgroup/freezer.c: each is woken to stop at
/// its next return to user space), which takes milliseconds.
pub const MIN_FROZEN: Duration = Duration::from_millis(10);

/// Frozen for `frozen` at the start of each `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cycle {
    #[serde(serialize_with = "duration")]
    pub every: Duration,
    #[serde(rename = "for", serialize_with = "duration")]
    pub frozen: Duration,
}

fn duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `pause`: when the target is frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// Frozen in cycles; for the whole attack when absent.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub cycle: Option<Cycle>,
}

impl Pause {
    pub fn new(every: Option<Duration>, frozen: Option<Duration>) -> Result<Self, String> {
        let cycle = match (every, frozen) {
            (None, None) => None,
            (Some(_), None) => {
                return Err("--every needs --for: how long the target stays frozen each time".into());
            }
            (None, Some(_)) => return Err("--for needs --every: how often the target is frozen".into()),
            (Some(every), Some(frozen)) => {
                if frozen < MIN_FROZEN {
                    return Err(format!(
                        "--for {} is too short: at least {} (freezing waits for every task of the cgroup)",
                        format_duration(frozen),
                        format_duration(MIN_FROZEN)
                    ));
                }
                if frozen >= every {
                    return Err(format!(
                        "--for {} is not shorter than --every {}: the target would never run; leave both out \
                         to freeze it for the whole attack",
                        format_duration(frozen),
                        format_duration(every)
                    ));
                }
                Some(Cycle { every, frozen })
            }
        };
        Ok(Self { cycle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn cycles_need_both_flags_and_leave_the_target_time_to_run() {
        assert_eq!(Pause::new(None, None).unwrap().cycle, None);
        assert!(Pause::new(Some(MS(1000)), None).unwrap_err().contains("--for"));
        assert!(Pause::new(None, Some(MS(100))).unwrap_err().contains("--every"));
        assert!(Pause::new(Some(MS(100)), Some(MS(100))).unwrap_err().contains("never run"));
        assert!(Pause::new(Some(MS(100)), Some(MS(5))).unwrap_err().contains("too short"));
        assert!(Pause::new(Some(MS(1000)), Some(MS(200))).is_ok());
    }

    #[test]
    fn steps_build_the_same_fault_as_the_flags() {
        use crate::faults::{Fault, fault_of_step as parse};
        assert_eq!(parse("{fault: pause, duration: 30s}").unwrap(), Fault::Pause(Pause { cycle: None }));
        let cycled = parse("{fault: pause, every: 10s, for: 2s, duration: 1m}").unwrap();
        assert_eq!(cycled, Fault::Pause(Pause::new(Some(MS(10_000)), Some(MS(2000))).unwrap()));
        let e = parse("{fault: pause, every: 10s, duration: 1m}").unwrap_err();
        assert!(e.contains("`every` needs `for`"), "{e}");
        let json = serde_json::to_string(&cycled).unwrap();
        assert_eq!(json, r#"{"fault":"pause","every":"10s","for":"2s"}"#);
    }
}
