//! Experiment files: what parses to what, what is refused where and with
//! which hint, the shipped library, and a property test that no file —
//! random or mutated — makes the parser panic.

use std::time::Duration;

use super::{
    diag::Diagnostics,
    model::{Pick, Selector},
    parse,
};
use crate::{
    faults::{Fault, NetLoss},
    probes::Check,
    runtime::{PodQuery, Runtime},
};

const FULL: &str = r#"
name: checkout-resilience
description: Checkout survives a lossy database link
tags: [network, checkout]
variables:
  loss: 5
  db: 10.0.0.5
  step: 30s
targets:
  app:
    cgroup: /system.slice/checkout.service
  db:
    pid: 4242
    allow-host: false
hypothesis:
  recover-within: 20s
  probes:
    - name: health
      http:
        url: http://127.0.0.1:8080/health
        method: get
        headers: {X-Probe: chaos}
      tolerance:
        status: [200, 3xx]
        max-latency: 300ms
        body-contains: ok
        body-matches: "^ok"
      interval: 500ms
      timeout: 1s
      failures: 3
    - name: db-port
      tcp:
        address: ${db}:5432
      tolerance:
        max-latency: 50ms
    - name: smoke
      command:
        run: ["/bin/true", "--quick"]
      tolerance:
        exit-code: 0
        output-matches: ".*"
method:
  - name: lossy-db
    fault: net-loss
    target: app
    percent: ${loss}
    cidr: ${db}/32
    port: 5432
    protocol: tcp
    direction: egress
    interfaces: [eth0]
    duration: ${step}
  - name: both
    start-after: 10s
    parallel:
      - fault: net-loss
        target: app
        percent: 1
        duration: 20s
      - fault: net-loss
        target: db
        percent: 2.5
        direction: ingress
        duration: 40s
abort:
  - name: errors
    prometheus:
      url: http://prometheus:9090
      query: sum(rate(http_requests_total{code=~"5.."}[1m]))
    tolerance:
      below: 5
max-duration: 5m
"#;

/// The net-loss parameters of a fault (anything else is a test bug).
fn net_loss(fault: &Fault) -> &NetLoss {
    #[allow(unreachable_patterns)] // net-loss is the only kind today; more are coming
    match fault {
        Fault::NetLoss(l) => l,
        other => panic!("not net-loss: {other:?}"),
    }
}

fn ok(text: &str) -> super::Experiment {
    parse("x.yaml", text, &[]).unwrap_or_else(|d| panic!("expected a valid file, got:\n{d}"))
}

fn errors(text: &str) -> Diagnostics {
    match parse("x.yaml", text, &[]) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(d) => d,
    }
}

/// The one problem whose message contains `needle`, at `line:col`.
fn has(d: &Diagnostics, needle: &str, line: usize, col: usize) -> Option<String> {
    let found = d
        .list
        .iter()
        .find(|p| p.message.contains(needle))
        .unwrap_or_else(|| panic!("no problem mentions {needle:?}:\n{d}"));
    assert_eq!((found.span.start.line, found.span.start.col), (line, col), "position of {needle:?}:\n{d}");
    found.hint.clone()
}

#[test]
fn a_full_file_becomes_the_model() {
    let e = ok(FULL);
    assert_eq!(e.name, "checkout-resilience");
    assert_eq!(e.tags, ["network", "checkout"]);
    assert_eq!(e.targets.len(), 2);
    assert_eq!(e.targets[1].selector, Selector::Pid(4242));
    assert_eq!(e.hypothesis.recover_within, Duration::from_secs(20));
    assert_eq!(e.hypothesis.probes.len(), 3);
    let Check::Http(h) = &e.hypothesis.probes[0].check else { panic!() };
    assert_eq!(h.method, "GET");
    assert_eq!(h.headers, [("X-Probe".to_owned(), "chaos".to_owned())]);
    assert!(h.status.contains(200) && h.status.contains(302) && !h.status.contains(201));
    assert_eq!(h.max_latency, Some(Duration::from_millis(300)));
    assert_eq!(e.hypothesis.probes[0].failures, 3);
    assert_eq!(e.hypothesis.probes[0].interval, Duration::from_millis(500));
    let Check::Tcp(t) = &e.hypothesis.probes[1].check else { panic!() };
    assert_eq!(t.address, "10.0.0.5:5432");
    assert_eq!(e.hypothesis.probes[1].failures, 1, "default");
    let Check::Command(c) = &e.hypothesis.probes[2].check else { panic!() };
    assert_eq!(c.argv, ["/bin/true", "--quick"]);
    assert_eq!(e.method.len(), 2);
    let first = &e.method[0].attacks[0];
    assert_eq!((first.id.as_str(), first.duration), ("lossy-db", Duration::from_secs(30)));
    let loss = net_loss(&first.fault);
    assert_eq!(loss.interfaces, ["eth0"]);
    assert_eq!(loss.percent.value(), 5.0);
    assert_eq!(loss.filter.port, Some(5432));
    assert_eq!(loss.filter.cidrs[0].to_string(), "10.0.0.5/32");
    let both = &e.method[1];
    assert_eq!((both.name.as_str(), both.delay), ("both", Duration::from_secs(10)));
    assert_eq!(both.attacks.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["net-loss-2", "net-loss-3"]);
    assert_eq!(both.attacks[1].target, "db");
    assert_eq!(e.method_length(), Duration::from_secs(30 + 10 + 40));
    assert_eq!(e.abort.len(), 1);
    let Check::Prometheus(p) = &e.abort[0].check else { panic!() };
    assert_eq!(p.below, Some(5.0));
    assert_eq!(e.max_duration, Duration::from_secs(300));
}

