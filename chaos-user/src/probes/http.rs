//! HTTP(S) probes, and the blocking client they (and the Prometheus probe
//! and the metrics tests) use.
//!
//! The client is `ureq` 3 with rustls (ring as its crypto provider, so
//! nothing links OpenSSL): a small, well-kept, synchronous client that does
//! HTTP/1.1 framing (chunked, close-delimited), TLS, redirects and per-phase
//! timeouts, which fits probes that run on a thread of their own and must
//! never outlive their `timeout`. Each check builds its own agent with no
//! connection pool: a check measures a fresh connection, as a new client of
//! the service would see it under the fault.
//!
//! Every phase is bounded by the check's deadline through ureq's global
//! timeout — name resolution included: ureq's default resolver runs
//! `getaddrinfo` on a helper thread and stops waiting at the deadline when a
//! timeout is set (ureq 3.5, `unversioned/resolver.rs`), so a DNS server
//! that never answers cannot hold a probe past its timeout. The helper
//! thread itself lives on until the C library gives up (resolv.conf
//! `timeout`×`attempts`, 10 s by default), then exits; it was spawned by the
//! probe's thread, so it resolves in the probe's network namespace.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use regex::Regex;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::Sample;

/// Read at most this much of a response body: health checks are small, and
/// a probe must not buffer a download.
const MAX_BODY: usize = 1 << 20;

/// Redirects a probe follows unless its `follow-redirects:` says otherwise.
pub const DEFAULT_REDIRECTS: u32 = 5;

/// The most `follow-redirects:` may ask for: a longer chain is a loop.
pub const MAX_REDIRECTS: u32 = 20;

/// The largest `ca-file:` read: bundles of every public CA are ~250 KiB.
const MAX_CA_FILE: u64 = 4 << 20;

/// A parsed `http[s]://host[:port]/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{text} is not an http:// or https:// URL; write e.g. http://10.0.0.5:8080/health"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{text}: credentials in URLs are not supported; use an Authorization header"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) =
                v6.split_once(']').ok_or_else(|| format!("{text}: unterminated IPv6 address in the URL"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{text}: unexpected `{after}` after the IPv6 address")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.contains(|c: char| c.is_whitespace() || c.is_control() || "/?#[]@".contains(c)) {
            return Err(format!("{text}: `{host}` is not a host name or address"));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text}: the path has a space or control character; percent-encode it"));
        }
        if host.is_empty() {
            return Err(format!("{text} has no host; write e.g. http://10.0.0.5:8080/health"));
        }
        let port = match port {
            None => Self::default_port(tls),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text}: port `{p}` is not a number from 1 to 65535"))?,
        };
        Ok(Self { tls, host, port, path })
    }

    fn default_port(tls: bool) -> u16 {
        if tls { 443 } else { 80 }
    }

    /// `host[:port]`, the port left out when it is the scheme's.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == Self::default_port(self.tls) { host } else { format!("{host}:{}", self.port) }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

/// Which response statuses count as healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    /// `200`, `2xx`, or several of those.
    pub fn parse_one(text: &str) -> Result<(u16, u16), String> {
        let t = text.trim();
        if t.len() == 3
            && let Some(c) = t.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok())
            && (1..=5).contains(&c)
        {
            return Ok((c * 100, c * 100 + 99));
        }
        match t.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok((code, code)),
            _ => Err(format!("`{t}` is not an HTTP status; write e.g. 200, 2xx or [200, 204]")),
        }
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self(vec![(200, 299)])
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{}xx", lo / 100) })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// An HTTP health check: the request, and what counts as healthy.
#[derive(Clone, Debug)]
pub struct HttpCheck {
    pub url: HttpUrl,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub status: StatusSet,
    pub max_latency: Option<Duration>,
    pub body_contains: Option<String>,
    pub body_matches: Option<Regex>,
    /// How the client connects: extra trust roots, redirects.
    pub client: ClientOptions,
}

/// Client settings beyond the request itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// A PEM bundle of CA certificates trusted besides the built-in
    /// (Mozilla) roots, e.g. a private CA.
    pub ca_file: Option<PathBuf>,
    /// Redirects followed; 0 judges the redirect response itself.
    pub max_redirects: u32,
}

impl HttpCheck {
    pub fn get(url: HttpUrl) -> Self {
        Self {
            url,
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            status: StatusSet::default(),
            max_latency: None,
            body_contains: None,
            body_matches: None,
            client: ClientOptions { ca_file: None, max_redirects: DEFAULT_REDIRECTS },
        }
    }

