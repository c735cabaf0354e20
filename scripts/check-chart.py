#!/usr/bin/env python3
"""Check deploy/chart offline, as `helm lint` and `helm template` would.

Also that the chart and deploy/'s plain manifests are the same objects.

Run by ./x test (lint section) with the Python of the venv setup.sh makes
(/var/lib/chaos-dev/kube-tools), which holds:
- helm-python-sdk: Helm's own Go SDK (chart loading, the template engine,
  the values schema, the linter) built as a C library and bound with
  ctypes. No registry here serves the helm binary; this is the same code;
- kubernetes-validate: the Kubernetes API's JSON schemas, per release;
- cloudcoil-models-prometheus-operator: the ServiceMonitor's schema, as
  models generated from the Prometheus Operator's CRDs.

It checks, for each Kubernetes release named:
1. `helm lint --strict` finds nothing above INFO, with the defaults and
   with every setting changed;
2. the defaults render deploy/agent.yaml and deploy/controller.yaml object
   for object (but the Namespace, which the chart leaves to the installer,
   and the release labels the chart adds); with the ServiceMonitor on,
   deploy/monitoring.yaml too; the CRDs are deploy/crds.yaml byte for byte;
3. every rendered object is valid against that release's schemas
   (strict: unknown fields are errors), the ServiceMonitor against the
   operator's, and it reaches the agents: its selector matches the
   Service, whose selector matches the agents' pods, through a port name
   both sides know;
4. each setting changes what it says it changes, and the values schema
   refuses a misspelt key and a wrong type, naming them.

Exit status 0 when all hold; 1 with each failure on stderr otherwise.
"""

import argparse
import copy
import difflib
import pathlib
import sys

import helm_python
import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "chart"
RELEASE = "chaos"
NAMESPACE = "chaos-system"
# Labels the chart adds to every object's metadata (templates/_helpers.tpl);
# the plain manifests have none of them.
RELEASE_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAILED: {message}", file=sys.stderr)


def render(values=None):
    """The chart's objects, as `helm template chaos deploy/chart -n
    chaos-system` prints them, by (kind, name)."""
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = {}
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def manifests(*names):
    objects = {}
    for name in names:
        for doc in yaml.safe_load_all((ROOT / "deploy" / name).read_text()):
            if doc and doc["kind"] != "Namespace":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def diff(a, b, a_name, b_name):
    """A unified diff of two objects as YAML."""
    return "\n".join(difflib.unified_diff(
        yaml.safe_dump(a, sort_keys=True).splitlines(),
        yaml.safe_dump(b, sort_keys=True).splitlines(),
        a_name,
        b_name,
        lineterm="",
    ))


def without_release_labels(obj):
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].get("labels", {})
    for key in RELEASE_LABELS:
        labels.pop(key, None)
    if not labels:
        obj["metadata"].pop("labels", None)
    return obj


def same_objects(what, rendered, plain):
    for key in sorted(set(rendered) | set(plain)):
        if key not in plain:
            fail(f"{what}: the chart renders {key[0]} {key[1]}, which deploy/ does not have")
        elif key not in rendered:
            fail(f"{what}: deploy/ has {key[0]} {key[1]}, which the chart does not render")
        else:
            a, b = without_release_labels(rendered[key]), plain[key]
            if a != b:
                fail(f"{what}: {key[0]} {key[1]} differs:\n" + diff(b, a, "deploy/", "chart"))


def lint(what, version, values=None):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{version}")
    for m in report.get("messages", []):
        # Severity 1 is INFO (e.g. "icon is recommended"); 2 WARNING, 3 ERROR.
        if m["severity"] >= 2:
            fail(f"helm lint --strict ({what}, {version}): {m['path']}: {m['error']}")
    for e in report.get("errors", []):
        fail(f"helm lint --strict ({what}, {version}): {e}")