#[test]
fn defaults_fill_in() {
    let e = ok(
        "name: n\ntargets: {a: {cgroup: /a}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\nmethod:\n  - {fault: net-loss, percent: 1, duration: 1m}\n",
    );
    assert_eq!(e.method[0].attacks[0].target, "a", "the only target");
    assert_eq!(e.method[0].attacks[0].id, "net-loss-1");
    assert_eq!(e.hypothesis.recover_within, Duration::from_secs(30));
    let p = &e.hypothesis.probes[0];
    assert_eq!((p.interval, p.timeout, p.failures), (Duration::from_secs(1), Duration::from_secs(1), 1));
    assert_eq!(e.max_duration, Duration::from_secs(60 + 30 + 60), "method + recovery + 1m");
}

#[test]
fn the_acceptance_problems_have_line_and_column() {
    let text = "\
name: bad
targets:
  app:
    cgroup: /a
hypothesis:
  probes:
    - name: h
      http:
        url: http://x/
      interval: fast
method:
  - fault: net-loss
    percent: 5
    duraton: 30s
  - fault: net-los
    percent: 5
    duration: 10s
  - fault: net-loss
    percent: 5
    target: db
    duration: -5s
";
    let d = errors(text);
    assert_eq!(has(&d, "unknown field `duraton`", 14, 5).as_deref(), Some("did you mean `duration`?"));
    has(&d, "missing field `duration`", 12, 5);
    has(&d, "`interval`", 10, 17);
    assert!(has(&d, "unknown fault kind `net-los`", 15, 12).unwrap().contains("did you mean `net-loss`?"));
    assert!(has(&d, "missing target: `db` is not defined", 20, 13).unwrap().contains("targets defined: app"));
    has(&d, "negative duration", 21, 15);
    assert_eq!(d.len(), 6, "{d}");
    // The rendering carries the same positions.
    let text = d.to_string();
    assert!(text.contains("x.yaml:14:5: error: unknown field `duraton`"), "{text}");
    assert!(text.contains("x.yaml:21:15: error: `duration`: negative duration"), "{text}");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let d = errors(
        "name: n\ntags: network\ntargets: [a]\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\n      failures: many\nmethod:\n  - {fault: net-loss, percent: [5], duration: 1m, port: 99999}\n",
    );
    has(&d, "wrong type: `tags` must be a list, found a string `network`", 2, 7);
    has(&d, "wrong type: `targets` must be a mapping", 3, 10);
    has(&d, "`failures`: `many` is not a whole number", 8, 17);
    has(&d, "wrong type: `percent` must be a single value, found a list", 10, 32);
    has(&d, "`port`: `99999` is not a port", 10, 57);
}

#[test]
fn missing_targets_are_reported() {
    let base = "name: n\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\nmethod:\n  - {fault: net-loss, percent: 1, duration: 1m}\n";
    let d = errors(base);
    has(&d, "missing target: the experiment has no `targets`", 1, 1);
    let two = base.replace("method:", "targets: {a: {cgroup: /a}, b: {pid: 1}}\nmethod:");
    let d = errors(&two);
    assert_eq!(
        has(&d, "missing target: this step does not say which target (a, b)", 8, 5).as_deref(),
        Some("add `target: a`")
    );
    let none = base.replace("method:", "targets: {a: {}}\nmethod:");
    has(
        &errors(&none),
        "missing target: target `a` says none of `cgroup`, `pid`, `container`, `pod`, `pod-uid`, `pod-selector`",
        6,
        11,
    );
    let container = base.replace("method:", "targets: {a: {container: web, runtime: podman}}\nmethod:");
    let e = ok(&container);
    assert_eq!(
        e.targets[0].selector,
        Selector::Container { name: "web".into(), runtime: Some(Runtime::Podman) }
    );
    let any = base.replace("method:", "targets: {a: {container: web}}\nmethod:");
    assert_eq!(ok(&any).targets[0].selector, Selector::Container { name: "web".into(), runtime: None });
    let bad = base.replace("method:", "targets: {a: {container: web, runtime: rkt}}\nmethod:");
    has(
        &errors(&bad),
        "`rkt` is not a container runtime chaos knows (docker, podman, containerd, cri-o)",
        6,
        40,
    );
    let pod = base.replace("method:", "targets: {a: {pod: shop/web-0, container: app}}\nmethod:");
    assert_eq!(
        ok(&pod).targets[0].selector,
        Selector::Pod {
            query: PodQuery::Name { namespace: "shop".into(), name: "web-0".into() },
            container: Some("app".into())
        }
    );
    let sel = base.replace("method:", "targets: {a: {pod-selector: 'app=web, tier=front'}}\nmethod:");
    assert_eq!(
        ok(&sel).targets[0].selector,
        Selector::Pod {
            query: PodQuery::Selector(vec![("app".into(), "web".into()), ("tier".into(), "front".into())]),
            container: None
        }
    );
    let bad = base.replace("method:", "targets: {a: {pod: web-0}}\nmethod:");
    has(&errors(&bad), "`web-0` is not NAMESPACE/NAME", 6, 20);
    let two = base.replace("method:", "targets: {a: {pod: a/b, pod-uid: x}}\nmethod:");
    has(&errors(&two), "gives pod and pod-uid; give exactly one", 6, 11);
    let two = base.replace("method:", "targets: {a: {container: web, pid: 1}}\nmethod:");
    has(&errors(&two), "gives pid and container; give exactly one", 6, 11);
}

