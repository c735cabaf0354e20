//! Which pods an attack of a step goes to, and the `ChaosAttack`s that
//! carry it to their nodes' agents: pure functions of the pods and nodes
//! the API server listed, unit-tested on recorded objects.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use chaos::{experiment::AttackSpec, runtime::PodQuery};
use k8s_openapi::{
    api::core::v1::{Node, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::resources::{ChaosAttack, ChaosAttackSpec, ChaosExperiment, NODE_LABEL, PodRef};

/// The label every `ChaosAttack` of an experiment carries: its uid (a
/// name can be longer than a label value may be, and a name is reused).
pub const EXPERIMENT_LABEL: &str = "chaos.dev/experiment-uid";

/// A pod an attack can go to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub node: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} on {}", self.namespace, self.name, self.node)
    }
}

/// The nodes whose labels include every pair of `selector`.
pub fn nodes_matching(nodes: &[Node], selector: &[(String, String)]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| selector.iter().all(|(k, v)| n.labels().get(k) == Some(v)))
        .map(ResourceExt::name_any)
        .collect()
}

/// The pods `query` names that an attack can go to: scheduled on a node
/// (of `nodes`, when a node selector gave some), running and ready, not
/// being deleted. A pod that is not ready is left alone, as the CRI
/// resolver does on one machine: it is starting or stopping, and an
/// attack on it would measure that rather than the fault.
pub fn candidates(pods: &[Pod], query: &PodQuery, nodes: Option<&BTreeSet<String>>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| matches(query, p))
        .filter(|p| ready(p))
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            if nodes.is_some_and(|n| !n.contains(&node)) {
                return None;
            }
            Some(Candidate {
                node,
                namespace: p.namespace().unwrap_or_default(),
                name: p.name_any(),
                uid: p.uid()?,
            })
        })
        .collect();
    out.sort();
    out
}

fn matches(query: &PodQuery, pod: &Pod) -> bool {
    match query {
        PodQuery::Name { namespace, name } => {
            pod.namespace().as_deref() == Some(namespace.as_str()) && &pod.name_any() == name
        }
        PodQuery::Uid(uid) => pod.uid().as_deref() == Some(uid.as_str()),
        PodQuery::Selector(pairs) => pairs.iter().all(|(k, v)| pod.labels().get(k) == Some(v)),
    }
}

fn ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    status.phase.as_deref() == Some("Running")
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// One `ChaosAttack` per node for `attack` on `picked`, owned by `exp`,
/// ending at `deadline`.
pub fn attacks_for(
    exp: &ChaosExperiment,
    attack: &AttackSpec,
    container: Option<&str>,
    picked: &[Candidate],
    deadline: SystemTime,
) -> Vec<ChaosAttack> {
    let mut by_node: BTreeMap<&str, Vec<PodRef>> = BTreeMap::new();
    for c in picked {
        by_node.entry(&c.node).or_default().push(PodRef {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            uid: c.uid.clone(),
        });
    }
    let deadline = Time(Timestamp::try_from(deadline).unwrap_or(Timestamp::MAX));
    let owner = exp.controller_owner_ref(&());
    by_node
        .into_iter()
        .map(|(node, pods)| {
            let labels = BTreeMap::from([
                (NODE_LABEL.to_owned(), node.to_owned()),
                (EXPERIMENT_LABEL.to_owned(), exp.uid().unwrap_or_default()),
            ]);
            let mut a = ChaosAttack::new(
                &attack_name(&exp.name_any(), &attack.id, node),
                ChaosAttackSpec {
                    node_name: node.to_owned(),
                    pods,
                    container: container.map(str::to_owned),
                    fault: attack.fields.clone(),
                    deadline: deadline.clone(),
                },
            );
            a.metadata = ObjectMeta {
                namespace: exp.namespace(),
                labels: Some(labels),
                owner_references: owner.clone().map(|o: OwnerReference| vec![o]),
                ..a.metadata
            };
            a
        })
        .collect()
}

