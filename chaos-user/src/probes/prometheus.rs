//! Prometheus probes: an instant query (`/api/v1/query`), healthy when
//! every series it returns is within the thresholds.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Sample, http::HttpUrl};

#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusCheck {
    /// The server, e.g. `http://prometheus:9090` (a path prefix is kept).
    pub server: HttpUrl,
    pub query: String,
    /// Healthy when every value is below this (strictly).
    pub below: Option<f64>,
    /// Healthy when every value is above this (strictly).
    pub above: Option<f64>,
}

impl PrometheusCheck {
    pub fn query_url(&self) -> HttpUrl {
        let base = self.server.path.split('?').next().unwrap_or_default().trim_end_matches('/');
        HttpUrl { path: format!("{base}/api/v1/query?query={}", encode(&self.query)), ..self.server.clone() }
    }

    /// `< 0.01`, `> 5`, or both: for reports.
    pub fn threshold(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.above {
            parts.push(format!("> {a}"));
        }
        if let Some(b) = self.below {
            parts.push(format!("< {b}"));
        }
        parts.join(" and ")
    }

    pub fn run(&self, timeout: Duration) -> Sample {
        let started = Instant::now();
        let url = self.query_url();
        let response = super::http::request(&url, "GET", &[], None, started + timeout);
        let latency = started.elapsed();
        let response = match response {
            Ok(r) => r,
            Err(e) => return Sample::fail(latency, e),
        };
        let values = match parse(&response.body) {
            Ok(v) => v,
            Err(e) => return Sample::fail(latency, format!("{} (HTTP {})", e, response.status)),
        };
        if values.is_empty() {
            return Sample::fail(latency, format!("`{}` returned no data", self.query));
        }
        for (labels, v) in &values {
            let ok = !v.is_nan() && self.below.is_none_or(|b| *v < b) && self.above.is_none_or(|a| *v > a);
            if !ok {
                return Sample::fail(latency, format!("{labels} = {v}, expected {}", self.threshold()));
            }
        }
        let shown: Vec<String> = values.iter().take(3).map(|(l, v)| format!("{l} = {v}")).collect();
        let more = if values.len() > 3 { format!(" (+{} series)", values.len() - 3) } else { String::new() };
        Sample::pass(latency, format!("{}{more}", shown.join(", ")))
    }
}

/// `(labels, value)` of each series of an instant query's answer.
fn parse(body: &[u8]) -> Result<Vec<(String, f64)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not a Prometheus API answer: {e}"))?;
    if v["status"] != "success" {
        let err = v["error"].as_str().unwrap_or("no error message");
        return Err(format!("Prometheus answered {}: {err}", v["status"]));
    }
    let number = |pair: &Value| -> Result<f64, String> {
        let text = pair.get(1).and_then(Value::as_str).ok_or("a sample without a value")?;
        match text {
            "+Inf" | "Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            t => t.parse::<f64>().map_err(|_| format!("value {t:?} is not a number")),
        }
    };
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("scalar") => Ok(vec![("scalar".into(), number(&data["result"])?)]),
        Some("vector") => data["result"]
            .as_array()
            .ok_or("vector without a result list")?
            .iter()
            .map(|s| Ok((labels(&s["metric"]), number(&s["value"])?)))
            .collect(),
        Some("matrix") => {
            Err("the query returns a range vector; write an instant query (no [5m] at the end)".into())
        }
        other => Err(format!("unexpected result type {other:?}")),
    }
}

fn labels(metric: &Value) -> String {
    let Some(m) = metric.as_object() else { return "{}".into() };
    let name = m.get("__name__").and_then(Value::as_str).unwrap_or_default();
    let rest: Vec<String> = m
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Percent-encode a query parameter (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        net::TcpListener,
    };

    use super::*;

    #[test]
    fn encodes_queries_and_keeps_prefixes() {
        let c = PrometheusCheck {
            server: HttpUrl::parse("http://prom:9090/prometheus/").unwrap(),
            query: "sum(rate(x{code=~\"5..\"}[1m]))".into(),
            below: Some(1.0),
            above: None,
        };
        assert_eq!(
            c.query_url().path,
            "/prometheus/api/v1/query?query=sum%28rate%28x%7Bcode%3D~%225..%22%7D%5B1m%5D%29%29"
        );
    }

    #[test]
    fn parses_vectors_and_scalars() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"api"},"value":[1700000000.1,"1"]},
            {"metric":{},"value":[1700000000.1,"NaN"]}]}}"#;
        let v = parse(vector).unwrap();
        assert_eq!(v[0], ("up{job=\"api\"}".into(), 1.0));
        assert!(v[1].1.is_nan());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"+Inf"]}}"#;
        assert_eq!(parse(scalar).unwrap()[0].1, f64::INFINITY);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse(err).unwrap_err().contains("parse error"));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse(matrix).unwrap_err().contains("instant query"));
    }

    /// A fake Prometheus answering `body` to every query.
    fn server(body: &'static str) -> (HttpUrl, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut first = String::new();
            BufReader::new(s.try_clone().unwrap()).read_line(&mut first).unwrap();
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            first
        });
        (url, h)
    }

    #[test]
    fn thresholds_decide() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1,"0.5"]}]}}"#;
        let (url, h) = server(body);
        let check =
            PrometheusCheck { server: url, query: "errors".into(), below: Some(1.0), above: Some(0.1) };
        let s = check.run(Duration::from_secs(2));
        assert!(s.ok, "{s:?}");
        assert!(h.join().unwrap().starts_with("GET /api/v1/query?query=errors HTTP/1.1"));
        let (url, _h) = server(body);
        let s = PrometheusCheck { server: url, query: "errors".into(), below: Some(0.2), above: None }
            .run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("{job=\"api\"} = 0.5, expected < 0.2"), "{s:?}");
        let (url, _h) = server(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        let s = PrometheusCheck { server: url, query: "absent".into(), below: Some(1.0), above: None }
            .run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("returned no data"), "{s:?}");
    }
}