    pub fn run(&self, timeout: Duration) -> Sample {
        let started = Instant::now();
        let response = request_with(
            &self.url,
            &self.method,
            &self.headers,
            self.body.as_deref(),
            started + timeout,
            &self.client,
        );
        let latency = started.elapsed();
        let response = match response {
            Ok(r) => r,
            Err(e) => return Sample::fail(latency, e),
        };
        let summary = format!("{} in {}ms", response.status, latency.as_millis());
        if !self.status.contains(response.status) {
            return Sample::fail(
                latency,
                format!("status {} (expected {}) in {}ms", response.status, self.status, latency.as_millis()),
            );
        }
        if let Some(max) = self.max_latency
            && latency > max
        {
            return Sample::fail(
                latency,
                format!("{summary}: slower than max-latency {}ms", max.as_millis()),
            );
        }
        let body = String::from_utf8_lossy(&response.body);
        if let Some(needle) = &self.body_contains
            && !body.contains(needle.as_str())
        {
            return Sample::fail(latency, format!("{summary}: body does not contain {needle:?}"));
        }
        if let Some(re) = &self.body_matches
            && !re.is_match(&body)
        {
            return Sample::fail(latency, format!("{summary}: body does not match /{re}/"));
        }
        Sample::pass(latency, summary)
    }
}

/// A response: status and (at most [`MAX_BODY`] bytes of) body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One request on a fresh connection, following no redirect; every step
/// ends by `deadline`.
pub fn request(
    url: &HttpUrl,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    deadline: Instant,
) -> Result<Response, String> {
    request_with(url, method, headers, body, deadline, &ClientOptions::default())
}

/// One request (and its redirects) on fresh connections; every step, name
/// resolution included, ends by `deadline`.
pub fn request_with(
    url: &HttpUrl,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    deadline: Instant,
    options: &ClientOptions,
) -> Result<Response, String> {
    let started = Instant::now();
    let Some(budget) = deadline.checked_duration_since(started).filter(|d| !d.is_zero()) else {
        return Err(format!("timed out before requesting {url}"));
    };
    let roots = match &options.ca_file {
        None => RootCerts::WebPki,
        Some(path) => RootCerts::from(trust_roots(path)?),
    };
    let config = ureq::Agent::config_builder()
        // The whole call, redirects and body included. The phase limits
        // below are the same budget: whichever phase is under way when it
        // runs out is named in the error.
        .timeout_global(Some(budget))
        .timeout_resolve(Some(budget))
        .timeout_connect(Some(budget))
        .timeout_recv_response(Some(budget))
        .timeout_recv_body(Some(budget))
        .http_status_as_error(false)
        .max_redirects(options.max_redirects)
        // Past the limit: an error saying so, not the last 3xx response
        // judged as the service's answer. (With 0, ureq returns the 3xx.)
        .max_redirects_will_error(true)
        .save_redirect_history(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(format!("chaos-probe/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(roots).build())
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut builder = ureq::http::Request::builder().method(method).uri(url.to_string());
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let bad_request = |e: ureq::http::Error| format!("{url}: cannot make the request: {e}");
    let result = match body {
        Some(b) => agent.run(builder.body(b.to_owned()).map_err(bad_request)?),
        None => agent.run(builder.body(()).map_err(bad_request)?),
    };
    let mut response = result.map_err(|e| describe(&e, url, started, options))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    // Enough to judge a health check; the rest is not read.
    let read = response.body_mut().as_reader().take(MAX_BODY as u64).read_to_end(&mut body);
    if let Err(e) = read {
        // ureq's body reader carries its own error inside the io::Error.
        let timed_out =
            matches!(
                e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()),
                Some(ureq::Error::Timeout(_))
            ) || matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
        return Err(if timed_out {
            format!(
                "timed out after {}ms reading the body of {url} (status {status})",
                started.elapsed().as_millis()
            )
        } else {
            format!("reading the body of {url} (status {status}): {e}")
        });
    }
    Ok(Response { status, body })
}

/// Check that `path` is a readable PEM bundle with a certificate.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    trust_roots(path).map(drop)
}

/// The trust roots with `ca_file`: its certificates and the built-in ones.
fn trust_roots(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut pem))
        .map_err(|e| format!("cannot read ca-file {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(format!("ca-file {} is larger than {} MiB", path.display(), MAX_CA_FILE >> 20));
    }
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => roots.push(c),
            Ok(_) => {} // keys and other items are not trust roots
            Err(e) => return Err(format!("ca-file {}: not a PEM bundle: {e}", path.display())),
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "ca-file {} has no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    roots.extend(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| Certificate::from_der(c)));
    Ok(roots)
}

