//! `pause`: the target's processes frozen through cgroup v2's freezer, in
//! cycles or for the whole attack; every ending thaws them — chaos's own
//! stop, its guardian when chaos is killed or hangs, chaos when the
//! guardian is killed, `chaos recover` when both are.
//!
//! Measured from outside the mechanism: a TCP echo server runs in the
//! target (and one in a sibling cgroup), and a client outside both sends
//! it a byte every 20 ms and records when each echo came back. A frozen
//! server echoes nothing (the kernel still takes the byte and acknowledges
//! it), so a freeze is a gap in the client's round trips, and a thaw the
//! first round trip after it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    fixtures::{
        cgroup::Cgroup,
        netns::Netns,
        process::Place,
        runner::{self, ChaosRun},
        scratch::Killed,
    },
    harness::Ctx,
    helpers::{
        echo::{Chat, Echo},
        monotonic_ns,
    },
};

/// A pause with a target and a sibling, each with an echo server, and a
/// client chatting with each from outside both.
struct World {
    ns: Netns,
    target: Cgroup,
    _sibling: Cgroup,
    echo: Option<(Echo, Echo)>,
}

const TARGET: &str = "127.0.0.1:7000";
const SIBLING: &str = "127.0.0.1:7001";
/// The client's pace: a byte every 20 ms (tcp-chat), so a round trip
/// completes every 20 ms plus the loopback round trip while nothing is
/// frozen.
const GAP_NS: u64 = 150_000_000;

impl World {
    fn new() -> anyhow::Result<Self> {
        let ns = Netns::new("pause")?;
        let target = Cgroup::new("pause-target")?;
        let sibling = Cgroup::new("pause-sibling")?;
        let at = |cgroup| Place { netns: Some(&ns), cgroup: Some(cgroup) };
        let echo = (Echo::start(at(&target), TARGET.parse()?)?, Echo::start(at(&sibling), SIBLING.parse()?)?);
        Ok(Self { ns, target, _sibling: sibling, echo: Some(echo) })
    }

    fn chat(&self, to: &str) -> anyhow::Result<Chat> {
        let to: SocketAddr = to.parse()?;
        Chat::start(Place { netns: Some(&self.ns), cgroup: None }, to)
    }

    fn attack(&self, flags: &[&str]) -> anyhow::Result<ChaosRun> {
        let mut args = vec!["attack", "pause", "--cgroup", &self.target.rel];
        args.extend_from_slice(flags);
        let mut run = ChaosRun::start(&args)?;
        run.wait_event("start", Duration::from_secs(30))?;
        Ok(run)
    }

    fn freeze_value(&self) -> String {
        std::fs::read_to_string(self.target.path.join("cgroup.freeze")).unwrap_or_default().trim().to_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failed test may leave the target frozen: thaw it, so that its
        // server can read its stdin's end (the cgroup's removal kills
        // what is left anyway).
        let _ = std::fs::write(self.target.path.join("cgroup.freeze"), "0");
        drop(self.echo.take());
    }
}

