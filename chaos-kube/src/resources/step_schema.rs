//! The OpenAPI schema of an experiment step, from the same declarations
//! that `chaos attack` and `chaos validate` read: each fault kind's clap
//! flags (chaos-user/src/cli/schema.rs). A kind gained or a flag renamed
//! changes the CRD with it (and the unit test on deploy/crds.yaml says the
//! checked-in file must be generated again).
//!
//! A structural schema cannot say "field `delay` belongs to `net-delay`":
//! a step is one object with `fault` (an enum of the kinds) and every
//! kind's fields as optional properties. Which fields a kind requires or
//! refuses is the experiment parser's to say; an unknown field is refused
//! by the API server itself (kubectl's strict field validation), since no
//! step object preserves unknown fields.

use std::collections::BTreeMap;

use chaos::cli::schema::{self, Kind};
use clap::{Arg, ArgAction};
use schemars::Schema;
use serde_json::{Map, Value, json};

/// What a step's value is, as far as a structural schema can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A switch (`--rst` as `rst: true`).
    Flag,
    /// A value: a number (`percent: 0.5`), a string with units
    /// (`delay: 50ms`), a `${variable}`, or, for a repeatable flag, a list
    /// (`interfaces: [eth0]`; one value is a list of one, and one kind's
    /// list is another's single value: `cidr`). Typed as anything: a float
    /// cannot be `x-kubernetes-int-or-string`, and `${loss}` is a string
    /// where a number is meant. The parser checks the value.
    Value,
}

fn shape(arg: &Arg) -> Shape {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => Shape::Flag,
        _ => Shape::Value,
    }
}

/// One field: the kinds that take it, its shape, and the help text of the
/// first kind declaring it.
struct Field {
    kinds: Vec<String>,
    shape: Shape,
    help: String,
}

/// Every kind's fields by name. Two kinds declaring one name with
/// different shapes would make the property mean two things; that is an
/// error (unit-tested on the real declarations).
fn fields(kinds: &[Kind]) -> Result<BTreeMap<String, Field>, String> {
    let mut out: BTreeMap<String, Field> = BTreeMap::new();
    for kind in kinds {
        for (name, arg) in kind.fields() {
            let (shape, help) = (shape(arg), arg.get_help().map(ToString::to_string).unwrap_or_default());
            match out.get_mut(name) {
                Some(f) if f.shape != shape => {
                    return Err(format!(
                        "field `{name}` is a {:?} in {} but a {shape:?} in {}",
                        f.shape, f.kinds[0], kind.name
                    ));
                }
                Some(f) => f.kinds.push(kind.name.clone()),
                None => {
                    out.insert(name.to_owned(), Field { kinds: vec![kind.name.clone()], shape, help });
                }
            }
        }
    }
    Ok(out)
}

fn field_schema(f: &Field) -> Value {
    let description = format!("({}) {}", f.kinds.join(", "), f.help);
    match f.shape {
        Shape::Flag => json!({"type": "boolean", "description": description}),
        Shape::Value => json!({"x-kubernetes-preserve-unknown-fields": true, "description": description}),
    }
}

/// The properties of one attack: `fault`, and every kind's fields.
fn attack_properties() -> Map<String, Value> {
    let kinds = schema::kinds();
    let fields = match fields(kinds) {
        Ok(f) => f,
        // The declarations are ours and unit-tested: not user input.
        Err(e) => unreachable!("fault declarations conflict: {e}"),
    };
    let mut props = Map::new();
    props.insert(
        "fault".into(),
        json!({
            "type": "string",
            "description": "The fault kind, as `chaos attack <kind>` names it.",
            "enum": kinds.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        }),
    );
    for (name, f) in &fields {
        props.insert(name.clone(), field_schema(f));
    }
    props
}

fn scalar(description: &str) -> Value {
    json!({"x-kubernetes-preserve-unknown-fields": true, "description": description})
}

/// One attack of an experiment's method (also a step of a parallel step).
fn attack_step() -> Value {
    let mut props = attack_properties();
    props.insert(
        "name".into(),
        json!({"type": "string", "description": "The attack's id in events and reports."}),
    );
    props.insert(
        "target".into(),
        json!({"type": "string", "description": "A key of `targets` (default: the only one)."}),
    );
    props.insert("duration".into(), scalar("How long the fault lasts (`30s`, `2m`)."));
    Value::Object(Map::from_iter([
        ("type".into(), json!("object")),
        (
            "description".into(),
            json!("One attack: a fault kind and its fields, as `chaos attack <kind>` takes them."),
        ),
        ("properties".into(), Value::Object(props)),
    ]))
}

/// A step of `method`: one attack, or `parallel:` attacks started together.
pub fn method_step(_: &mut schemars::SchemaGenerator) -> Schema {
    let mut step = attack_step();
    let props = step["properties"].as_object_mut().expect("built above");
    props.insert("start-after".into(), scalar("Wait this long before the step starts."));
    props.insert(
        "parallel".into(),
        json!({"type": "array", "description": "Attacks that start together.", "items": attack_step()}),
    );
    step["description"] = json!(
        "A step of the method: one attack (`fault` and its fields), or `parallel:` attacks that start together."
    );
    to_schema(json!({"type": "array", "items": step}))
}

/// `ChaosAttack.spec.fault`: one attack without its target and duration
/// (the attack's pods and deadline say those).
pub fn attack_fault(_: &mut schemars::SchemaGenerator) -> Schema {
    let mut step = json!({"type": "object", "properties": attack_properties()});
    step["required"] = json!(["fault"]);
    step["description"] = json!("The fault: a kind and its fields, as in an experiment step.");
    to_schema(step)
}

/// Any JSON value (probes, variables): the parser checks them.
pub fn anything(_: &mut schemars::SchemaGenerator) -> Schema {
    to_schema(json!({"x-kubernetes-preserve-unknown-fields": true}))
}

/// Names to values of any type (variables' defaults: `5`, `0.5`, `50ms`).
pub fn values(_: &mut schemars::SchemaGenerator) -> Schema {
    to_schema(json!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": true},
    }))
}

/// A list of objects whose fields the parser checks (probes).
pub fn objects(_: &mut schemars::SchemaGenerator) -> Schema {
    to_schema(json!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    }))
}

fn to_schema(v: Value) -> Schema {
    match Schema::try_from(v) {
        Ok(s) => s,
        Err(_) => unreachable!("an object is a schema"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real declarations: no field means two things.
    #[test]
    fn no_two_kinds_declare_one_field_differently() {
        let fields = fields(schema::kinds()).unwrap();
        assert!(fields.contains_key("percent"), "{:?}", fields.keys().collect::<Vec<_>>());
        assert_eq!(fields["interfaces"].shape, Shape::Value);
        assert!(fields["cidr"].kinds.len() > 1, "{:?}", fields["cidr"].kinds);
    }

    #[test]
    fn every_kind_is_in_the_fault_enum() {
        let props = attack_properties();
        let kinds: Vec<&str> =
            props["fault"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for k in ["net-loss", "net-delay", "io-error", "clock-skew", "dns-error", "kill", "pause"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
    }
}
