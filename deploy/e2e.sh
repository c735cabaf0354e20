#!/usr/bin/env bash
# End to end on a real cluster: kind (or any cluster whose nodes run
# containerd and can load a local image), from a clone of chaos, as a user
# with docker (or podman) and kubectl pointing at a scratch cluster:
#
#   kind create cluster --name chaos-e2e
#   deploy/e2e.sh                  # KIND_CLUSTER=chaos-e2e by default
#   deploy/e2e.sh --helm           # installs with the chart (deploy/chart)
#
# It builds the image (deploy/Containerfile), loads it into the cluster's
# nodes, applies deploy/crds.yaml and deploy/agent.yaml (with --helm:
# installs deploy/chart, which renders the same objects), starts a busy pod,
# pauses it for 20 s with a ChaosAttack, and checks from outside chaos that
# the pod's container was frozen (its CPU time stood still, read from the
# node's cgroup) and that the attack ended by its deadline with its Events.
# Then it applies deploy/controller.yaml and runs an experiment file with
# `chaos-kube run` twice against a web pod: a pause its probe tolerates
# (exit 0, held, with a JUnit report), and one it does not (exit 1,
# violated; the pod answers again at once). Last, deleting everything
# leaves nothing: no chaos namespace, CRD, cluster role, ChaosAttack or
# frozen cgroup. Exits non-zero at the first check that fails.
#
# NOT RUN on the machines chaos is built on (no control plane can be
# installed there); its node side is what kube_daemonset:: tests through
# the CRI, its runner what kube_controller:: tests against a stand-in API
# server.
set -euo pipefail

helm=false
case ${1:-} in
  --helm) helm=true ;;
  "") ;;
  *) echo "usage: $0 [--helm]" >&2; exit 2 ;;
esac
cluster=${KIND_CLUSTER:-chaos-e2e}
image=localhost/chaos-kube:0.1.0
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

step "the image"
cargo build --release -p chaos-kube --manifest-path "$here/Cargo.toml"
bin=$here/target/release/chaos-kube
mkdir -p "$work/rootfs/usr/bin"
cp "$bin" "$work/rootfs/usr/bin/"
for f in $(ldd "$bin" | grep -o '/[^ ]*'); do install -D "$f" "$work/rootfs$f"; done
cp "$here/deploy/Containerfile" "$work/"
builder=$(command -v docker || command -v podman) || fail "neither docker nor podman"
"$builder" build -t "$image" "$work"
"$builder" save "$image" -o "$work/image.tar"
kind load image-archive "$work/image.tar" --name "$cluster"

step "chaos on the cluster"
if $helm; then
  # The chart leaves the namespace to the installer: it must admit
  # privileged pods (README.md, "Kubernetes").
  kubectl create namespace chaos-system
  kubectl label namespace chaos-system pod-security.kubernetes.io/enforce=privileged
  helm install chaos "$here/deploy/chart" --namespace chaos-system
else
  kubectl apply -f "$here/deploy/crds.yaml"
  kubectl wait --for condition=established --timeout=60s crd/chaosattacks.chaos.dev crd/chaosexperiments.chaos.dev
  kubectl apply -f "$here/deploy/agent.yaml"
fi
kubectl -n chaos-system rollout status daemonset/chaos-agent --timeout=180s

step "a busy pod"
kubectl create namespace chaos-e2e
kubectl -n chaos-e2e run busy --image=busybox:1.36 --restart=Never \
  -- sh -c 'while :; do usleep 20000; done'
kubectl -n chaos-e2e wait --for condition=Ready --timeout=120s pod/busy
node=$(kubectl -n chaos-e2e get pod busy -o jsonpath='{.spec.nodeName}')
uid=$(kubectl -n chaos-e2e get pod busy -o jsonpath='{.metadata.uid}')
# The pod's cgroup on its node (kind's nodes are containers: docker exec).
cgroup=$(docker exec "$node" sh -c "find /sys/fs/cgroup -type d -name '*pod${uid//-/_}*' -o -type d -name '*pod$uid' | head -1")
[ -n "$cgroup" ] || fail "no cgroup for pod $uid on $node"
usage() { docker exec "$node" sh -c "sed -n 's/^usage_usec //p' $cgroup/cpu.stat"; }

step "pause it for 20 s"
deadline=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
kubectl apply -f - <<EOF
apiVersion: chaos.dev/v1alpha1
kind: ChaosAttack
metadata:
  name: pause-busy
  namespace: chaos-e2e
  labels: {chaos.dev/node: $node}
