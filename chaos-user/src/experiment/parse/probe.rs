//! The hypothesis and abort sections: probes, their checks and tolerances.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use super::Conv;
use crate::{
    experiment::{diag::Span, model::Hypothesis, yaml::Node},
    probes::{
        Check, CommandCheck, HttpCheck, Probe, PrometheusCheck, TcpCheck,
        http::{ClientOptions, DEFAULT_REDIRECTS, HttpUrl, MAX_REDIRECTS, StatusSet},
    },
    units::format_duration,
};

impl Conv {
    pub(super) fn hypothesis(
        &mut self,
        node: &Node,
        at: Span,
        names: &mut BTreeSet<String>,
    ) -> Option<Hypothesis> {
        let f = self.fields(node, at, "`hypothesis`", &["probes", "recover-within"])?;
        let probes = self.required(&f, "probes").and_then(|n| self.probes(n, "hypothesis", names));
        let recover_within = f
            .get("recover-within")
            .map_or(Some(Duration::from_secs(30)), |n| self.positive_duration(n, "recover-within"));
        let probes = probes?;
        if probes.is_empty() {
            self.err(
                f.key_span("probes").unwrap_or(at),
                "the hypothesis has no probes: nothing would tell whether the system coped".into(),
                Some("add at least one probe (http, tcp, command or prometheus)".into()),
            );
            return None;
        }
        Some(Hypothesis { probes, recover_within: recover_within? })
    }