/// `count`, `percent` and `node-selector` narrow a `pod-selector`, and
/// nothing else.
#[test]
fn targets_narrowed_by_count_percent_and_node_selector() {
    let base = "name: n\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\nmethod:\n  - {fault: net-loss, percent: 1, duration: 1m}\n";
    let with = |t: &str| base.replace("method:", &format!("targets: {{a: {{{t}}}}}\nmethod:"));
    let e = ok(&with("pod-selector: app=web, count: 2, node-selector: 'zone=a, disk=ssd'"));
    assert_eq!(e.targets[0].pick, Pick::Count(2));
    assert_eq!(e.targets[0].node_selector, vec![("zone".into(), "a".into()), ("disk".into(), "ssd".into())]);
    assert_eq!(ok(&with("pod-selector: app=web, percent: 25%")).targets[0].pick, Pick::Percent(25.0));
    assert_eq!(ok(&with("pod-selector: app=web")).targets[0].pick, Pick::All);
    has(
        &errors(&with("pod: a/b, count: 1")),
        "`count` in target `a` narrows the pods `pod-selector` matches",
        6,
        25,
    );
    has(&errors(&with("cgroup: /a, node-selector: x=y")), "`node-selector` in target `a` narrows", 6, 27);
    has(
        &errors(&with("pod-selector: a=b, count: 1, percent: 5")),
        "gives `count` and `percent`; give one",
        6,
        44,
    );
    has(
        &errors(&with("pod-selector: a=b, percent: 0")),
        "`0` is not a percentage above 0 and at most 100",
        6,
        43,
    );
    has(&errors(&with("pod-selector: a=b, percent: 101")), "`101` is not a percentage", 6, 43);
    has(&errors(&with("pod-selector: a=b, count: 0")), "`0` is not a whole number from 1 to 1000", 6, 41);
    has(
        &errors(&with("pod-selector: a=b, node-selector: ','")),
        "an empty selector would match every node",
        6,
        49,
    );
}

/// Sampling: never more than matched, at least one of some, rounded up,
/// the original order kept.
#[test]
fn pick_sizes_and_samples() {
    assert_eq!(Pick::All.size(7), 7);
    assert_eq!(Pick::Count(3).size(7), 3);
    assert_eq!(Pick::Count(9).size(7), 7);
    assert_eq!(Pick::Percent(25.0).size(3), 1);
    assert_eq!(Pick::Percent(50.0).size(5), 3);
    assert_eq!(Pick::Percent(100.0).size(5), 5);
    assert_eq!(Pick::Percent(1.0).size(0), 0);
    assert_eq!(Pick::Percent(0.1).size(2), 1);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let s = Pick::Count(2).sample((0..5).collect::<Vec<u32>>(), &mut rng);
        assert_eq!(s.len(), 2);
        assert!(s[0] < s[1], "order kept: {s:?}");
        seen.insert(s);
    }
    // Every pair of five is drawn (10 of them), not a fixed one.
    assert_eq!(seen.len(), 10);
}

