//! A small HTTP service for experiment tests: the system under test, run
//! inside the target cgroup. `/health` answers `ok`; with `--hang` every
//! connection is accepted and never answered (a service that is up but
//! stuck, which health probes see as timeouts).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use super::{Background, arg, command, ready, stdin_closed};
use crate::fixtures::process::Place;

/// `http-server --bind ADDR [--hang]`: serve until stdin closes, then print
/// `{"requests": N}` (requests answered).
pub fn server(args: &[String]) -> anyhow::Result<()> {
    let bind: SocketAddr = arg(args, "--bind")?;
    let hang = args.iter().any(|a| a == "--hang");
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let closed = stdin_closed();
    let answered = Arc::new(AtomicU64::new(0));
    let mut held = Vec::new();
    ready()?;
    while !closed.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) if hang => held.push(conn),
            Ok((conn, _)) => {
                let answered = answered.clone();
                std::thread::spawn(move || {
                    if answer(conn).is_ok() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    println!("{}", json!({ "requests": answered.load(Ordering::SeqCst) }));
    Ok(())
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let healthy = String::from_utf8_lossy(&buf).starts_with("GET /health ");
    let (status, body) = if healthy { ("200 OK", "ok\n") } else { ("404 Not Found", "no\n") };
    write!(conn, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// A running `http-server`.
pub struct Server(Background);

impl Server {
    pub fn start(place: Place<'_>, bind: SocketAddr, hang: bool) -> anyhow::Result<Self> {
        let mut args = vec!["--bind".to_owned(), bind.to_string()];
        if hang {
            args.push("--hang".into());
        }
        Ok(Self(Background::start(place, command("http-server", &args))?))
    }

    /// Stop; the number of requests answered.
    pub fn finish(self) -> anyhow::Result<u64> {
        let v = self.0.finish()?;
        v["requests"].as_u64().ok_or_else(|| anyhow::anyhow!("bad http-server output {v}"))
    }
}
