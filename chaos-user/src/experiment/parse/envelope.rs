//! A `ChaosExperiment` object, as `kubectl apply` takes it: its `spec` is
//! an experiment document and `metadata.name` its name. `chaos run` and
//! `chaos validate` read this form too, so one file serves a machine and a
//! cluster (chaos-kube/src/resources/experiment.rs declares the resource).

use super::{Conv, yaml};
use crate::experiment::yaml::Node;

/// The resource's `apiVersion` and `kind` (chaos-kube's `GROUP`/`VERSION`).
pub const API_VERSION: &str = "chaos.dev/v1alpha1";
pub const KIND: &str = "ChaosExperiment";

impl Conv {
    /// `root` itself when it is an experiment document; the document it
    /// wraps, with `name` from `metadata.name`, when it is a
    /// `ChaosExperiment`; `None` after reporting what is wrong with it.
    pub(super) fn unwrap_envelope(&mut self, root: Node) -> Option<Node> {
        let Some(entries) = root.as_map() else { return Some(root) };
        if !entries.iter().any(|(k, _)| matches!(k.text(), Some("apiVersion" | "kind"))) {
            return Some(root);
        }
        let what = format!("a {KIND}");
        let f =
            self.fields(&root, root.span, &what, &["apiVersion", "kind", "metadata", "spec", "status"])?;
        let mut ok = true;
        for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
            let Some(node) = self.required(&f, key) else {
                ok = false;
                continue;
            };
            if node.text() != Some(want) {
                self.err(
                    node.span,
                    format!("`{key}` is {}, not {want}", node.text().map_or_else(|| node.describe(), |t| format!("`{t}`"))),
                    Some(format!("write `{key}: {want}`, or leave `apiVersion` and `kind` out for a plain experiment file")),
                );
                ok = false;
            }
        }
        // Other metadata (namespace, labels, annotations) is the cluster's.
        let name = self.required(&f, "metadata").and_then(|m| {
            let found = m.as_map().and_then(|e| e.iter().find(|(k, _)| k.text() == Some("name")));
            if found.is_none() {
                self.err(
                    m.span,
                    format!("missing field `name` in the metadata of {what}"),
                    Some("add `name: my-experiment`".into()),
                );
            }
            found.cloned()
        });
        let spec = self.required(&f, "spec");
        let spec = spec.and_then(|s| {
            let entries = s.as_map();
            if entries.is_none() {
                self.err(
                    s.span,
                    format!(
                        "wrong type: the spec of {what} must be a mapping of fields, found {}",
                        s.describe()
                    ),
                    None,
                );
            }
            entries.map(|e| (s.span, e))
        });
        let (name, (at, spec)) = (name?, spec?);
        if let Some((k, _)) = spec.iter().find(|(k, _)| k.text() == Some("name")) {
            self.err(
                k.span,
                format!("`name` in the spec of {what}: its name is `metadata.name`"),
                Some("remove `name` from `spec`".into()),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        let mut document = vec![name];
        document.extend(spec.iter().cloned());
        Some(Node { span: at, kind: yaml::Kind::Map(document) })
    }
}