#[test]
fn fault_kinds_planned_and_unknown() {
    let f = |kind: &str| {
        format!(
            "name: n\ntargets: {{a: {{cgroup: /a}}}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{address: 'h:1'}}\nmethod:\n  - fault: {kind}\n    duration: 1m\n"
        )
    };
    let d = errors(&f("net-blackhole"));
    assert!(
        has(&d, "unknown fault kind `net-blackhole`", 8, 12)
            .unwrap()
            .contains("planned but not in this version")
    );
    let d = errors(&f("explode"));
    // Every kind that landed, whichever they are.
    let available =
        format!("available: {}", crate::experiment::parse::fault_kinds().collect::<Vec<_>>().join(", "));
    assert_eq!(has(&d, "unknown fault kind `explode`", 8, 12), Some(available));
    // Parameters of the fault kind are checked against that kind.
    let d = errors(&f("net-loss").replace("    duration", "    percnt: 5\n    duration"));
    assert_eq!(
        has(&d, "unknown field `percnt` in a net-loss step", 9, 5).as_deref(),
        Some("did you mean `percent`?")
    );
    has(&d, "missing field `percent`", 8, 5);
}

#[test]
fn netem_like_kinds_take_the_commands_flags_as_fields() {
    let f = |step: &str| {
        format!(
            "name: n\ntargets: {{a: {{cgroup: /a}}}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{address: 'h:1'}}\nmethod:\n{step}    duration: 1m\n"
        )
    };
    let e = ok(&f(
        "  - fault: net-delay\n    delay: 50ms\n    jitter: 10ms\n    distribution: normal\n    loss: 1\n    port: 5432\n",
    ));
    let Fault::NetDelay(fault) = &e.method[0].attacks[0].fault else {
        panic!("not a net-delay: {:?}", e.method)
    };
    assert_eq!(fault.effects.delay, Some(Duration::from_millis(50)));
    assert_eq!(fault.effects.distribution, Some(crate::faults::Distribution::Normal));
    assert_eq!(fault.filter.port, Some(5432));
    // The command line's checks, worded for a file, at the step: the
    // subcommand's required flag is a required field.
    let d = errors(&f("  - fault: net-delay\n    jitter: 10ms\n"));
    assert!(d.to_string().contains("missing field `delay` in a net-delay step"), "{d}");
    assert!(d.to_string().contains("hint: add `delay: DURATION`: Delay every matching packet"), "{d}");
    let d = errors(&f("  - fault: net-rate\n    rate: 10mbit\n    jitter: 5ms\n"));
    assert!(d.to_string().contains("net-rate: `jitter` needs `delay`"), "{d}");
    // What the target receives, too.
    let e = ok(&f("  - fault: net-rate\n    rate: 10mbit\n    direction: ingress\n"));
    let Fault::NetRate(fault) = &e.method[0].attacks[0].fault else {
        panic!("not a net-rate: {:?}", e.method)
    };
    assert_eq!(fault.filter.direction, crate::faults::Direction::Ingress);
    let d = errors(&f("  - fault: net-reorder\n    reorder: 25\n    delay: fast\n"));
    assert!(d.to_string().contains("`delay`"), "{d}");
}

#[test]
fn variables_are_substituted_typed_and_overridable() {
    let text = "name: v\nvariables: {loss: 5, target: /a, d: 30s}\ntargets: {a: {cgroup: '${target}'}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\nmethod:\n  - {fault: net-loss, percent: '${loss}', duration: '${d}'}\n";
    let e = ok(text);
    assert_eq!(e.targets[0].selector, Selector::Cgroup("/a".into()));
    let sets = [("loss".to_owned(), "20".to_owned()), ("target".to_owned(), "/b".to_owned())];
    let e = parse("x.yaml", text, &sets).unwrap();
    let l = net_loss(&e.method[0].attacks[0].fault);
    assert_eq!(l.percent.value(), 20.0);
    assert!(e.variables["loss"].overridden && !e.variables["d"].overridden);
    // A bad override is reported where the value is used, naming its origin.
    let d = parse("x.yaml", text, &[("loss".into(), "lots".into())]).unwrap_err();
    has(&d, "(from ${loss} = `lots`)", 9, 32);
    let d = parse("x.yaml", text, &[("los".into(), "1".into())]).unwrap_err();
    assert_eq!(
        has(&d, "--set los=…: the experiment has no variable `los`", 2, 1).as_deref(),
        Some("did you mean `loss`?")
    );
    let d = errors(&text.replace("'${d}'", "'${dd}'"));
    assert_eq!(has(&d, "unknown variable `dd`", 9, 53).as_deref(), Some("did you mean `${d}`?"));
    assert_eq!(d.len(), 1, "a broken value is reported once:\n{d}");
}