/// The gaps of at least `min_ns` between round trips: (start, length).
fn gaps(done: &[u64], min_ns: u64) -> Vec<(u64, u64)> {
    done.windows(2).filter(|w| w[1] - w[0] >= min_ns).map(|w| (w[0], w[1] - w[0])).collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `--every 1s --for 300ms` for 3 s: the target's round trips stop once
/// per freeze, for 300 ms each, and the sibling's never do. The bound on
/// each gap: at least the freeze less the client's pace (a round trip may
/// complete just before the freeze, the next byte goes 20 ms later); at
/// most the freeze plus the pace, plus how late chaos's thread thaws and
/// the server's thread wakes after it (a timer wake-up and two scheduling
/// latencies: on an emulated CPU side by side with another VM, up to 150 ms
/// was allowed for them).
pub fn freezes_in_cycles_and_spares_the_sibling(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new()?;
    let (target, sibling) = (w.chat(TARGET)?, w.chat(SIBLING)?);
    std::thread::sleep(Duration::from_millis(300));
    let run = w.attack(&["--every", "1s", "--for", "300ms", "--duration", "3s"])?;
    let ended = run.wait(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(300));
    let (target, sibling) = (target.finish()?, sibling.finish()?);
    anyhow::ensure!(ended.code() == Some(0), "exit {:?}: {}", ended.code(), ended.stderr);
    anyhow::ensure!(w.freeze_value() == "0", "cgroup.freeze is {} after the attack", w.freeze_value());
    let stop = ended.event("stop").ok_or_else(|| anyhow::anyhow!("no stop event"))?;
    let freezes = stop["counters"]["injected"].as_u64().unwrap_or(0);
    let frozen = gaps(&target, GAP_NS);
    let lengths: Vec<String> = frozen.iter().map(|(_, l)| format!("{:.0}", ms(*l))).collect();
    eprint!("[{freezes} freezes; the target's gaps: {} ms] ", lengths.join(", "));
    anyhow::ensure!(freezes == 3, "{freezes} freezes counted in 3 s at --every 1s: {stop}");
    anyhow::ensure!(
        frozen.len() as u64 == freezes,
        "{} gaps of ≥ {} ms in the target's round trips for {freezes} freezes: {lengths:?}",
        frozen.len(),
        ms(GAP_NS)
    );
    for (_, len) in &frozen {
        anyhow::ensure!(
            (280_000_000..=470_000_000).contains(len),
            "a freeze of 300 ms stopped the target's round trips for {:.0} ms",
            ms(*len)
        );
    }
    let spared = gaps(&sibling, GAP_NS);
    anyhow::ensure!(spared.is_empty(), "the sibling's round trips stopped too: {spared:?}");
    anyhow::ensure!(sibling.len() > 50, "the sibling completed only {} round trips", sibling.len());
    Ok(())
}

/// How soon after an ending the target must answer again: a process
/// waking on a pipe's end or a pidfd, one write to cgroup.freeze, and the
/// server's wake-up (at most 59 ms seen in a 6.12 VM beside two others).
const AT_ONCE_NS: u64 = 500_000_000;

/// The first round trip at or after `from`: when the target answered again.
fn answered_after(done: &[u64], from: u64) -> Option<u64> {
    done.iter().copied().find(|t| *t >= from)
}

/// Each way chaos or its guardian may die thaws the target at once — the
/// other one thaws it — and with both killed, `chaos recover` does. Each
/// bound is the time from the end (chaos's observed exit, the guardian's
/// signal) to the target's next round trip: a process waking on a pipe's
/// end or a pidfd, one write to cgroup.freeze, and the server's wake-up.
pub fn killed_chaos_or_guardian_thaws_at_once(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new()?;

    // kill -9 of chaos: the guardian reads its pipe's end.
    let chat = w.chat(TARGET)?;
    let run = w.attack(&["--duration", "60s"])?;
    let guardian = guardian_of(run.pid)?;
    std::thread::sleep(Duration::from_millis(300));
    let exit = run.watch_exit(Duration::from_secs(10))?;
    run.signal(libc::SIGKILL);
    let exited = exit.join().ok().flatten().ok_or_else(|| anyhow::anyhow!("chaos did not exit"))?;
    std::thread::sleep(Duration::from_millis(700));
    let done = chat.finish()?;
    drop(run.wait(Duration::from_secs(10))?);
    let thawed = answered_after(&done, exited).map(|t| t - exited);
    eprint!("[kill -9 of chaos: thawed {:.0} ms after its exit] ", ms(thawed.unwrap_or(u64::MAX)));
    anyhow::ensure!(thawed.is_some_and(|t| t <= AT_ONCE_NS), "not thawed within 500 ms of chaos's exit");
    anyhow::ensure!(!alive(guardian), "the guardian {guardian} still runs after thawing");
    let recovered = runner::recover()?;
    anyhow::ensure!(recovered.code() == Some(0), "recover: {}", recovered.stderr);
    runner::recover_finds_nothing()?;

    // kill -9 of the guardian: chaos watches its pidfd, thaws, and goes on
    // to its deadline.
    let stop = signal_the_guardian(&w, libc::SIGKILL, "kill -9 of the guardian")?;
    anyhow::ensure!(stop["counters"]["guardian_lost"] == 1, "counters: {}", stop["counters"]);
    // SIGTERM to the guardian (an operator, a service manager): it thaws.
    signal_the_guardian(&w, libc::SIGTERM, "SIGTERM to the guardian")?;

    // Both killed at once: frozen until `chaos recover`.
    let chat = w.chat(TARGET)?;
    let run = w.attack(&["--duration", "60s"])?;
    let guardian = guardian_of(run.pid)?;
    // chaos stopped first: it cannot see the guardian die and thaw.
    run.signal(libc::SIGSTOP);
    signal(guardian, libc::SIGKILL);
    run.signal(libc::SIGKILL);
    drop(run.wait(Duration::from_secs(10))?);
    let both = monotonic_ns();
    std::thread::sleep(Duration::from_secs(1));
    let still = w.freeze_value();
    let recovering = monotonic_ns();
    let recovered = runner::recover()?;
    std::thread::sleep(Duration::from_millis(500));
    let done = chat.finish()?;
    let answered = answered_after(&done, both);
    anyhow::ensure!(still == "1", "cgroup.freeze is {still} with chaos and its guardian both killed");
    anyhow::ensure!(
        answered.is_some_and(|t| t >= recovering),
        "the target answered {:.0} ms after both were killed, before `chaos recover`",
        ms(answered.unwrap_or(0).saturating_sub(both))
    );
    anyhow::ensure!(
        recovered.code() == Some(0) && recovered.events.iter().any(|e| e["outcome"] == "removed"),
        "recover: exit {:?}: {:?} {}",
        recovered.code(),
        recovered.events,
        recovered.stderr
    );
    anyhow::ensure!(w.freeze_value() == "0", "cgroup.freeze is {} after recover", w.freeze_value());
    runner::recover_finds_nothing()?;
    Ok(())
}

/// Send the guardian of a 3 s pause `sig` 300 ms in: the target answers
/// again within [`AT_ONCE_NS`] of it, and chaos still ends at its deadline
/// with exit 0. Returns its stop event.
fn signal_the_guardian(w: &World, sig: i32, what: &str) -> anyhow::Result<serde_json::Value> {
    let chat = w.chat(TARGET)?;
    let run = w.attack(&["--duration", "3s"])?;
    let guardian = guardian_of(run.pid)?;
    std::thread::sleep(Duration::from_millis(300));
    let sent = monotonic_ns();
    signal(guardian, sig);
    let ended = run.wait(Duration::from_secs(30))?;
    let done = chat.finish()?;
    let thawed = answered_after(&done, sent).map(|t| t - sent);
    eprint!("[{what}: thawed after {:.0} ms] ", ms(thawed.unwrap_or(u64::MAX)));
    anyhow::ensure!(thawed.is_some_and(|t| t <= AT_ONCE_NS), "{what}: not thawed within 500 ms");
    anyhow::ensure!(ended.code() == Some(0), "{what}: exit {:?}: {}", ended.code(), ended.stderr);
    ended.event("stop").cloned().ok_or_else(|| anyhow::anyhow!("{what}: no stop event"))
}

/// A chaos that hangs (SIGSTOP) keeps the target frozen only until the
/// deadline: its guardian thaws it then.
pub fn a_hung_chaos_is_thawed_at_the_deadline(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new()?;
    let chat = w.chat(TARGET)?;
    let launched = monotonic_ns();
    let run = w.attack(&["--duration", "3s"])?;
    let seen = monotonic_ns();
    run.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    // Past the latest deadline (the start event's + 3 s), by a second.
    std::thread::sleep(Duration::from_nanos((seen + 4_000_000_000).saturating_sub(monotonic_ns())));
    let state = process_state(run.pid);
    let done = chat.finish()?;
    run.signal(libc::SIGCONT);
    let ended = run.wait(Duration::from_secs(30))?;
    anyhow::ensure!(
        state == Some('T'),
        "chaos was not stopped (state {state:?}) after {:?}",
        stopped_at.elapsed()
    );
    // The deadline lies between the launch and the start event, plus 3 s.
    let (earliest, latest) = (launched + 3_000_000_000, seen + 3_000_000_000);
    let thawed = answered_after(&done, seen + 100_000_000)
        .ok_or_else(|| anyhow::anyhow!("the target never answered again"))?;
    eprint!(
        "[thawed {:.0} ms after the latest deadline, {:.0} ms after the earliest] ",
        ms(thawed) - ms(latest),
        ms(thawed) - ms(earliest)
    );
    anyhow::ensure!(thawed >= earliest, "thawed {:.0} ms before the deadline", ms(earliest - thawed));
    anyhow::ensure!(
        thawed <= latest + 500_000_000,
        "thawed {:.0} ms after the deadline, with chaos stopped",
        ms(thawed - latest)
    );
    anyhow::ensure!(ended.code() == Some(0), "exit {:?}: {}", ended.code(), ended.stderr);
    Ok(())
}

/// nginx's configuration for [`trips_an_http_hypothesis_and_rolls_back`]:
/// in the foreground, everything it writes under `{dir}` (the VM's root
/// filesystem is read-only), a health endpoint, and an access log the
/// test counts the answers in.
const NGINX_CONF: &str = r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {
        listen 127.0.0.1:7080;
        location = /health { default_type text/plain; return 200 "ok\n"; }
    }
}
"#;