/// `<experiment>-<attack>-<node>`, as a Kubernetes object name (a DNS
/// subdomain: lowercase alphanumerics, `-` and `.`, at most 253
/// characters); a longer one is cut and ends with a hash of the whole, so
/// two long names stay apart.
pub fn attack_name(experiment: &str, attack: &str, node: &str) -> String {
    const MAX: usize = 253;
    let full = format!("{experiment}-{attack}-{node}").to_ascii_lowercase();
    let mut name: String = full
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    if name.len() > MAX {
        // FNV-1a: a stable short digest; nothing here needs more.
        let hash = full
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        name.truncate(MAX - 17);
        name.push_str(&format!("-{hash:016x}"));
    }
    // It must begin and end with an alphanumeric.
    let trimmed = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chaos::experiment::Pick;
    use serde_json::{Value, json};

    use super::*;

    fn pod(ns: &str, name: &str, node: &str, labels: Value, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "labels": labels},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn node(name: &str, labels: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn recorded() -> Vec<Pod> {
        let mut pending = pod("shop", "web-3", "n1", json!({"app": "web"}), false);
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut leaving = pod("shop", "web-4", "n2", json!({"app": "web"}), true);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut unscheduled = pod("shop", "web-5", "n1", json!({"app": "web"}), true);
        unscheduled.spec.as_mut().unwrap().node_name = None;
        vec![
            pod("shop", "web-0", "n1", json!({"app": "web", "tier": "front"}), true),
            pod("shop", "web-1", "n2", json!({"app": "web"}), true),
            pod("shop", "web-2", "n2", json!({"app": "web"}), false),
            pod("shop", "db-0", "n1", json!({"app": "db"}), true),
            pending,
            leaving,
            unscheduled,
        ]
    }

    #[test]
    fn candidates_are_ready_scheduled_running_and_matching() {
        let pods = recorded();
        let web = PodQuery::Selector(vec![("app".into(), "web".into())]);
        let names = |c: Vec<Candidate>| c.into_iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(names(candidates(&pods, &web, None)), ["shop/web-0 on n1", "shop/web-1 on n2"]);
        let n2 = BTreeSet::from(["n2".to_owned()]);
        assert_eq!(names(candidates(&pods, &web, Some(&n2))), ["shop/web-1 on n2"]);
        let front = PodQuery::Selector(vec![("app".into(), "web".into()), ("tier".into(), "front".into())]);
        assert_eq!(names(candidates(&pods, &front, None)), ["shop/web-0 on n1"]);
        let by_name = PodQuery::Name { namespace: "shop".into(), name: "db-0".into() };
        assert_eq!(names(candidates(&pods, &by_name, None)), ["shop/db-0 on n1"]);
        assert_eq!(names(candidates(&pods, &PodQuery::Uid("uid-web-1".into()), None)), ["shop/web-1 on n2"]);
        assert!(candidates(&pods, &PodQuery::Uid("uid-web-2".into()), None).is_empty(), "not ready");
    }

    #[test]
    fn nodes_match_every_label() {
        let nodes = [
            node("n1", json!({"zone": "a", "disk": "ssd"})),
            node("n2", json!({"zone": "a"})),
            node("n3", json!({"zone": "b", "disk": "ssd"})),
        ];
        let sel = |p: &[(&str, &str)]| {
            p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(
            nodes_matching(&nodes, &sel(&[("zone", "a")])),
            BTreeSet::from(["n1".into(), "n2".into()])
        );
        assert_eq!(
            nodes_matching(&nodes, &sel(&[("zone", "a"), ("disk", "ssd")])),
            BTreeSet::from(["n1".into()])
        );
        assert!(nodes_matching(&nodes, &sel(&[("zone", "c")])).is_empty());
    }

    fn experiment() -> ChaosExperiment {
        let mut e: ChaosExperiment = serde_json::from_value(json!({
            "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "e-uid"},
            "spec": {"targets": {}, "hypothesis": {}, "method": []},
        }))
        .unwrap();
        e.metadata.uid = Some("e-uid".into());
        e
    }

    fn spec(fault: Value) -> AttackSpec {
        let fields = fault.as_object().unwrap().clone();
        AttackSpec {
            id: "loss".into(),
            fault: chaos::experiment::step_fault(&fields).unwrap(),
            fields,
            target: "web".into(),
            duration: Duration::from_secs(30),
            span: Default::default(),
        }
    }

    #[test]
    fn one_attack_per_node_owned_labelled_and_with_the_deadline() {
        let exp = experiment();
        let picked = candidates(&recorded(), &PodQuery::Selector(vec![("app".into(), "web".into())]), None);
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let attacks = attacks_for(
            &exp,
            &spec(json!({"fault": "net-loss", "percent": 5})),
            Some("app"),
            &picked,
            deadline,
        );
        assert_eq!(attacks.len(), 2);
        let a = &attacks[0];
        assert_eq!(a.name_any(), "checkout-loss-n1");
        assert_eq!(a.namespace().as_deref(), Some("shop"));
        assert_eq!(a.labels()[NODE_LABEL], "n1");
        assert_eq!(a.labels()[EXPERIMENT_LABEL], "e-uid");
        assert_eq!(a.spec.node_name, "n1");
        assert_eq!(a.spec.container.as_deref(), Some("app"));
        assert_eq!(
            a.spec.pods,
            [PodRef { namespace: "shop".into(), name: "web-0".into(), uid: "uid-web-0".into() }]
        );
        assert_eq!(a.spec.deadline.0.as_second(), 1_800_000_000);
        let owner = &a.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ChaosExperiment", "checkout", "e-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(attacks[1].spec.node_name, "n2");
    }

    /// What the runner writes in `spec.fault` (the step's fields as
    /// written) reads back, through the agent's parser, as the fault the
    /// runner validated, for every fault of the experiment library.
    #[test]
    fn faults_read_back_as_validated() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let exp = chaos::experiment::load(&path, &[]).unwrap();
            for a in exp.attacks() {
                let fields = &a.fields;
                let back = chaos::experiment::step_fault(fields)
                    .unwrap_or_else(|e| panic!("{}: {}: {e}: {fields:?}", path.display(), a.id));
                assert_eq!(back, a.fault, "{}: {}", path.display(), a.id);
                checked += 1;
            }
        }
        assert!(checked >= 10, "{checked} faults checked");
    }

    #[test]
    fn names_are_dns_subdomains() {
        assert_eq!(attack_name("Checkout", "net_loss-1.2", "node-a"), "checkout-net-loss-1.2-node-a");
        let long = attack_name(&"e".repeat(200), "a", &"n".repeat(100));
        assert_eq!(long.len(), 253);
        assert_ne!(long, attack_name(&"e".repeat(200), "a", &"n".repeat(101)));
        assert!(long.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
    }

    #[test]
    fn picks_are_samples_of_the_candidates() {
        let all = candidates(&recorded(), &PodQuery::Selector(vec![("app".into(), "web".into())]), None);
        let mut rng = fastrand::Rng::with_seed(1);
        let one = Pick::Count(1).sample(all.clone(), &mut rng);
        assert_eq!(one.len(), 1);
        assert!(all.contains(&one[0]));
        assert_eq!(Pick::Percent(100.0).sample(all.clone(), &mut rng), all);
    }
}