#[test]
fn structure_rules() {
    let base = "name: n\ntargets: {a: {cgroup: /a}}\nhypothesis:\n  probes:\n    - name: p\n      tcp: {address: 'h:1'}\n";
    let d = errors(&format!("{base}method: []\nmax-duration: 0s\n"));
    has(&d, "the method is empty", 7, 9);
    has(&d, "zero duration", 8, 15);
    let d = errors(&format!(
        "{base}method:\n  - parallel:\n      - {{fault: net-loss, percent: 1, duration: 1m, start-after: 5s}}\n"
    ));
    has(&d, "`start-after` inside `parallel`", 9, 53);
    let d = errors(&format!(
        "{base}method:\n  - {{name: x, fault: net-loss, percent: 1, duration: 1m}}\n  - {{name: x, fault: net-loss, percent: 1, duration: 1m}}\nmax-duration: 1m30s\n"
    ));
    has(&d, "a second attack named `x`", 9, 6);
    has(&d, "max-duration 1m30s is shorter than the method, which takes 2m", 10, 15);
    let d = errors(&format!(
        "{base}method:\n  - {{fault: net-loss, percent: 1, duration: 1m, direction: ingress, interfaces: [eth0]}}\n"
    ));
    has(&d, "`interfaces` applies to egress", 8, 69);
    let d = errors(
        "name: n\ntargets: {a: {cgroup: /a}}\nhypothesis: {probes: []}\nmethod:\n  - {fault: net-loss, percent: 1, duration: 1m}\n",
    );
    has(&d, "the hypothesis has no probes", 3, 14);
}

#[test]
fn probe_rules() {
    let probe = |body: &str| {
        format!(
            "name: n\ntargets: {{a: {{cgroup: /a}}}}\nhypothesis:\n  probes:\n    - name: p\n{body}\nmethod:\n  - {{fault: net-loss, percent: 1, duration: 1m}}\n"
        )
    };
    has(&errors(&probe("      interval: 1s")), "the probe says nothing to check", 5, 7);
    has(
        &errors(&probe("      tcp: {address: 'h:1'}\n      http: {url: 'http://h/'}")),
        "a probe checks one thing",
        7,
        7,
    );
    let tls = ok(&probe("      http: {url: 'https://h/', ca-file: /etc/chaos/ca.pem, follow-redirects: 0}"));
    let Check::Http(h) = &tls.hypothesis.probes[0].check else { panic!() };
    assert!(h.url.tls && h.url.port == 443);
    assert_eq!(h.client.ca_file.as_deref(), Some(std::path::Path::new("/etc/chaos/ca.pem")));
    assert_eq!(h.client.max_redirects, 0);
    has(
        &errors(&probe("      http: {url: 'https://h/', ca-file: ca.pem}")),
        "is not an absolute path",
        6,
        42,
    );
    assert_eq!(
        has(&errors(&probe("      http: {url: 'http://h/', ca-file: /ca.pem}")), "is plain HTTP", 6, 32)
            .as_deref(),
        Some("use an https:// URL, or remove `ca-file`")
    );
    has(
        &errors(&probe("      http: {url: 'http://h/', follow-redirects: 99}")),
        "is not a number of redirects from 0 to 20",
        6,
        50,
    );
    assert_eq!(
        has(
            &errors(&probe("      http: {url: 'https://h/', ca-fil: /ca.pem}")),
            "unknown field `ca-fil`",
            6,
            33
        )
        .as_deref(),
        Some("did you mean `ca-file`?")
    );
    has(&errors(&probe("      tcp: {address: h}")), "has no port", 6, 22);
    has(&errors(&probe("      prometheus: {url: 'http://p:9090', query: up}")), "needs a threshold", 6, 7);
    has(
        &errors(&probe("      tcp: {address: 'h:1'}\n      tolerance: {status: 200}")),
        "unknown field `status` in the tolerance of a tcp probe",
        7,
        19,
    );
    has(
        &errors(&probe("      http: {url: 'http://h/'}\n      tolerance: {status: 700}")),
        "is not an HTTP status",
        7,
        27,
    );
    has(
        &errors(&probe("      http: {url: 'http://h/'}\n      tolerance: {body-matches: '('}")),
        "not a valid regular expression",
        7,
        33,
    );
    has(&errors(&probe("      command: {run: []}")), "`run` is an empty list", 6, 22);
    has(&errors(&probe("      tcp: {address: 'h:1'}\n      interval: 1ms")), "shorter than 10ms", 7, 17);
    let dup = probe("      tcp: {address: 'h:1'}\n    - name: p\n      tcp: {address: 'h:2'}");
    has(&errors(&dup), "a second probe named `p`", 7, 13);
    let shell = ok(&probe("      command: {run: 'curl -fsS http://x/ | grep ok'}"));
    let Check::Command(c) = &shell.hypothesis.probes[0].check else { panic!() };
    assert_eq!(c.argv, ["sh", "-c", "curl -fsS http://x/ | grep ok"]);
    let empty_ns = ok(&probe("      tcp: {address: 'h:1'}\n      netns: ''"));
    assert_eq!(empty_ns.hypothesis.probes[0].netns, None);
}

