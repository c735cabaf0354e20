//! The CRDs as the API server would take them, and the objects it would
//! store: checked offline, without a cluster (none runs on these
//! machines).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The spec's schema in `crd`.
fn spec_schema(crd: &CustomResourceDefinition) -> Value {
    let v = serde_json::to_value(crd).unwrap();
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// The API server's rules for a structural schema (Kubernetes docs,
/// "Specifying a structural schema"): a type on every node but those
/// marked int-or-string or preserve-unknown-fields, and no `$ref` or
/// junctors, which our schemas never need. Hand-written: the JSON Schema
/// validators know nothing of the `x-kubernetes-` extensions.
fn structural(schema: &Value, at: &str, errors: &mut Vec<String>) {
    for junctor in ["$ref", "anyOf", "oneOf", "allOf", "not"] {
        if schema.get(junctor).is_some() {
            errors.push(format!("{at}: {junctor}"));
        }
    }
    let typed = schema["type"].as_str().is_some_and(|t| !t.is_empty());
    if !typed && !preserves(schema) && schema["x-kubernetes-int-or-string"] != true {
        errors.push(format!("{at}: no type"));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            structural(s, &format!("{at}.{k}"), errors);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            structural(&schema[key], &format!("{at}[{key}]"), errors);
        }
    }
}

/// What the API server would refuse (strict field validation) or prune in
/// `value`, and values of the wrong type.
fn misfits(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if preserves(schema) {
        return;
    }
    let fits = match (schema["type"].as_str(), value) {
        (None, _) => schema["x-kubernetes-int-or-string"] == true && (value.is_string() || value.is_i64()),
        (_, Value::Null) => schema["nullable"] == true,
        (Some("string"), v) => v.is_string(),
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("array"), v) => v.is_array(),
        (Some("object"), v) => v.is_object(),
        (Some(_), _) => false,
    };
    if !fits {
        out.push(format!("{at}: {value} is not a {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (schema["properties"].get(k), &schema["additionalProperties"]) {
                    (Some(s), _) => misfits(v, s, &format!("{at}.{k}"), out),
                    (None, s) if s.is_object() => misfits(v, s, &format!("{at}.{k}"), out),
                    _ => out.push(format!("{at}.{k}: not declared")),
                }
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(required.as_str().unwrap_or_default()) {
                    out.push(format!("{at}: no {required}"));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                misfits(v, &schema["items"], &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn spec_misfits(object: &Value, crd: &CustomResourceDefinition) -> Vec<String> {
    let mut out = Vec::new();
    misfits(&object["spec"], &spec_schema(crd), "spec", &mut out);
    out
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

#[test]
fn the_checked_in_crds_are_generated_from_the_types() {
    // The plain manifests' copy and the Helm chart's (Helm installs the
    // files of a chart's crds/ as they are, never templated).
    for path in ["deploy/crds.yaml", "deploy/chart/crds/chaos.dev.yaml"] {
        assert!(
            read(path) == crds_yaml().unwrap(),
            "{path} differs from the types: run `cargo run -p chaos-kube -- crds > {path}`"
        );
    }
}

#[test]
fn the_crd_schemas_are_structural() {
    for crd in crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let mut errors = Vec::new();
        structural(&v["spec"]["versions"][0]["schema"]["openAPIV3Schema"], &crd.spec.names.kind, &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

/// The examples are one document for both: `chaos run` reads them, the API
/// server would store them whole, the resource type reads them back, and
/// the runner takes them (nothing of one machine in them).
#[test]
fn the_example_experiments_are_taken_by_chaos_by_the_api_and_by_the_runner() {
    for (path, name, target, selector) in [
        ("deploy/examples/experiment.yaml", "checkout-survives-a-lossy-cart", "cart", "app=cart"),
        ("deploy/examples/first-experiment.yaml", "web-survives-a-lossy-pod", "one-web-pod", "app=web"),
    ] {
        let text = read(path);
        let e = chaos::experiment::parse(path, &text, &[]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(e.name, name);
        let object = yaml(&text);
        let misfits = spec_misfits(&object, &ChaosExperiment::crd());
        assert!(misfits.is_empty(), "{path}: {misfits:#?}");
        let typed: ChaosExperiment = serde_json::from_value(object.clone()).unwrap();
        assert_eq!(typed.spec.targets[target].pod_selector.as_deref(), Some(selector));
        // Nothing is lost on the way through the type: the controller hands
        // the spec to the parser as it was applied.
        assert_eq!(serde_json::to_value(&typed.spec).unwrap(), object["spec"], "{path}");
        let namespace = object["metadata"]["namespace"].as_str().unwrap();
        let refused = crate::runner::reconcile::refusals(&e, namespace);
        assert!(refused.is_empty(), "{path}: {refused:#?}");
    }
}

#[test]
fn the_example_attack_fits_its_crd() {
    let object = yaml(&read("deploy/examples/attack.yaml"));
    let misfits = spec_misfits(&object, &ChaosAttack::crd());
    assert!(misfits.is_empty(), "{misfits:#?}");
    let typed: ChaosAttack = serde_json::from_value(object).unwrap();
    assert_eq!(typed.metadata.labels.unwrap()[NODE_LABEL], typed.spec.node_name);
}

/// Every experiment shipped in experiments/ can be applied to a cluster
/// wrapped as a ChaosExperiment: nothing in it is refused or pruned.
#[test]
fn every_shipped_experiment_fits_the_crd() {
    let crd = ChaosExperiment::crd();
    let mut n = 0;
    for entry in std::fs::read_dir(repo("experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut document = yaml(&std::fs::read_to_string(&path).unwrap());
        let name = document.as_object_mut().unwrap().remove("name").unwrap();
        let object = serde_json::json!({
            "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": name}, "spec": document,
        });
        let misfits = spec_misfits(&object, &crd);
        assert!(misfits.is_empty(), "{}: {misfits:#?}", path.display());
        n += 1;
    }
    assert!(n >= 10, "only {n} experiments found");
}

/// The checker itself: it finds what the API server would refuse.
#[test]
fn misfits_are_found() {
    let crd = ChaosAttack::crd();
    let mut object = yaml(&read("deploy/examples/attack.yaml"));
    object["spec"]["fault"]["fault"] = "net-lose".into();
    object["spec"]["fault"]["precent"] = 5.into();
    object["spec"]["pods"][0]["uid"] = 7.into();
    object["spec"].as_object_mut().unwrap().remove("deadline");
    let found = spec_misfits(&object, &crd);
    for want in [
        "spec.fault.fault: \"net-lose\"",
        "spec.fault.precent: not declared",
        "spec.pods[0].uid: 7",
        "spec: no \"deadline\"",
    ] {
        assert!(found.iter().any(|f| f.starts_with(want)), "{want} not in {found:#?}");
    }
}

/// `chaos run` recognizes the envelope by the same group, version and kind
/// as the resource declares.
#[test]
fn chaos_reads_the_envelope_this_crate_declares() {
    use kube::Resource;
    assert_eq!(chaos::experiment::parse::API_VERSION, ChaosExperiment::api_version(&()));
    assert_eq!(chaos::experiment::parse::KIND, ChaosExperiment::kind(&()));
    assert_eq!(format!("{GROUP}/{VERSION}"), ChaosAttack::api_version(&()));
}
