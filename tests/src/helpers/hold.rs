//! TCP clients for the net-reset tests: connections held open and watched
//! (how each one ended, and whether the rest still carry data), and a
//! conversation that reconnects after each failure, recording when and
//! how it failed — what a connection pool sees.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;

use super::{Background, arg, command, monotonic_ns, ready, stdin_closed};
use crate::fixtures::process::Place;

/// How a held connection ended: the error's kind (`ConnectionAborted`,
/// `ConnectionReset`), or `Eof`.
fn ending(result: std::io::Result<usize>) -> Option<String> {
    match result {
        Ok(0) => Some("Eof".into()),
        Ok(_) => None,
        Err(e) => Some(format!("{:?}", e.kind())),
    }
}

/// `tcp-hold --to ADDR:PORT --count N`: open N connections to an echo
/// server (each proven by a round trip), then watch them until stdin
/// closes; then send one more byte on each and wait 500 ms for its echo.
/// Prints `{"ended": {kind: n}, "alive": n}`: `alive` the connections that
/// echoed the last byte.
pub fn hold(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let count: usize = arg(args, "--count")?;
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        c.set_nodelay(true)?;
        c.write_all(b"x")?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte)?;
        conns.push(c);
    }
    // Per connection: bytes echoed since the first, and how it ended.
    let state = Arc::new(Mutex::new(vec![(0u64, None::<String>); count]));
    for (i, c) in conns.iter().enumerate() {
        let (mut c, state) = (c.try_clone()?, state.clone());
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                let read = c.read(&mut byte);
                let mut s = state.lock().expect("no panics while held");
                match ending(read) {
                    None => s[i].0 += 1,
                    Some(end) => {
                        s[i].1 = Some(end);
                        return;
                    }
                }
            }
        });
    }
    let closed = stdin_closed();
    ready()?;
    while !closed.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut conns {
        // A write on an aborted socket fails; its reader said how it ended.
        let _ = c.write_all(b"y");
    }
    std::thread::sleep(Duration::from_millis(500));
    let s = state.lock().map_err(|_| anyhow::anyhow!("a reader panicked"))?;
    let mut ended = serde_json::Map::new();
    for end in s.iter().filter_map(|(_, e)| e.as_ref()) {
        let n = ended.get(end).and_then(serde_json::Value::as_u64).unwrap_or(0);
        ended.insert(end.clone(), json!(n + 1));
    }
    let alive = s.iter().filter(|(echoed, e)| e.is_none() && *echoed >= 1).count();
    println!("{}", json!({ "ended": ended, "alive": alive }));
    Ok(())
}

/// `tcp-redial --to ADDR:PORT`: a conversation with an echo server (a byte
/// every 20 ms) that, when its connection fails, records when and how and
/// connects again, until stdin closes. Prints `{"failures": [[ns, kind]],
/// "done": [ns...]}` (CLOCK_MONOTONIC; `done`: completed round trips).
pub fn redial(args: &[String]) -> anyhow::Result<()> {
    let to: SocketAddr = arg(args, "--to")?;
    let connect = || -> anyhow::Result<TcpStream> {
        let c = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(c)
    };
    let mut conn = connect()?;
    let closed = stdin_closed();
    ready()?;
    let (mut done, mut failures) = (Vec::new(), Vec::new());
    let mut byte = [0u8; 1];
    while !closed.load(std::sync::atomic::Ordering::SeqCst) {
        let round = conn.write_all(b"x").and_then(|()| {
            loop {
                match conn.read(&mut byte) {
                    Ok(0) => break Err(ErrorKind::UnexpectedEof.into()),
                    Ok(_) => break Ok(()),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if closed.load(std::sync::atomic::Ordering::SeqCst) {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        });
        match round {
            Ok(()) => done.push(monotonic_ns()),
            Err(e) => {
                failures.push(json!([monotonic_ns(), format!("{:?}", e.kind())]));
                // A reset may also catch the next connection still opening
                // (its connect fails): that is a failure too.
                conn = loop {
                    match connect() {
                        Ok(c) => break c,
                        Err(e) => {
                            let kind = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
                            failures.push(json!([
                                monotonic_ns(),
                                format!("{:?}", kind.unwrap_or(ErrorKind::Other))
                            ]));
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{}", json!({ "failures": failures, "done": done }));
    Ok(())
}

/// What a `tcp-hold` saw.
#[derive(Debug)]
pub struct Held {
    /// Ended connections, by how: `ConnectionAborted`, `ConnectionReset`...
    pub ended: std::collections::BTreeMap<String, u64>,
    pub alive: u64,
}

impl Held {
    pub fn ended(&self, kind: &str) -> u64 {
        self.ended.get(kind).copied().unwrap_or(0)
    }

    pub fn total_ended(&self) -> u64 {
        self.ended.values().sum()
    }
}

/// A running `tcp-hold`.
pub struct Hold(Background);

impl Hold {
    pub fn start(place: Place<'_>, to: SocketAddr, count: usize) -> anyhow::Result<Self> {
        let args = ["--to".into(), to.to_string(), "--count".into(), count.to_string()];
        Ok(Self(Background::start(place, command("tcp-hold", &args))?))
    }

    pub fn finish(self) -> anyhow::Result<Held> {
        let v = self.0.finish()?;
        let ended = v["ended"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("bad tcp-hold output {v}"))?
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        let alive = v["alive"].as_u64().ok_or_else(|| anyhow::anyhow!("bad tcp-hold output {v}"))?;
        Ok(Held { ended, alive })
    }
}

/// What a `tcp-redial` saw.
#[derive(Debug)]
pub struct Redialed {
    /// When each failure happened (CLOCK_MONOTONIC ns), and its kind.
    pub failures: Vec<(u64, String)>,
    pub done: Vec<u64>,
}

/// A running `tcp-redial`.
pub struct Redial(Background);

impl Redial {
    pub fn start(place: Place<'_>, to: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self(Background::start(place, command("tcp-redial", &["--to".into(), to.to_string()]))?))
    }

    pub fn finish(self) -> anyhow::Result<Redialed> {
        let v = self.0.finish()?;
        let bad = || anyhow::anyhow!("bad tcp-redial output {v}");
        let failures = v["failures"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .filter_map(|f| Some((f[0].as_u64()?, f[1].as_str()?.to_owned())))
            .collect();
        let done =
            v["done"].as_array().ok_or_else(bad)?.iter().filter_map(serde_json::Value::as_u64).collect();
        Ok(Redialed { failures, done })
    }
}