/// What went wrong, in the terms of the probe's URL.
fn describe(e: &ureq::Error, url: &HttpUrl, started: Instant, options: &ClientOptions) -> String {
    use ureq::{Error, Timeout};
    let ms = started.elapsed().as_millis();
    match e {
        Error::Timeout(phase) => {
            let what = match phase {
                Timeout::Resolve => format!("resolving {}", url.host),
                Timeout::Connect => format!("connecting to {url}"),
                Timeout::SendRequest | Timeout::SendBody | Timeout::Await100 => format!("sending to {url}"),
                Timeout::RecvResponse => format!("waiting for the response of {url}"),
                Timeout::RecvBody => format!("reading the body of {url}"),
                _ => format!("requesting {url}"),
            };
            format!("timed out after {ms}ms {what}")
        }
        Error::HostNotFound => format!("cannot resolve {}: no address", url.host),
        Error::TooManyRedirects => format!(
            "{url}: more than {} redirects (raise follow-redirects, or set it to 0 to judge the redirect)",
            options.max_redirects
        ),
        Error::Rustls(tls) => {
            let hint = match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    if options.ca_file.is_some() {
                        ": the server's certificate chains to no CA in ca-file nor the built-in roots"
                    } else {
                        ": the server's certificate chains to no trusted CA; for a private CA, give its PEM \
                         file as `ca-file:`"
                    }
                }
                _ => "",
            };
            format!("TLS with {url}: {tls}{hint}")
        }
        Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            format!("timed out after {ms}ms requesting {url}")
        }
        Error::Io(io) => format!("{url}: {io}"),
        other => format!("{url}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, Write},
        net::TcpListener,
        thread,
    };

    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://10.0.0.5:8080/health?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("10.0.0.5", 8080, "/health?x=1"));
        let u = HttpUrl::parse("http://svc").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(HttpUrl::parse("http://svc?q").unwrap().path, "/?q");
        let u = HttpUrl::parse("http://[::1]:9090/api").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9090));
        assert_eq!(u.to_string(), "http://[::1]:9090/api");
        let u = HttpUrl::parse("https://svc.internal/health").unwrap();
        assert_eq!((u.tls, u.port, u.to_string().as_str()), (true, 443, "https://svc.internal/health"));
        assert_eq!(HttpUrl::parse("https://svc:80/").unwrap().to_string(), "https://svc:80/");
        assert!(HttpUrl::parse("ftp://x/").unwrap_err().contains("not an http:// or https:// URL"));
        assert!(HttpUrl::parse("http://a b/").unwrap_err().contains("not a host"));
        assert!(HttpUrl::parse("http://x/a b").unwrap_err().contains("percent-encode"));
        assert!(HttpUrl::parse("http://x:0/").unwrap_err().contains("port"));
        assert!(HttpUrl::parse("http://:80/").unwrap_err().contains("no host"));
    }

    #[test]
    fn statuses() {
        assert_eq!(StatusSet::parse_one("2xx").unwrap(), (200, 299));
        assert_eq!(StatusSet::parse_one("204").unwrap(), (204, 204));
        assert!(StatusSet::parse_one("700").is_err());
        assert!(StatusSet::parse_one("ok").is_err());
        let s = StatusSet(vec![(200, 200), (300, 399)]);
        assert!(s.contains(200) && s.contains(302) && !s.contains(201));
        assert_eq!(s.to_string(), "200, 3xx");
    }

    /// A one-shot server: answers each connection with `response` after
    /// `delay`, and returns the request it read.
    fn serve(
        response: &'static str,
        delay: Duration,
        conns: usize,
    ) -> (HttpUrl, thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = answer(l, vec![response.to_owned(); conns], delay, Duration::ZERO);
        (HttpUrl::parse(&format!("http://127.0.0.1:{port}/health")).unwrap(), h)
    }

    /// Answer one connection per response, in order: read the request
    /// head, wait `delay`, write the response, keep the connection open
    /// for `hold`; returns the requests read.
    fn answer(
        l: TcpListener,
        responses: Vec<String>,
        delay: Duration,
        hold: Duration,
    ) -> thread::JoinHandle<Vec<String>> {
        thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut s, _) = l.accept().unwrap();
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut req = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    req += &line;
                }
                requests.push(req);
                thread::sleep(delay);
                let _ = s.write_all(response.as_bytes());
                thread::sleep(hold);
            }
            requests
        })
    }

    #[test]
    fn healthy_response_passes_and_sends_a_proper_request() {
        let (url, server) = serve("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nok: yes", Duration::ZERO, 1);
        let mut check = HttpCheck::get(url);
        check.body_contains = Some("ok".into());
        check.body_matches = Some(Regex::new("^ok: (yes|no)$").unwrap());
        check.headers = vec![("X-Team".into(), "sre".into())];
        let s = check.run(Duration::from_secs(2));
        assert!(s.ok, "{s:?}");
        assert!(s.detail.starts_with("200 in "), "{s:?}");
        let req = &server.join().unwrap()[0];
        assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
        // Header names are case-insensitive (RFC 9110 5.1); the client
        // sends them in lower case.
        let lower = req.to_ascii_lowercase();
        assert!(lower.contains("\r\nx-team: sre\r\n") && lower.contains("\r\nhost: 127.0.0.1:"), "{req}");
    }

    #[test]
    fn tolerance_failures_say_why() {
        let (url, _s) = serve("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", Duration::ZERO, 1);
        let s = HttpCheck::get(url).run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("status 503 (expected 2xx)"), "{s:?}");

        let (url, _s) = serve("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusy", Duration::ZERO, 1);
        let mut check = HttpCheck::get(url);
        check.body_contains = Some("ok".into());
        let s = check.run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("does not contain \"ok\""), "{s:?}");

        let (url, _s) =
            serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Duration::from_millis(120), 1);
        let mut check = HttpCheck::get(url);
        check.max_latency = Some(Duration::from_millis(50));
        let s = check.run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("slower than max-latency 50ms"), "{s:?}");
        assert!(s.latency >= Duration::from_millis(120));
    }

    #[test]
    fn timeouts_are_bounded() {
        let (url, _s) =
            serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Duration::from_millis(1500), 1);
        let t = Instant::now();
        let s = HttpCheck::get(url).run(Duration::from_millis(200));
        assert!(!s.ok && s.detail.contains("timed out"), "{s:?}");
        assert!(t.elapsed() < Duration::from_millis(600), "took {:?}", t.elapsed());
    }

    #[test]
    fn refused_connections_fail() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let s = HttpCheck::get(url).run(Duration::from_secs(1));
        assert!(!s.ok && s.detail.contains("refused"), "{s:?}");
    }

    #[test]
    fn chunked_and_close_delimited_responses() {
        let (url, _s) = serve(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;ext=1\r\n, 1\r\n0\r\n\r\n",
            Duration::ZERO,
            1,
        );
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(2)).unwrap();
        assert_eq!(r.body, b"ok, 1");
        let (url, _s) = serve("HTTP/1.0 200 OK\r\n\r\nuntil close", Duration::ZERO, 1);
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(2)).unwrap();
        assert_eq!(r.body, b"until close");
    }

    #[test]
    fn redirects_are_followed_up_to_the_limit() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let moved =
            format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/b\r\nContent-Length: 0\r\n\r\n");
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/a")).unwrap();

        // Followed by default, to the healthy answer.
        let server = answer(l.try_clone().unwrap(), vec![moved.clone(), ok], Duration::ZERO, Duration::ZERO);
        let s = HttpCheck::get(url.clone()).run(Duration::from_secs(2));
        assert!(s.ok && s.detail.starts_with("200 in "), "{s:?}");
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /a ") && requests[1].starts_with("GET /b "), "{requests:?}");

        // follow-redirects: 0 judges the redirect itself.
        let server = answer(l.try_clone().unwrap(), vec![moved.clone()], Duration::ZERO, Duration::ZERO);
        let mut check = HttpCheck::get(url.clone());
        check.client.max_redirects = 0;
        let s = check.run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("status 302 (expected 2xx)"), "{s:?}");
        assert_eq!(server.join().unwrap().len(), 1);

        // A loop ends at the limit, saying so: the first request and two
        // redirects followed.
        let server = answer(l, vec![moved; 3], Duration::ZERO, Duration::ZERO);
        check.client.max_redirects = 2;
        let s = check.run(Duration::from_secs(2));
        assert!(!s.ok && s.detail.contains("more than 2 redirects"), "{s:?}");
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[test]
    fn a_stalled_body_times_out_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        // Headers and part of the body, then nothing for far longer than
        // the probe's timeout.
        let _server = answer(
            l,
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".into()],
            Duration::ZERO,
            Duration::from_secs(3),
        );
        let timeout = Duration::from_millis(300);
        let t = Instant::now();
        let s = HttpCheck::get(url).run(timeout);
        let took = t.elapsed();
        assert!(!s.ok && s.detail.contains("timed out"), "{s:?}");
        // The deadline, plus scheduling on a loaded 2-core machine; far
        // below the 3 s the server holds the body.
        assert!(took >= timeout && took < timeout + Duration::from_millis(700), "took {took:?}");
    }

    #[test]
    fn ca_file_problems_are_named() {
        let dir = std::env::temp_dir().join(format!("chaos-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(trust_roots(&missing).unwrap_err().contains("cannot read ca-file"));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = trust_roots(&empty).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("has no PEM certificate"), "{e}");
    }
}
