//! HTTP probes, and the small blocking HTTP/1.1 client they (and the
//! Prometheus probe) use: plain HTTP over `std::net`, one connection per
//! check, every step bounded by the check's deadline. Health endpoints and
//! Prometheus servers are reached over plain HTTP inside a cluster; for
//! anything else, a `command` probe can run `curl`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use regex::Regex;

use super::Sample;

/// Read at most this much of a response body: health checks are small, and
/// a probe must not buffer a download.
const MAX_BODY: usize = 1 << 20;

/// A parsed `http://host[:port]/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = if let Some(r) = text.strip_prefix("http://") {
            r
        } else if text.starts_with("https://") {
            return Err(format!(
                "{text}: https is not supported by chaos's built-in client; probe the plain-HTTP port, \
                 or use a command probe (`run: curl -fsS {text}`)"
            ));
        } else {
            return Err(format!("{text} is not an http:// URL; write e.g. http://10.0.0.5:8080/health"));
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
        if host.is_empty() {
            return Err(format!("{text} has no host; write e.g. http://10.0.0.5:8080/health"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text}: port `{p}` is not a number from 1 to 65535"))?,
        };
        Ok(Self { host, port, path })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 { host } else { format!("{host}:{}", self.port) }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
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
        }
    }

    pub fn run(&self, timeout: Duration) -> Sample {
        let started = Instant::now();
        let response =
            request(&self.url, &self.method, &self.headers, self.body.as_deref(), started + timeout);
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

/// One request on a fresh connection; every step ends by `deadline`.
pub fn request(
    url: &HttpUrl,
    method: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    deadline: Instant,
) -> Result<Response, String> {
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
    let timeout_msg = |what: &str| format!("timed out {what} {url}");
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut stream = None;
    let mut last_err = String::from("no address");
    for addr in &addrs {
        let Some(t) = left() else { return Err(timeout_msg("connecting to")) };
        match TcpStream::connect_timeout(addr, t) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timeout_msg("connecting to")),
            Err(e) => last_err = format!("connecting to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let _ = stream.set_nodelay(true);
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: chaos-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if let Some(b) = body {
        req += &format!("Content-Length: {}\r\n", b.len());
    }
    req += "\r\n";
    if let Some(b) = body {
        req += b;
    }
    let Some(t) = left() else { return Err(timeout_msg("sending to")) };
    stream.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    stream.write_all(req.as_bytes()).map_err(|e| io_msg("sending the request to", url, &e, &timeout_msg))?;
    // Read until the headers are complete, then as the framing says.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(format!("{url}: response headers longer than 64 KiB"));
        }
        let n = read_some(&mut stream, &mut chunk, &left, url, &timeout_msg)?;
        if n == 0 {
            return Err(format!("{url}: connection closed before a complete response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| {
            format!("{url}: not an HTTP response: {:?}", status_line.chars().take(60).collect::<String>())
        })?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    let mut raw = buf[header_end..].to_vec();
    let no_body =
        method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if chunked {
        loop {
            match dechunk(&raw) {
                Ok(Some(body)) => break body,
                Ok(None) => {}
                Err(e) => return Err(format!("{url}: {e}")),
            }
            if raw.len() > MAX_BODY + 64 * 1024 {
                // Enough to judge; the rest is not read.
                break dechunk_partial(&raw);
            }
            let n = read_some(&mut stream, &mut chunk, &left, url, &timeout_msg)?;
            if n == 0 {
                return Err(format!("{url}: connection closed inside a chunked body"));
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    } else {
        let want = length.unwrap_or(usize::MAX).min(MAX_BODY);
        while raw.len() < want {
            let n = read_some(&mut stream, &mut chunk, &left, url, &timeout_msg)?;
            if n == 0 {
                if length.is_some() {
                    return Err(format!("{url}: connection closed after {} of {want} body bytes", raw.len()));
                }
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        raw.truncate(want.min(raw.len()));
        raw
    };
    Ok(Response { status, body })
}

fn read_some(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    left: &impl Fn() -> Option<Duration>,
    url: &HttpUrl,
    timeout_msg: &impl Fn(&str) -> String,
) -> Result<usize, String> {
    let Some(t) = left() else { return Err(timeout_msg("waiting for the response of")) };
    stream.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    stream.read(chunk).map_err(|e| io_msg("reading the response of", url, &e, timeout_msg))
}

fn io_msg(what: &str, url: &HttpUrl, e: &std::io::Error, timeout_msg: &impl Fn(&str) -> String) -> String {
    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
        timeout_msg(if what.starts_with("reading") { "waiting for the response of" } else { "sending to" })
    } else {
        format!("{what} {url}: {e}")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode a complete chunked body; `None` while more bytes are needed.
fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find(&raw[i..], b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&raw[i..i + eol]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim().to_owned();
        let size =
            usize::from_str_radix(&size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        i += eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < i + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
}

/// Whatever complete chunks a too-long body has.
fn dechunk_partial(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(eol) = find(&raw[i..], b"\r\n") {
        let text = String::from_utf8_lossy(&raw[i..i + eol]).into_owned();
        let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap_or_default().trim(), 16) else {
            break;
        };
        i += eol + 2;
        if size == 0 || raw.len() < i + size {
            break;
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
        if out.len() >= MAX_BODY || i > raw.len() {
            break;
        }
    }
    out.truncate(MAX_BODY);
    out
}

#[cfg(test)]
mod tests {
    use std::{io::BufRead, net::TcpListener, thread};

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
        assert!(HttpUrl::parse("https://x/").unwrap_err().contains("https is not supported"));
        assert!(HttpUrl::parse("ftp://x/").unwrap_err().contains("not an http:// URL"));
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

    #[test]
    fn chunked_bodies() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap().unwrap(), b"abcde");
        assert_eq!(dechunk(b"3\r\nab").unwrap(), None);
        assert!(dechunk(b"zz\r\n").is_err());
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
        let h = thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..conns {
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
            }
            requests
        });
        (HttpUrl::parse(&format!("http://127.0.0.1:{port}/health")).unwrap(), h)
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
        assert!(req.contains("\r\nX-Team: sre\r\n") && req.contains("Host: 127.0.0.1:"), "{req}");
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
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            Duration::ZERO,
            1,
        );
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(2)).unwrap();
        assert_eq!(r.body, b"ok");
        let (url, _s) = serve("HTTP/1.0 200 OK\r\n\r\nuntil close", Duration::ZERO, 1);
        let r = request(&url, "GET", &[], None, Instant::now() + Duration::from_secs(2)).unwrap();
        assert_eq!(r.body, b"until close");
    }
}