/// A `--set` value is never shell code: a `run` string with a variable in
/// it is refused, and in a `run` list the value is one argument, whatever
/// it holds.
#[test]
fn set_values_never_reach_a_shell() {
    /// Removes the directory on every exit, a failed assertion included.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Removed(crate::safe_fs::private_dir(&std::env::temp_dir(), "chaos-inject-test").unwrap());
    let pwned = dir.0.join("pwned");
    let attack = format!("$(touch {})", pwned.display());
    let file = |run: &str| {
        format!(
            "name: n\nvariables: {{x: ok}}\ntargets: {{a: {{cgroup: /a}}}}\nhypothesis:\n  probes:\n    - name: p\n      command: {{run: {run}}}\nmethod:\n  - {{fault: net-loss, percent: 1, duration: 1m}}\n"
        )
    };
    let sets = [("x".to_owned(), attack.clone())];
    let d =
        parse("x.yaml", &file("'echo ${x}'"), &sets).expect_err("a run string with a variable is refused");
    let hint = has(&d, "`run` is a shell command (run by `sh -c`) with ${x} substituted into it", 7, 22);
    assert!(hint.unwrap().contains("as a list"));
    // Refused with the file's own default too: what validates must not
    // depend on what --set gives.
    assert!(parse("x.yaml", &file("'echo ${x}'"), &[]).is_err());
    let e = parse("x.yaml", &file("[echo, '${x}']"), &sets).unwrap_or_else(|d| panic!("{d}"));
    let Check::Command(c) = &e.hypothesis.probes[0].check else { panic!() };
    assert_eq!(c.argv, ["echo", attack.as_str()]);
    let mut c = c.clone();
    c.output_contains = Some(attack.clone());
    let sample = c.run(std::time::Duration::from_secs(5));
    assert!(sample.ok, "{sample:?}");
    assert!(!pwned.exists(), "the --set value ran as a shell command");
}

#[test]
fn not_yaml_and_not_a_mapping() {
    has(&errors("name: [unclosed\n"), "not valid YAML", 2, 1);
    has(&errors("- just\n- a list\n"), "an experiment file is a mapping", 1, 1);
    has(&errors(""), "an experiment file is a mapping", 1, 1);
    let d = errors("name: n\nname: m\n");
    has(&d, "duplicate field `name` (first given on line 1)", 2, 1);
}

/// Every file shipped in experiments/ validates as it is.
#[test]
fn the_experiment_library_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(d) = parse(&path.display().to_string(), &text, &[]) {
                panic!("{d}");
            }
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} experiments in {}", dir.display());
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "\n",
    "  ",
    "'",
    "\"",
    "&a ",
    "*a",
    "!!str ",
    "!x ",
    "#",
    "${loss}",
    "${",
    "$$",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">\n",
    "\t",
    "~",
    "null",
    "-5s",
    "0",
    "1e999",
    "NaN",
    "ü",
    "\u{0}",
    "fault: net-loss",
    "percent:",
    "parallel:",
    "target: app",
    "duration: 1m",
    "http:",
    "tolerance:",
    "netns: x",
    "%YAML 1.2\n",
];

