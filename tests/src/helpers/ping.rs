//! Round-trip times with iputils `ping`: the peer's kernel answers (no
//! process to wake there) and ping reads each reply's kernel receive
//! timestamp (SO_TIMESTAMP), so the RTTs carry no scheduling delay of a
//! userspace echo server or of ping itself on the way back — what remains
//! is the network path, the fault, and the send side. The CPU time ping
//! used (user + system, from wait4) is the cost of its sends and receives,
//! tc hooks and qdiscs on the send path included.

use std::{
    io::Read,
    net::IpAddr,
    process::{Command, Stdio},
};

use crate::fixtures::process::Place;

/// What a `ping` run measured.
#[derive(Debug, Clone)]
pub struct Pings {
    /// RTTs in ms of the probes that came back, in send order.
    pub rtts_ms: Vec<f64>,
    pub sent: usize,
    /// CPU time of the ping process (user + system), in ms.
    pub cpu_ms: f64,
    /// Replies ping reported as duplicates (`(DUP!)`).
    pub duplicates: usize,
}

/// The ping command line: numeric, `count` probes `interval_us` apart,
/// each answered within 2 s or lost.
pub fn command(to: IpAddr, count: usize, interval_us: u64) -> Command {
    let mut cmd = Command::new("ping");
    cmd.args(["-n", "-c", &count.to_string(), "-W", "2"])
        .arg("-i")
        .arg(format!("{:.6}", interval_us as f64 / 1e6))
        .arg(to.to_string());
    cmd
}

/// `time=` of each reply line, in icmp_seq order (duplicates ignored).
pub fn parse(out: &str, count: usize) -> Pings {
    let mut by_seq: Vec<Option<f64>> = vec![None; count + 1];
    for line in out.lines() {
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name));
        if let (Some(seq), Some(time)) = (field("icmp_seq="), field("time="))
            && let (Ok(seq), Ok(time)) = (seq.parse::<usize>(), time.parse::<f64>())
            && seq <= count
            && by_seq[seq].is_none()
        {
            by_seq[seq] = Some(time);
        }
    }
    let duplicates = out.lines().filter(|l| l.contains("(DUP!)")).count();
    Pings { rtts_ms: by_seq.into_iter().flatten().collect(), sent: count, cpu_ms: 0.0, duplicates }
}

/// Start ping in `place`; `finish` collects it.
pub struct Running {
    child: std::process::Child,
    count: usize,
}

impl Running {
    pub fn start(place: Place<'_>, to: IpAddr, count: usize, interval_us: u64) -> anyhow::Result<Self> {
        let mut cmd = command(to, count, interval_us);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        Ok(Self { child: place.spawn(&mut cmd)?, count })
    }

    pub fn finish(self) -> anyhow::Result<Pings> {
        let (out, cpu_ms) = wait_with_cpu(self.child)?;
        let mut pings = parse(&out, self.count);
        pings.cpu_ms = cpu_ms;
        Ok(pings)
    }
}

/// Read a child's stdout to the end and reap it with wait4: (stdout, CPU
/// time in ms, user + system).
pub fn wait_with_cpu(mut child: std::process::Child) -> anyhow::Result<(String, f64)> {
    let mut out = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut out)?;
    let mut status = 0;
    // SAFETY: wait4 writes into `status` and `ru`, which outlive the call;
    // the pid is our unreaped child (std's Child never reaped it).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    anyhow::ensure!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Ok((out, ms(ru.ru_utime) + ms(ru.ru_stime)))
}

/// Run `cmd` in `place` to completion: (stdout, CPU time in ms).
pub fn output_with_cpu(place: Place<'_>, cmd: &mut Command) -> anyhow::Result<(String, f64)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    wait_with_cpu(place.spawn(cmd)?)
}

/// Run ping to completion.
pub fn ping(place: Place<'_>, to: IpAddr, count: usize, interval_us: u64) -> anyhow::Result<Pings> {
    Running::start(place, to, count, interval_us)?.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reply_lines_are_parsed_in_order() {
        let out = "PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=50.3 ms\n\
                   64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=61.2 ms\n\
                   64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=61.9 ms (DUP!)\n\
                   --- 10.77.0.2 ping statistics ---\n";
        let p = super::parse(out, 3);
        assert_eq!(p.rtts_ms, vec![61.2, 50.3]);
        assert_eq!(p.sent, 3);
    }
}
