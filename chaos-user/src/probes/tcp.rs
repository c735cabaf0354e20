//! TCP connect probes: the service accepts connections, fast enough.

use std::{
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::Sample;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpCheck {
    /// `host:port`, resolved at every check (a name may move).
    pub address: String,
    pub max_latency: Option<Duration>,
}

impl TcpCheck {
    /// Check that `address` has the form `host:port` (not that it resolves:
    /// validation must not depend on the machine it runs on).
    pub fn validate_address(address: &str) -> Result<(), String> {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("`{address}` has no port; write host:port, e.g. 10.0.0.5:5432"))?;
        if host.trim_matches(['[', ']']).is_empty() {
            return Err(format!("`{address}` has no host; write host:port, e.g. 10.0.0.5:5432"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(format!("`{port}` in `{address}` is not a port from 1 to 65535")),
        }
    }

    pub fn run(&self, timeout: Duration) -> Sample {
        let started = Instant::now();
        let addrs = match resolve(&self.address, started + timeout) {
            Ok(a) => a,
            Err(e) => return Sample::fail(started.elapsed(), e),
        };
        let mut last = format!("{} resolved to no address", self.address);
        for addr in addrs {
            let Some(left) =
                (started + timeout).checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
            else {
                break;
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(_) => {
                    let latency = started.elapsed();
                    let summary = format!("connected to {addr} in {}ms", latency.as_millis());
                    return match self.max_latency {
                        Some(max) if latency > max => Sample::fail(
                            latency,
                            format!("{summary}: slower than max-latency {}ms", max.as_millis()),
                        ),
                        _ => Sample::pass(latency, summary),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = format!("timed out connecting to {addr}");
                }
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        if started.elapsed() >= timeout && !last.starts_with("timed out") {
            last = format!("timed out connecting to {}", self.address);
        }
        Sample::fail(started.elapsed(), last)
    }
}

/// Resolve `address` (`host:port`), giving up at `deadline`.
///
/// `getaddrinfo` has no timeout of its own: with a DNS server that does not
/// answer, it blocks for resolv.conf's `timeout`×`attempts` per server (10 s
/// by default) — under a network fault, exactly when a probe must report on
/// time. So it runs on a helper thread and the probe stops waiting at the
/// deadline; the helper ends when the C library gives up, and its result is
/// dropped. A literal address resolves at once, without a thread. The
/// helper is spawned by the probe's thread, so it inherits the probe's
/// network namespace (namespaces are per thread: setns(2)).
pub fn resolve(address: &str, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
    let Some(left) = left else { return Err(format!("timed out before resolving {address}")) };
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel(1);
    let name = address.to_owned();
    std::thread::Builder::new()
        .name("chaos-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
        })
        .map_err(|e| format!("cannot start a thread to resolve {address}: {e}"))?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("cannot resolve {address}: {e}")),
        Err(_) => Err(format!("timed out after {}ms resolving {address}", started.elapsed().as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn addresses() {
        assert!(TcpCheck::validate_address("10.0.0.5:5432").is_ok());
        assert!(TcpCheck::validate_address("db.internal:5432").is_ok());
        assert!(TcpCheck::validate_address("[::1]:80").is_ok());
        assert!(TcpCheck::validate_address("db").unwrap_err().contains("no port"));
        assert!(TcpCheck::validate_address("db:http").unwrap_err().contains("not a port"));
        assert!(TcpCheck::validate_address(":80").unwrap_err().contains("no host"));
    }

    #[test]
    fn connects_and_fails_with_reasons() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let ok = TcpCheck { address: addr.clone(), max_latency: None }.run(Duration::from_secs(1));
        assert!(ok.ok && ok.detail.starts_with("connected to 127.0.0.1:"), "{ok:?}");
        let strict =
            TcpCheck { address: addr, max_latency: Some(Duration::ZERO) }.run(Duration::from_secs(1));
        assert!(!strict.ok && strict.detail.contains("slower than max-latency"), "{strict:?}");
        drop(l);
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused =
            TcpCheck { address: format!("127.0.0.1:{port}"), max_latency: None }.run(Duration::from_secs(1));
        assert!(!refused.ok && refused.detail.contains("refused"), "{refused:?}");
    }

    #[test]
    fn names_and_literals_resolve() {
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(resolve("127.0.0.1:80", far).unwrap(), vec!["127.0.0.1:80".parse().unwrap()]);
        assert_eq!(resolve("[::1]:80", far).unwrap(), vec!["[::1]:80".parse().unwrap()]);
        assert!(resolve("localhost:80", far).unwrap().iter().all(|a| a.ip().is_loopback()));
        assert!(resolve("localhost:80", Instant::now()).unwrap_err().contains("timed out"));
    }
}