/// Mutate `text`: flip, insert, delete, duplicate or truncate.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 if !chars.is_empty() => {
                chars.remove(at.min(chars.len() - 1));
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                for (i, c) in t.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            2 if !chars.is_empty() => {
                let i = at.min(chars.len() - 1);
                chars[i] = char::from_u32(rng.below(0x80) as u32).unwrap_or('x');
            }
            3 => chars.truncate(at),
            4 => {
                // Duplicate a line somewhere else.
                let text: String = chars.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[rng.below(lines.len())].to_owned() + "\n";
                    for (i, c) in line.chars().enumerate() {
                        chars.insert(at + i, c);
                    }
                }
            }
            _ => {
                // Re-indent a line.
                let text: String = chars.iter().collect();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    lines[i] = " ".repeat(rng.below(8)) + lines[i].trim_start();
                    chars = (lines.join("\n") + "\n").chars().collect();
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn check_no_panic(text: &str, sets: &[(String, String)]) {
    let result = std::panic::catch_unwind(|| parse("fuzz.yaml", text, sets));
    match result {
        Err(_) => panic!("the parser panicked on (sets {sets:?}):\n---\n{text}\n---"),
        Ok(Ok(_)) => {}
        Ok(Err(d)) => {
            assert!(!d.list.is_empty(), "an error without problems for (sets {sets:?}):\n{text}");
            // Lines as YAML counts them (a lone \r ends one too).
            let lines = crate::experiment::diag::source_lines(text).len() + 1;
            for p in &d.list {
                assert!(
                    p.span.start.line >= 1 && p.span.start.line <= lines.max(1),
                    "{p:?} outside:\n{text}"
                );
                assert!(p.span.start.col >= 1, "{p:?}");
                assert!(!p.message.is_empty());
            }
            // Rendering must not panic either (carets past line ends, tabs).
            let _ = d.to_string();
        }
    }
}

/// Property: no file, random or mutated from valid ones, panics the parser;
/// every problem it reports lies within the file. `CHAOS_FUZZ_CASES` scales
/// the number of inputs (README, "Fuzzing"); by default about 10 000.
#[test]
fn fuzz_random_and_mutated_files_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut corpus: Vec<String> = vec![FULL.to_owned()];
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "yaml") {
            corpus.push(std::fs::read_to_string(e.path()).unwrap());
        }
    }
    // Shares of the inputs, as the fixed counts were: 4000 mutated files,
    // 1500 token soups, 300 random texts (and 4000 files with random --set).
    let n = crate::cli::fuzz::cases(9_800);
    let part = |k: usize| (n * k).div_ceil(9_800);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let sets = [("loss".to_owned(), "7".to_owned())];
    for i in 0..part(4000) {
        let base = &corpus[i % corpus.len()];
        let mut text = mutate(&mut rng, base);
        if i % 3 == 0 {
            text = mutate(&mut rng, &text);
        }
        check_no_panic(&text, if i % 2 == 0 { &sets } else { &[] });
    }
    for _ in 0..part(1500) {
        let n = rng.below(40);
        let text: String = (0..n).map(|_| TOKENS[rng.below(TOKENS.len())]).collect();
        check_no_panic(&text, &[]);
    }
    for _ in 0..part(300) {
        let n = rng.below(200);
        let text: String = (0..n).map(|_| char::from_u32(rng.below(0x250) as u32).unwrap_or('?')).collect();
        check_no_panic(&text, &[]);
    }
    // The shipped files, valid, with random `--set` values for their
    // variables: substitution puts user text anywhere in a file.
    let names: Vec<Vec<String>> = corpus.iter().map(|t| variable_names(t)).collect();
    for i in 0..part(4000) {
        let k = i % corpus.len();
        let mut sets = Vec::new();
        for _ in 0..=rng.below(3) {
            let Some(name) = names[k].get(rng.below(names[k].len().max(1))) else { break };
            let value = match rng.below(3) {
                0 => TOKENS[rng.below(TOKENS.len())].to_owned(),
                1 => {
                    mutate(&mut rng, ["5", "30s", "/a/b", "http://127.0.0.1:8080/x", "ENOSPC", "+1h"][i % 6])
                }
                _ => (0..rng.below(30))
                    .map(|_| char::from_u32(rng.below(0x250) as u32).unwrap_or('?'))
                    .collect(),
            };
            sets.push((name.clone(), value));
        }
        check_no_panic(&corpus[k], &sets);
    }
    // Deep nesting of every kind.
    for open in ["[", "{a: ", "- ", "a:\n "] {
        check_no_panic(&open.repeat(5000), &[]);
    }
    println!("fuzz: {} experiment files, 0 panics", part(4000) * 2 + part(1500) + part(300) + 4);
}

/// The `variables:` of a file (its top-level mapping's two-space keys).
fn variable_names(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("variables:"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("  ")?.split_once(':').map(|(k, _)| k.to_owned()))
        .filter(|k| !k.starts_with([' ', '#']))
        .collect()
}

/// The format example in experiments/README.md is a valid file.
#[test]
fn the_readme_example_validates() {
    let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let start = text.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let block = &text[start..start + text[start..].find("```").unwrap()];
    let e = parse("README.md", block, &[]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(e.method.len(), 2);
}

/// The example in `chaos run --help` is a valid file.
#[test]
fn the_help_example_validates() {
    use clap::CommandFactory;
    let cli = crate::cli::Cli::command();
    let help = cli.find_subcommand("run").unwrap().get_long_about().unwrap().to_string();
    let start = help.find("  name: lossy-link").expect("an example in the help");
    let end = help.find("  max-duration: 5m").expect("its end") + "  max-duration: 5m".len();
    let example: String =
        help[start..end].lines().map(|l| l.strip_prefix("  ").unwrap_or(l).to_owned() + "\n").collect();
    let e = parse("help", &example, &[]).unwrap_or_else(|d| panic!("{d}\n{example}"));
    assert_eq!(e.method.len(), 2);
    assert_eq!(e.abort.len(), 1);
}

/// Found by the fuzz test: `--set target=` emptied a target's `cgroup:` and
/// the parser dropped the target without a word: `0 problems`, exit 3
/// (or, where the method names it, "`service` is not defined").
#[test]
fn an_empty_target_is_reported_where_it_comes_from() {
    for file in ["lossy-link.yaml", "dependency-outage.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments").join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let d = parse(file, &text, &[("target".to_owned(), String::new())]).unwrap_err();
        let all = d.to_string();
        assert!(all.contains("`cgroup` in target `service` has no value (from ${target} = ``)"), "{all}");
    }
}

/// A file may offer several kinds of target and let `--set` pick one: a
/// key left empty beside one with a value counts as absent. The shipped
/// lossy-link.yaml takes a cgroup (`target`) or a container.
#[test]
fn an_empty_target_key_beside_a_filled_one_is_absent() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/lossy-link.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let set = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let e =
        parse("l", &text, &set(&[("target", ""), ("container", "web")])).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(e.targets[0].selector, Selector::Container { name: "web".into(), runtime: None });
    let e = parse("l", &text, &set(&[])).unwrap_or_else(|d| panic!("{d}"));
    assert!(matches!(e.targets[0].selector, Selector::Cgroup(_)));
    let d = parse("l", &text, &set(&[("container", "web")])).unwrap_err().to_string();
    assert!(d.contains("gives cgroup and container; give exactly one"), "{d}");
}