/// An experiment whose hypothesis is an HTTP health check of nginx in the
/// target (its master and worker both there): the pause stops its
/// answers, the probe's timeouts violate the hypothesis, and the runner
/// aborts — the target thawed at once, nginx answering again within the
/// recovery window — with exit 1 and the verdict `violated`. (A
/// TCP-connect probe would not notice: the kernel completes a frozen
/// process's handshakes.)
pub fn trips_an_http_hypothesis_and_rolls_back(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new()?;
    let dir = std::env::temp_dir().join(format!("chaos-test-{}-pause", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _dir = Removed(dir.clone());
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, NGINX_CONF.replace("{dir}", &dir.display().to_string()))?;
    let mut nginx = std::process::Command::new("nginx");
    nginx.args(["-e", "stderr", "-p"]).arg(&dir).arg("-c").arg(&conf);
    nginx.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    nginx.stderr(std::fs::File::create(dir.join("stderr"))?);
    // Killed with the test; its worker, which outlives the master's
    // SIGKILL, with the target cgroup.
    let _nginx = Killed(Place { netns: Some(&w.ns), cgroup: Some(&w.target) }.spawn(&mut nginx)?);
    let answers = || {
        std::fs::read_to_string(dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("GET /health") && l.contains("\" 200 "))
            .count()
    };
    // Ready when it answers curl in the namespace.
    let ready = Instant::now();
    while !http_ok(&w.ns, "127.0.0.1:7080")? {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(20),
            "nginx does not answer: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = answers();
    let in_target = std::fs::read_to_string(w.target.procs_file())?.lines().count();
    anyhow::ensure!(in_target >= 2, "nginx's master and worker are not both in the target: {in_target}");
    let yaml = format!(
        "name: pause-trips\n\
         targets:\n  app:\n    cgroup: {cgroup}\n\
         hypothesis:\n  recover-within: 10s\n  probes:\n    - name: health\n      netns: {netns}\n\
         \x20     http:\n        url: http://127.0.0.1:7080/health\n\
         \x20     tolerance:\n        status: 200\n        body-contains: ok\n\
         \x20     interval: 100ms\n      timeout: 1s\n      failures: 2\n\
         method:\n  - name: freeze\n    fault: pause\n    duration: 60s\n",
        cgroup = w.target.rel,
        netns = w.ns.name,
    );
    let file = dir.join("pause.yaml");
    std::fs::write(&file, yaml)?;
    let report = dir.join("report.json");
    let (file, report_arg) = (file.display().to_string(), report.display().to_string());
    let started = Instant::now();
    let ended = runner::run(&["run", &file, "--report", &report_arg, "--no-live"])?;
    let took = started.elapsed();
    let after = w.freeze_value();
    let answered = answers() - before;
    anyhow::ensure!(ended.code() == Some(1), "exit {:?}, expected 1: {}", ended.code(), ended.stderr);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    anyhow::ensure!(report["verdict"] == "violated", "verdict {}", report["verdict"]);
    let abort = &report["abort"];
    anyhow::ensure!(abort["cause"] == "hypothesis" && abort["probe"] == "health", "abort: {abort}");
    let attack = &report["steps"][0]["attacks"][0];
    anyhow::ensure!(attack["status"] == "aborted", "attack: {attack}");
    anyhow::ensure!(after == "0", "cgroup.freeze is {after} after the experiment");
    anyhow::ensure!(took < Duration::from_secs(30), "the 60 s pause was not aborted: the run took {took:?}");
    // The steady state before, and the recovery after the thaw: nginx's
    // own log of the probe's requests it answered.
    anyhow::ensure!(answered >= 2, "nginx answered {answered} of the probe's requests");
    eprint!(
        "[nginx answered {answered} probes; aborted after {:.1} s; inert {} us after the decision] ",
        took.as_secs_f64(),
        abort["inert_after_decision_us"]
    );
    Ok(())
}

/// Whether an HTTP GET of /health at `to`, from `ns`, is answered 200.
fn http_ok(ns: &Netns, to: &str) -> anyhow::Result<bool> {
    let out = Place { netns: Some(ns), cgroup: None }
        .spawn(
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"])
                .arg(format!("http://{to}/health"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null()),
        )?
        .wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout) == "200")
}

struct Removed(std::path::PathBuf);
impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What cannot be paused is refused with exit 3 and left as it was: the
/// root cgroup, chaos's own cgroup (even with --allow-host), a cgroup
/// someone else froze; and bad cycles.
pub fn refusals_leave_everything_as_it_was(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let w = World::new()?;
    let target = w.target.rel.as_str();
    // chaos in a cgroup of the test's, told to pause it (or its parent
    // would be the root here, refused above).
    let own = Cgroup::new("pause-own")?;
    let out = Place { netns: None, cgroup: Some(&own) }
        .spawn(
            std::process::Command::new(runner::bin())
                .args(["attack", "pause", "--cgroup", &own.rel, "--allow-host", "--duration", "5s"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        )?
        .wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.code() == Some(3) && said.contains("holds chaos itself") && out.stdout.is_empty(),
        "chaos pausing its own cgroup: exit {:?}: {said}",
        out.status.code()
    );
    let own_value = std::fs::read_to_string(own.path.join("cgroup.freeze"))?;
    anyhow::ensure!(own_value.trim() == "0", "chaos's own cgroup.freeze is {own_value}");
    let cases: &[(&[&str], &str)] = &[
        (&["--cgroup", "/", "--allow-host"], "is the root cgroup"),
        (&["--cgroup", target, "--every", "1s"], "--every needs --for"),
        (&["--cgroup", target, "--for", "1s"], "--for needs --every"),
        (&["--cgroup", target, "--every", "1s", "--for", "1s"], "never run"),
        (&["--cgroup", target, "--every", "1s", "--for", "1ms"], "too short"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["attack", "pause", "--duration", "5s"];
        args.extend_from_slice(flags);
        runner::run(&args)?.refused(&format!("{flags:?}"), says)?;
        anyhow::ensure!(w.freeze_value() == "0", "{flags:?}: cgroup.freeze is {}", w.freeze_value());
    }
    // Frozen by someone else: not chaos's to thaw.
    std::fs::write(w.target.path.join("cgroup.freeze"), "1")?;
    let frozen = runner::run(&["attack", "pause", "--cgroup", target, "--duration", "5s"])?;
    let still = w.freeze_value();
    std::fs::write(w.target.path.join("cgroup.freeze"), "0")?;
    frozen.refused("a frozen target", "frozen already")?;
    anyhow::ensure!(still == "1", "someone else's freeze was changed to {still}");
    runner::recover_finds_nothing()
}

/// The guardian chaos `pid` started: its child running `chaos guardian`.
fn guardian_of(pid: i32) -> anyhow::Result<i32> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)?.parse::<i32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let guardian = cmdline.split(|b| *b == 0).nth(1) == Some(b"guardian");
        if ppid == Some(pid) && guardian {
            return Ok(child);
        }
    }
    anyhow::bail!("chaos (pid {pid}) has no guardian")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal.
    unsafe { libc::kill(pid, sig) };
}

fn alive(pid: i32) -> bool {
    let state = process_state(pid);
    state.is_some() && state != Some('Z')
}

fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}