    pub(super) fn probes(
        &mut self,
        node: &Node,
        section: &str,
        names: &mut BTreeSet<String>,
    ) -> Option<Vec<Probe>> {
        let items = self.list(node, if section == "hypothesis" { "probes" } else { section })?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.probe(item, section, names) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn probe(&mut self, node: &Node, section: &str, names: &mut BTreeSet<String>) -> Option<Probe> {
        const KINDS: [&str; 4] = ["http", "tcp", "command", "prometheus"];
        let f = self.fields(
            node,
            node.span,
            &format!("a probe of `{section}`"),
            &[
                "name",
                "http",
                "tcp",
                "command",
                "prometheus",
                "tolerance",
                "interval",
                "timeout",
                "failures",
                "netns",
            ],
        )?;
        let name = self.required(&f, "name").and_then(|n| {
            let name = self.string(n, "name")?;
            if !names.insert(name.clone()) {
                self.err(
                    n.span,
                    format!("a second probe named `{name}`"),
                    Some("probe names are unique across `hypothesis` and `abort`".into()),
                );
            }
            Some(name)
        });
        let given: Vec<&str> = KINDS.into_iter().filter(|k| f.has(k)).collect();
        let kind = match given.as_slice() {
            [one] => Some(*one),
            [] => {
                self.err(
                    f.at,
                    "the probe says nothing to check".into(),
                    Some("give one of `http:`, `tcp:`, `command:` or `prometheus:`".into()),
                );
                None
            }
            many => {
                let last = many.iter().filter_map(|k| f.key_span(k)).max_by_key(|s| s.start).unwrap_or(f.at);
                self.err(
                    last,
                    format!("a probe checks one thing; this one gives {}", many.join(" and ")),
                    Some("split it into probes of their own".into()),
                );
                None
            }
        };
        let tolerance = f.get("tolerance");
        let check = kind.and_then(|k| {
            let spec = f.get(k);
            let spec_at = f.key_span(k).unwrap_or(f.at);
            match spec {
                None => {
                    self.err(spec_at, format!("`{k}` has no value"), None);
                    None
                }
                Some(spec) => self.check(k, spec, spec_at, tolerance, f.key_span("tolerance")),
            }
        });
        let interval =
            f.get("interval").map_or(Some(Duration::from_secs(1)), |n| self.interval(n, "interval"));
        let timeout = f.get("timeout").map_or(Some(Duration::from_secs(1)), |n| self.interval(n, "timeout"));
        let failures = f.get("failures").map_or(Some(1), |n| self.count(n, "failures"));
        let netns = match f.get("netns") {
            None => Some(None),
            Some(n) => self.typed(n, "netns", |t| {
                if t.is_empty() {
                    // `netns: ""` (e.g. a variable left empty): chaos's own.
                    Ok(None)
                } else if !t.starts_with('/') && t.contains('/') {
                    Err(format!("`{t}` is neither a name under /run/netns nor an absolute path"))
                } else {
                    Ok(Some(t.to_owned()))
                }
            }),
        };
        Some(Probe {
            name: name?,
            check: check?,
            interval: interval?,
            timeout: timeout?,
            failures: failures?,
            netns: netns?,
        })
    }

    fn interval(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let d = self.positive_duration(node, what)?;
        if d < Duration::from_millis(10) {
            self.err(
                node.span,
                format!("`{what}` {} is shorter than 10ms", format_duration(d)),
                Some("probes this frequent measure themselves".into()),
            );
            return None;
        }
        Some(d)
    }

    /// One probe's check, with its tolerance (what counts as healthy).
    fn check(
        &mut self,
        kind: &str,
        spec: &Node,
        at: Span,
        tolerance: Option<&Node>,
        tol_at: Option<Span>,
    ) -> Option<Check> {
        let tol_fields: &[&str] = match kind {
            "http" => &["status", "max-latency", "body-contains", "body-matches"],
            "tcp" => &["max-latency"],
            "command" => &["exit-code", "output-contains", "output-matches"],
            _ => &["below", "above"],
        };
        let tol_what = format!("the tolerance of a {kind} probe");
        let tol = match tolerance {
            None => None,
            Some(t) => Some(self.fields(t, tol_at.unwrap_or(at), &tol_what, tol_fields)?),
        };
        let tget = |key: &str| tol.as_ref().and_then(|t| t.get(key));
        let max_latency = tget("max-latency").map(|n| self.positive_duration(n, "max-latency"));
        match kind {
            "http" => {
                let f = self.fields(
                    spec,
                    at,
                    "`http`",
                    &["url", "method", "headers", "body", "ca-file", "follow-redirects"],
                )?;
                let url = self.required(&f, "url").and_then(|n| self.typed(n, "url", HttpUrl::parse));
                let method = f.get("method").map_or(Some("GET".to_owned()), |n| {
                    self.typed(n, "method", |t| {
                        let m = t.to_ascii_uppercase();
                        if ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"].contains(&m.as_str())
                        {
                            Ok(m)
                        } else {
                            Err(format!("`{t}` is not an HTTP method (GET, HEAD, POST, ...)"))
                        }
                    })
                });
                let headers = match f.get("headers") {
                    None => Some(Vec::new()),
                    Some(h) => {
                        match h.as_map() {
                            Some(entries) => entries
                                .iter()
                                .map(|(k, v)| {
                                    let key = k.text().unwrap_or_default().to_owned();
                                    let value = self.string(v, &key)?;
                                    if key.contains([':', '\r', '\n']) || value.contains(['\r', '\n']) {
                                        self.err(
                                            k.span,
                                            format!(
                                                "header `{key}` has a character HTTP headers cannot carry"
                                            ),
                                            None,
                                        );
                                        return None;
                                    }
                                    Some((key, value))
                                })
                                .collect::<Vec<_>>()
                                .into_iter()
                                .collect(),
                            None => {
                                self.err(h.span, format!("wrong type: `headers` must be a mapping of names to values, found {}", h.describe()), None);
                                None
                            }
                        }
                    }
                };
                let body = f.get("body").and_then(|n| self.string(n, "body"));
                let ca_file = match f.get("ca-file") {
                    None => Some(None),
                    Some(n) => self.typed(n, "ca-file", |t| {
                        // Absolute: chaos's working directory is not the
                        // experiment file's, and a relative path would
                        // quietly mean different files from run to run.
                        if t.starts_with('/') {
                            Ok(Some(PathBuf::from(t)))
                        } else {
                            Err(format!(
                                "`{t}` is not an absolute path; write the PEM bundle's full path, e.g. \
                                 /etc/chaos/private-ca.pem"
                            ))
                        }
                    }),
                };
                let max_redirects = f.get("follow-redirects").map_or(Some(DEFAULT_REDIRECTS), |n| {
                    self.typed(n, "follow-redirects", |t| match t {
                        "true" | "yes" => Ok(DEFAULT_REDIRECTS),
                        "false" | "no" => Ok(0),
                        _ => t.parse::<u32>().ok().filter(|n| *n <= MAX_REDIRECTS).ok_or_else(|| {
                            format!(
                                "`{t}` is not a number of redirects from 0 to {MAX_REDIRECTS} (or true/false)"
                            )
                        }),
                    })
                });
                if let (Some(url), Some(ca)) = (&url, f.key_span("ca-file"))
                    && !url.tls
                {
                    self.err(
                        ca,
                        format!("`ca-file` is given but {url} is plain HTTP: no certificate is checked"),
                        Some("use an https:// URL, or remove `ca-file`".into()),
                    );
                    return None;
                }
                let status = match tget("status") {
                    None => Some(StatusSet::default()),
                    Some(n) => match n.as_seq() {
                        Some(items) => items
                            .iter()
                            .map(|i| self.typed(i, "status", StatusSet::parse_one))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .collect::<Option<Vec<_>>>()
                            .map(StatusSet),
                        None => self.typed(n, "status", StatusSet::parse_one).map(|s| StatusSet(vec![s])),
                    },
                };
                let body_contains = tget("body-contains").map(|n| self.string(n, "body-contains"));
                let body_matches = tget("body-matches").map(|n| self.regex(n, "body-matches"));
                Some(Check::Http(HttpCheck {
                    url: url?,
                    method: method?,
                    headers: headers?,
                    body,
                    status: status?,
                    max_latency: max_latency.map_or(Some(None), |d| d.map(Some))?,
                    body_contains: body_contains.map_or(Some(None), |d| d.map(Some))?,
                    body_matches: body_matches.map_or(Some(None), |d| d.map(Some))?,
                    client: ClientOptions { ca_file: ca_file?, max_redirects: max_redirects? },
                }))
            }
            "tcp" => {
                let f = self.fields(spec, at, "`tcp`", &["address"])?;
                let address = self.required(&f, "address").and_then(|n| {
                    self.typed(n, "address", |t| TcpCheck::validate_address(t).map(|()| t.to_owned()))
                });
                Some(Check::Tcp(TcpCheck {
                    address: address?,
                    max_latency: max_latency.map_or(Some(None), |d| d.map(Some))?,
                }))
            }
            "command" => {
                let f = self.fields(spec, at, "`command`", &["run"])?;
                let argv = self.required(&f, "run").and_then(|n| match n.as_seq() {
                    Some(_) => {
                        let argv = self.string_list(n, "run")?;
                        if argv.is_empty() {
                            self.err(
                                n.span,
                                "`run` is an empty list".into(),
                                Some("give the program and its arguments".into()),
                            );
                            return None;
                        }
                        Some(argv)
                    }
                    // A variable's value spliced into shell text would be
                    // shell code (`--set x='$(…)'` runs as root): values go
                    // into argv elements only.
                    None if n.scalar().is_some_and(|s| !s.substituted.is_empty()) => {
                        let names: Vec<String> = n
                            .scalar()
                            .map(|s| s.substituted.iter().map(|(k, _)| format!("${{{k}}}")).collect())
                            .unwrap_or_default();
                        self.err(
                            n.span,
                            format!(
                                "`run` is a shell command (run by `sh -c`) with {} substituted into it: a \
                                 value would be run as shell code",
                                names.join(", ")
                            ),
                            Some(
                                "write `run` as a list, program and arguments, so that each value stays one \
                                 argument: run: [curl, -fsS, \"${url}\"]"
                                    .into(),
                            ),
                        );
                        None
                    }
                    None => self.string(n, "run").map(|s| vec!["sh".into(), "-c".into(), s]),
                });
                let exit_code = tget("exit-code").map_or(Some(0), |n| {
                    self.typed(n, "exit-code", |t| {
                        t.parse::<i32>()
                            .ok()
                            .filter(|c| (0..=255).contains(c))
                            .ok_or_else(|| format!("`{t}` is not an exit code (0 to 255)"))
                    })
                });
                let output_contains = tget("output-contains").map(|n| self.string(n, "output-contains"));
                let output_matches = tget("output-matches").map(|n| self.regex(n, "output-matches"));
                Some(Check::Command(CommandCheck {
                    argv: argv?,
                    exit_code: exit_code?,
                    output_contains: output_contains.map_or(Some(None), |d| d.map(Some))?,
                    output_matches: output_matches.map_or(Some(None), |d| d.map(Some))?,
                }))
            }
            _ => {
                let f = self.fields(spec, at, "`prometheus`", &["url", "query"])?;
                let server = self.required(&f, "url").and_then(|n| self.typed(n, "url", HttpUrl::parse));
                let query = self.required(&f, "query").and_then(|n| self.string(n, "query"));
                let below = tget("below").map(|n| self.number(n, "below"));
                let above = tget("above").map(|n| self.number(n, "above"));
                if below.is_none() && above.is_none() {
                    self.err(
                        tol_at.unwrap_or(at),
                        "a prometheus probe needs a threshold".into(),
                        Some("add e.g.\n  tolerance:\n    below: 0.01".into()),
                    );
                    return None;
                }
                Some(Check::Prometheus(PrometheusCheck {
                    server: server?,
                    query: query?,
                    below: below.map_or(Some(None), |d| d.map(Some))?,
                    above: above.map_or(Some(None), |d| d.map(Some))?,
                }))
            }
        }
    }
}
