//! One attack's fault given alone, as the Kubernetes agent reads
//! `ChaosAttack.spec.fault`: the same parser as a file's steps, so a
//! cluster and a file accept and refuse the same things.

use serde_json::{Map, Value};

use crate::{experiment::diag::Diagnostics, faults::Fault};

/// Fields of a step that are not the fault's: whoever gives a fault alone
/// says the target and the time otherwise.
const NOT_THE_FAULT: &[&str] = &["name", "target", "duration", "start-after", "parallel"];

/// The fault of `fields` (`{"fault": "net-loss", "percent": 5}`). Each
/// problem comes back as one line, `message (hint)`, without the file
/// positions that would point into a document the caller never wrote.
pub fn step_fault(fields: &Map<String, Value>) -> Result<Fault, String> {
    if let Some(k) = fields.keys().find(|k| NOT_THE_FAULT.contains(&k.as_str())) {
        return Err(format!("`{k}` is not a field of a fault: only `fault` and the kind's own fields are"));
    }
    let mut step = fields.clone();
    // Any valid duration: the step needs one, the caller has its own.
    step.insert("duration".into(), Value::from("1s"));
    // JSON is YAML's flow style: one line, every string quoted, so nothing
    // in a value can end the step early.
    let step = serde_json::to_string(&step).map_err(|e| e.to_string())?;
    match fault_of(&step) {
        Ok(f) => Ok(f),
        Err(d) => Err(d
            .list
            .iter()
            .map(|p| match &p.hint {
                Some(h) => format!("{} ({})", p.message, h.replace('\n', " ")),
                None => p.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// The fault of one step, `step` written as a flow mapping on one line
/// (with its `duration`): the only way in is a whole experiment, so the
/// step goes into the smallest one.
pub(crate) fn fault_of(step: &str) -> Result<Fault, Diagnostics> {
    let text = format!(
        "name: fault\ntargets: {{t: {{cgroup: /t}}}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{address: 'h:1'}}\nmethod:\n  - {step}\n"
    );
    super::parse("step.yaml", &text, &[]).map(|e| e.method[0].attacks[0].fault.clone())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_fault_alone_is_read_as_a_step_is() {
        let f = step_fault(&fields(json!({"fault": "net-loss", "percent": 5, "protocol": "tcp"}))).unwrap();
        assert_eq!(
            f,
            crate::faults::fault_of_step("{fault: net-loss, percent: 5, protocol: tcp, duration: 1m}")
                .unwrap()
        );
    }

    #[test]
    fn problems_are_one_line_each_without_positions() {
        let e = step_fault(&fields(json!({"fault": "net-lose"}))).unwrap_err();
        assert!(e.contains("net-lose") && !e.contains('\n'), "{e}");
        let e = step_fault(&fields(json!({"fault": "net-loss"}))).unwrap_err();
        assert!(e.contains("percent"), "{e}");
        let e =
            step_fault(&fields(json!({"fault": "net-loss", "percent": 5, "duration": "1h"}))).unwrap_err();
        assert!(e.contains("`duration` is not a field of a fault"), "{e}");
        // A value cannot break out of its step.
        let e = step_fault(&fields(json!({"fault": "kill", "process-name": "x}\nmethod: [{fault: kill"})))
            .unwrap_err();
        assert!(e.contains("process"), "{e}");
    }
}