/// Found by the fuzz test: a lone `\r` ends a line for the YAML parser but
/// not for `str::lines`, so a problem after one was reported past the end
/// of the file, or quoted the wrong line.
#[test]
fn a_lone_carriage_return_ends_a_line_in_diagnostics() {
    assert_eq!(crate::experiment::diag::source_lines("a\rb\r\nc\n\nd"), ["a", "b", "c", "", "d"]);
    let d = parse("cr.yaml", "name: x\rtargets: [\rbad: {", &[]).unwrap_err();
    let shown = d.to_string();
    let line = d.list[0].span.start.line;
    assert!(line <= 3, "{shown}");
    let quoted = ["name: x", "targets: [", "bad: {"][line - 1];
    assert!(shown.contains(&format!("{line} | {quoted}")), "{shown}");
}

/// `chaos attack` as an experiment: one step, one attack on one target, no
/// probe, and a max-duration that leaves the kernel deadline to end it.
#[test]
fn one_attack_is_a_one_step_experiment_without_hypothesis() {
    use std::str::FromStr;

    use crate::units::Percent;
    let fault = Fault::NetLoss(NetLoss {
        percent: Percent::from_str("5").unwrap(),
        burst: None,
        filter: Default::default(),
        interfaces: Vec::new(),
    });
    let d = Duration::from_secs(30);
    let e = super::Experiment::one_attack(fault, Selector::Pid(42), false, d);
    assert_eq!(e.origin, super::model::Origin::Attack);
    assert_eq!(e.name, "net-loss-1");
    assert!(e.hypothesis.probes.is_empty() && e.abort.is_empty());
    let attacks: Vec<_> = e.attacks().collect();
    assert_eq!(attacks.len(), 1);
    assert_eq!((attacks[0].id.as_str(), attacks[0].duration), ("net-loss-1", d));
    assert_eq!(e.target(&attacks[0].target).map(|t| &t.selector), Some(&Selector::Pid(42)));
    assert_eq!(e.method_length(), d);
    assert!(e.max_duration > d, "the runner must not cut the attack short");
}

/// A `ChaosExperiment` object (what `kubectl apply` takes) is the same
/// experiment: `spec` is the document, `metadata.name` its name, and a
/// problem in it is reported at its own line.
#[test]
fn a_chaos_experiment_object_is_the_experiment_it_wraps() {
    let body = "targets: {app: {pod-selector: app=web}}\nhypothesis:\n  probes:\n    - name: up\n      tcp: {address: 'web:80'}\nmethod:\n  - {fault: kill, name: restart, process-name: nginx, duration: 30s}\n";
    let bare = ok(&format!("name: restarts\n{body}"));
    let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
    let wrapped = format!(
        "apiVersion: chaos.dev/v1alpha1\nkind: ChaosExperiment\nmetadata:\n  name: restarts\n  namespace: shop\n  labels: {{team: web}}\nspec:\n{indented}"
    );
    let e = ok(&wrapped);
    assert_eq!((e.name.as_str(), e.targets.len(), e.method.len()), ("restarts", 1, 1));
    assert_eq!(e.method[0].attacks[0].id, "restart");
    assert_eq!(e.method[0].attacks[0].fault, bare.method[0].attacks[0].fault);
    assert_eq!(e.targets[0].selector, bare.targets[0].selector);

    // The step is on line 14 of the wrapped file: messages keep its lines.
    let d = errors(&wrapped.replace("duration: 30s", "duration: 30"));
    assert!(d.list.iter().any(|p| p.span.start.line == 14), "{d}");
    let h = has(
        &errors(&wrapped.replace("chaos.dev/v1alpha1", "chaos.dev/v1")),
        "`apiVersion` is `chaos.dev/v1`",
        1,
        13,
    );
    assert!(h.unwrap().contains("apiVersion: chaos.dev/v1alpha1"));
    has(&errors(&wrapped.replace("kind: ChaosExperiment", "kind: ChaosAttack")), "not ChaosExperiment", 2, 7);
    has(&errors(&wrapped.replace("spec:\n", "spec:\n  name: other\n")), "its name is `metadata.name`", 8, 3);
    has(&errors(&wrapped.replace("  name: restarts\n", "")), "missing field `name` in the metadata", 4, 3);
    has(&errors(&wrapped.replace("metadata:", "metdata:")), "unknown field `metdata`", 3, 1);
    has(
        &errors("apiVersion: chaos.dev/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: x}\nspec: [a]\n"),
        "the spec of a ChaosExperiment must be a mapping",
        4,
        7,
    );
}