spec:
  nodeName: $node
  pods: [{namespace: chaos-e2e, name: busy, uid: $uid}]
  fault: {fault: pause}
  deadline: "$deadline"
EOF
kubectl -n chaos-e2e wait --for jsonpath='{.status.phase}'=Running --timeout=60s chaosattack/pause-busy
a=$(usage); sleep 2; b=$(usage)
[ "$a" = "$b" ] || fail "the pod used CPU while paused ($a -> $b µs)"
kubectl -n chaos-e2e wait --for jsonpath='{.status.phase}'=Ended --timeout=60s chaosattack/pause-busy
reason=$(kubectl -n chaos-e2e get chaosattack pause-busy -o jsonpath='{.status.reason}')
[ "$reason" = deadline ] || fail "ended with reason '$reason', not deadline"
a=$(usage); sleep 2; b=$(usage)
[ "$a" != "$b" ] || fail "the pod uses no CPU after the attack"
kubectl -n chaos-e2e get events --field-selector involvedObject.name=busy -o name | grep -q . \
  || fail "no events on the pod"
kubectl -n chaos-e2e get events --field-selector reason=ChaosInjected -o name | grep -q . \
  || fail "no ChaosInjected event"

step "the runner"
$helm || kubectl apply -f "$here/deploy/controller.yaml"
kubectl -n chaos-system rollout status deployment/chaos-runner --timeout=180s

step "an experiment: a web pod frozen, its probe tolerating it or not"
kubectl -n chaos-e2e run web --image=busybox:1.36 --restart=Never --labels=app=web \
  -- sh -c 'mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'
kubectl -n chaos-e2e wait --for condition=Ready --timeout=120s pod/web
ip=$(kubectl -n chaos-e2e get pod web -o jsonpath='{.status.podIP}')
# The probe runs from the runner's pod, over the pod network.
cat > "$work/experiment.yaml" <<EOF
name: web-frozen
variables: {tolerated: 1000, length: 5s}
targets:
  web: {pod-selector: app=web}
hypothesis:
  recover-within: 30s
  probes:
    - name: web
      http: {url: "http://$ip:8080/"}
      interval: 250ms
      timeout: 1s
      failures: \${tolerated}
method:
  - {fault: pause, duration: \${length}}
max-duration: 5m
EOF
code=0
"$bin" run -n chaos-e2e --junit "$work/held.xml" "$work/experiment.yaml" || code=$?
[ "$code" = 0 ] || fail "a pause the probe tolerates: exit $code, not 0 (held)"
grep -q '<testsuite' "$work/held.xml" || fail "no JUnit report"
code=0
"$bin" run -n chaos-e2e --set tolerated=2 --set length=120s "$work/experiment.yaml" || code=$?
[ "$code" = 1 ] || fail "a pause the probe does not tolerate: exit $code, not 1 (violated)"
# Rolled back long before the attack's 120 s: the pod answers again.
kubectl -n chaos-e2e exec busy -- wget -qO- -T 5 "http://$ip:8080/" | grep -q ok \
  || fail "the web pod does not answer after the rollback"
[ -z "$(kubectl -n chaos-e2e get chaosattacks -o name)" ] || fail "ChaosAttacks left after the runs"

step "nothing left"
kubectl delete namespace chaos-e2e --wait=true
if $helm; then
  helm uninstall chaos --namespace chaos-system --wait
  # Helm never deletes a chart's CRDs.
  kubectl delete crd chaosattacks.chaos.dev chaosexperiments.chaos.dev --wait=true
  kubectl delete namespace chaos-system --wait=true
else
  kubectl delete -f "$here/deploy/controller.yaml" --wait=true
  kubectl delete -f "$here/deploy/agent.yaml" --wait=true
  kubectl delete -f "$here/deploy/crds.yaml" --wait=true
fi
! kubectl get namespace chaos-system 2>/dev/null || fail "chaos-system is still there"
! kubectl get crd chaosattacks.chaos.dev 2>/dev/null || fail "the CRD is still there"
! kubectl get clusterrole chaos-agent 2>/dev/null || fail "the agent's cluster role is still there"
! kubectl get clusterrole chaos-runner 2>/dev/null || fail "the runner's cluster role is still there"
left=$(docker exec "$node" sh -c 'grep -l "^frozen 1" $(find /sys/fs/cgroup -name cgroup.events) 2>/dev/null || true')
[ -z "$left" ] || fail "frozen cgroups left: $left"
echo "e2e: ok"