def validate(what, version, objects):
    for (kind, name), obj in objects.items():
        if kind == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            fail(f"{what}: {kind} {name} is not valid for Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(f"{what}: {e.message}")


def service_monitor(what, objects):
    """The ServiceMonitor's schema (strict: a field the operator does not
    know is dropped by the model, so a round trip that loses one is an
    error) and its path to the agents' metrics port."""
    sm = objects[("ServiceMonitor", "chaos-agent")]
    model = ServiceMonitor.model_validate(sm)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if back != sm:
        fail(f"{what}: the ServiceMonitor has fields the operator does not know:\n"
             + diff(sm, back, "rendered", "as the operator reads it"))
    svc = objects[("Service", "chaos-agent-metrics")]
    ds = objects[("DaemonSet", "chaos-agent")]

    def matches(selector, labels):
        return all(labels.get(k) == v for k, v in selector.items())

    if not matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"].get("labels", {})):
        fail(f"{what}: the ServiceMonitor's selector does not match the Service's labels")
    if sm["metadata"]["namespace"] != svc["metadata"]["namespace"]:
        fail(f"{what}: the ServiceMonitor looks for the Service in another namespace")
    if not matches(svc["spec"]["selector"], ds["spec"]["template"]["metadata"]["labels"]):
        fail(f"{what}: the Service's selector does not match the agents' pods")
    service_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    container_ports = {p["name"]: p for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    for endpoint in sm["spec"]["endpoints"]:
        port = service_ports.get(endpoint["port"])
        if port is None:
            fail(f"{what}: the ServiceMonitor scrapes port {endpoint['port']!r}, which the Service does not name")
        elif port["targetPort"] not in container_ports:
            fail(f"{what}: the Service's port {port['name']} targets {port['targetPort']!r}, no port of the agent")
        elif container_ports[port["targetPort"]]["containerPort"] != port["port"]:
            fail(f"{what}: the Service's port and the agent's differ")


def settings():
    """Each setting changes what it says; the schema refuses bad values."""
    values = {
        "image": {"repository": "registry.example/chaos", "tag": "9.9.9", "pullPolicy": "Always",
                  "pullSecrets": [{"name": "regcred"}]},
        "agent": {"criSocket": "/var/run/crio/crio.sock", "nodeSelector": {"chaos": "yes"},
                  "priorityClassName": "system-node-critical", "logLevel": "debug", "sysResource": True},
        "runner": {"replicas": 3, "watchNamespace": "shop"},
        "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    }
    objs = render(values)
    ds = objs[("DaemonSet", "chaos-agent")]["spec"]["template"]
    agent = ds["spec"]["containers"][0]
    runner_pod = objs[("Deployment", "chaos-runner")]["spec"]["template"]
    runner = runner_pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    checks = [
        ("image", agent["image"] == runner["image"] == "registry.example/chaos:9.9.9"),
        ("image.pullPolicy", agent["imagePullPolicy"] == runner["imagePullPolicy"] == "Always"),
        ("image.pullSecrets", ds["spec"]["imagePullSecrets"] == runner_pod["spec"]["imagePullSecrets"]
         == [{"name": "regcred"}]),
        ("agent.criSocket: the host path", {"name": "cri", "hostPath": {"path": "/var/run/crio/crio.sock",
                                                                        "type": "Socket"}} in ds["spec"]["volumes"]),
        ("agent.criSocket: the mount", {"name": "cri", "mountPath": "/var/run/crio/crio.sock"}
         in agent["volumeMounts"]),
        ("agent.criSocket: the endpoint", env.get("CONTAINER_RUNTIME_ENDPOINT") == "unix:///var/run/crio/crio.sock"),
        ("agent.nodeSelector", ds["spec"]["nodeSelector"] == {"chaos": "yes"}),
        ("agent.priorityClassName", ds["spec"]["priorityClassName"] == "system-node-critical"),
        ("agent.logLevel", env.get("CHAOS_LOG") == "debug"),
        ("agent.sysResource", agent["securityContext"]["capabilities"]["add"][-1] == "SYS_RESOURCE"),
        ("runner.replicas", objs[("Deployment", "chaos-runner")]["spec"]["replicas"] == 3),
        ("runner.watchNamespace", runner["args"] == ["controller", "--namespace", "shop"]),
        ("metrics.port: the agent", agent["args"] == ["agent", "--metrics-addr", "0.0.0.0:9100"]
         and agent["ports"] == [{"name": "metrics", "containerPort": 9100}]),
        ("metrics.port: the annotation", ds["metadata"]["annotations"]["prometheus.io/port"] == "9100"),
        ("metrics.serviceMonitor.labels", objs[("ServiceMonitor", "chaos-agent")]["metadata"]["labels"]
         .get("release") == "prom"),
    ]
    for name, ok in checks:
        if not ok:
            fail(f"the setting {name} does not take effect")
    service_monitor("every setting changed", objs)

    off = render({"runner": {"enabled": False}, "metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    if {k for k in off} != {k for k in render() if "runner" not in k[1]}:
        fail(f"runner.enabled=false: rendered {sorted(off)}")
    agent = off[("DaemonSet", "chaos-agent")]["spec"]["template"]
    if agent["spec"]["containers"][0]["args"] != ["agent"] or "ports" in agent["spec"]["containers"][0] \
            or "annotations" in agent["metadata"]:
        fail("metrics.enabled=false: the agent still serves or announces metrics")

    for bad, names in [({"agent": {"criSockett": "/x"}}, "criSockett"), ({"runner": {"replicas": "two"}}, "replicas"),
                       ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval")]:
        try:
            render(bad)
            fail(f"the values schema accepted {bad}")
        except helm_python.HelmError as e:
            if names not in str(e):
                fail(f"the values schema refused {bad} without naming {names}: {e}")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes", action="append", required=True, metavar="VERSION",
                        help="a Kubernetes release to check against, e.g. 1.33.0 (repeatable)")
    args = parser.parse_args()

    defaults = render()
    same_objects("defaults", defaults, manifests("agent.yaml", "controller.yaml"))
    monitored = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    same_objects("metrics.serviceMonitor.enabled", monitored,
                 manifests("agent.yaml", "controller.yaml", "monitoring.yaml"))
    service_monitor("metrics.serviceMonitor.enabled", monitored)
    crds = helm_python.Chart.load(CHART).crds
    if [c["name"] for c in crds] != ["crds/chaos.dev.yaml"]:
        fail(f"the chart's CRDs are {crds}, not crds/chaos.dev.yaml")
    if (CHART / "crds" / "chaos.dev.yaml").read_bytes() != (ROOT / "deploy" / "crds.yaml").read_bytes():
        fail("deploy/chart/crds/chaos.dev.yaml differs from deploy/crds.yaml: "
             "run `cargo run -p chaos-kube -- crds` into both")
    changed = settings()
    for version in args.kubernetes:
        lint("defaults", version)
        lint("every setting changed", version, changed)
        validate("defaults", version, defaults)
        validate("every setting changed", version, render(changed))
        validate("metrics.serviceMonitor.enabled", version, monitored)
        validate("CRDs", version, {(d["kind"], d["metadata"]["name"]): d
                                   for d in yaml.safe_load_all((ROOT / "deploy" / "crds.yaml").read_text()) if d})
    if failures:
        print(f"{len(failures)} failure(s) in deploy/chart", file=sys.stderr)
        return 1
    print(f"deploy/chart: lint, render, schemas and settings hold for Kubernetes {', '.join(args.kubernetes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
