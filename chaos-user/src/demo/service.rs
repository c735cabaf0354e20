//! The demo's service: a tiny HTTP server (`chaos demo-service`, a hidden
//! subcommand), so the demo needs nothing installed beyond chaos itself.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

/// Serve until killed: `GET /health` answers `ok`, `GET /` says what this
/// is, anything else is a 404.
pub fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = answer(conn);
        });
    }
    Ok(())
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (status, body) = match (method, path.split('?').next().unwrap_or_default()) {
        ("GET" | "HEAD", "/health") => ("200 OK", "ok\n"),
        ("GET" | "HEAD", "/") => ("200 OK", "chaos demo service: try /health\n"),
        _ => ("404 Not Found", "not found\n"),
    };
    let body = if method == "HEAD" { "" } else { body };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::http::{HttpCheck, HttpUrl};

    #[test]
    fn answers_health_checks() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        std::thread::spawn(move || serve(addr));
        let mut check = HttpCheck::get(HttpUrl::parse(&format!("http://{addr}/health")).unwrap());
        check.body_contains = Some("ok".into());
        let mut sample = check.run(Duration::from_secs(1));
        for _ in 0..50 {
            if sample.ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            sample = check.run(Duration::from_secs(1));
        }
        assert!(sample.ok, "{sample:?}");
        let missing = HttpCheck::get(HttpUrl::parse(&format!("http://{addr}/nope")).unwrap());
        assert!(missing.run(Duration::from_secs(1)).detail.contains("status 404"));
    }
}
