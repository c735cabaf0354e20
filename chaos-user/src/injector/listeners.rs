//! The incoming part of `net-refuse`: the target's TCP listeners in
//! `CONN_LISTENERS`, and the `sk_lookup` program on each network namespace
//! the target's processes live in (chaos-ebpf/src/conn/incoming.rs).
//!
//! The program sees an incoming SYN's addresses, not the socket the kernel
//! would choose, so chaos lists the listeners when the attack starts: the
//! target's (created in its cgroup subtree, or open in one of its
//! processes: a socket-activated service's listener is systemd's by
//! creation), and, on the same ports, every other listener of those
//! namespaces as a PASS entry — a socket bound to an exact address wins
//! over a wildcard one, and the program must not refuse for the target's
//! wildcard what the kernel would hand to another cgroup's exact socket.
//! Listeners opened after the start are not covered.
//!
//! Entries and links are shared between attacks, with their users counted:
//! a PASS entry of one attack may be another's listener.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use aya::{
    Ebpf,
    maps::HashMap as BpfHashMap,
    programs::{SkLookup, links::Link as _, sk_lookup::SkLookupLink},
};
use chaos_abi::conn::{AF_INET, AF_INET6, ListenerKey, PASS};

use super::{links::LinkSet, maps::map_mut, net::loaded};
use crate::{
    attach::{
        netns::{Netns, NetnsId},
        sock_diag,
    },
    ebpf::describe,
    error::{Error, Result},
    targets::{Target, ids_in_subtree, pids_in_subtree},
};

/// The program (chaos-ebpf/src/conn_incoming.rs).
const PROGRAM: &str = "conn_incoming";

/// `IPPROTO_TCP`.
const TCP: u8 = 6;

/// What one attack claimed: entries (with the value it wrote) and the
/// namespaces whose link it counts.
#[derive(Debug, Default)]
pub struct Claim {
    entries: Vec<(ListenerKey, u64)>,
    namespaces: Vec<NetnsId>,
}

impl Claim {
    /// The number of the target's listener entries (for the start's log).
    pub fn listeners(&self) -> usize {
        self.entries.iter().filter(|(_, v)| *v != PASS).count()
    }
}

/// Every attack's entries and links.
#[derive(Default)]
pub struct Listeners {
    /// The values attacks wrote for each key, one per claim; the map holds
    /// the target's when there is one (see [`effective`]).
    entries: HashMap<ListenerKey, Vec<u64>>,
    /// By the namespace's identity with its cookie where the kernel has
    /// one (Linux 5.14): a namespace that died took its link with it, and
    /// a later one may get its inode number.
    links: LinkSet<NetnsId, SkLookupLink>,
}

impl Listeners {
    /// List the target's listeners on `port` (every port when None), make
    /// their entries, and attach the program to the target's namespaces.
    /// What was claimed before an error is in `claim`, for [`release`].
    pub fn claim(
        &mut self,
        ebpf: &mut Ebpf,
        target: &Target,
        port: Option<u16>,
        claim: &mut Claim,
    ) -> Result<()> {
        let namespaces = Netns::of_subtree(&target.path);
        let mut listeners = Vec::new();
        for ns in &namespaces {
            match ns.run(|| sock_diag::tcp_sockets(sock_diag::LISTEN)) {
                Ok(found) => listeners.extend(found.map_err(|e| listing(target, e))?),
                // The namespace went with its last process.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(listing(target, e)),
            }
        }
        let owned = Owned { cgroups: ids_in_subtree(&target.path), inodes: socket_inodes(target) };
        let wanted = entries(&listeners, &owned, target.id, port).map_err(Error::environment)?;
        if namespaces.is_empty() {
            return Err(Error::environment(format!(
                "{target} has no process, so no listening socket; incoming refusals act on the \
                 listeners the target has when the attack starts: start the service first"
            )));
        }
        if !wanted.values().any(|v| *v != PASS) {
            let on = port.map(|p| format!(" on port {p}")).unwrap_or_default();
            return Err(Error::environment(format!(
                "{target} has no TCP listening socket{on} in the {} network namespace(s) of its \
                 processes; incoming refusals act on the listeners the target has when the attack \
                 starts: start the service first, or check --port",
                namespaces.len()
            )));
        }
        for ns in namespaces {
            // Gone meanwhile (its last process exited): nothing to attach.
            let Ok(ns) = ns.identify() else { continue };
            let prog: &mut SkLookup = loaded(ebpf, PROGRAM)?;
            self.links.acquire(ns.id(), || attach(prog, &ns))?;
            claim.namespaces.push(ns.id());
        }
        let mut map: BpfHashMap<_, ListenerKey, u64> = map_mut(ebpf, chaos_abi::conn::LISTENERS)?;
        for (key, value) in wanted {
            let claims = self.entries.entry(key).or_default();
            if let Some(other) = claims.iter().find(|v| **v != PASS && **v != value && value != PASS) {
                return Err(Error::environment(format!(
                    "the listener on {} of {target} is already refused by an attack on cgroup id \
                     {other}; combine them into one attack",
                    describe_key(&key)
                )));
            }
            claims.push(value);
            claim.entries.push((key, value));
            map.insert(&key, &effective(claims), 0)
                .map_err(|e| Error::kernel("writing a listener entry", e))?;
        }
        Ok(())
    }

    /// Undo a claim: remove its entries (rewriting those another attack
    /// still claims) and release its links.
    pub fn release(&mut self, ebpf: &mut Ebpf, claim: Claim) -> Result<()> {
        let mut result = Ok(());
        match map_mut::<BpfHashMap<_, ListenerKey, u64>>(ebpf, chaos_abi::conn::LISTENERS) {
            Ok(mut map) => {
                for (key, value) in claim.entries {
                    let Some(claims) = self.entries.get_mut(&key) else { continue };
                    if let Some(at) = claims.iter().position(|v| *v == value) {
                        claims.swap_remove(at);
                    }
                    let written = if claims.is_empty() {
                        self.entries.remove(&key);
                        map.remove(&key)
                    } else {
                        map.insert(&key, &effective(claims), 0)
                    };
                    if let Err(e) = written {
                        result = Err(Error::kernel("removing a listener entry", e));
                    }
                }
            }
            Err(e) => result = Err(e),
        }
        for id in claim.namespaces {
            if let Some(link) = self.links.release(&id) {
                let detached = link.detach().map_err(|e| {
                    Error::kernel(
                        format!("detaching {PROGRAM} from network namespace {}", id.inode),
                        anyhow::anyhow!(describe(&e)),
                    )
                });
                result = result.and(detached);
            }
        }
        result
    }
}

fn listing(target: &Target, e: std::io::Error) -> Error {
    Error::kernel(format!("listing the TCP listeners of {target}"), e)
}

/// Attach the program to a namespace: an fd-owned link (`bpf_link_create`
/// with `BPF_SK_LOOKUP`), which the kernel detaches when chaos exits or
/// the namespace dies (net/core/net_namespace.c, `netns_bpf_pernet_pre_exit`).
fn attach(prog: &mut SkLookup, ns: &Netns) -> Result<SkLookupLink> {
    let context = || format!("attaching {PROGRAM} to network namespace {}", ns.inode);
    let file = ns.open().map_err(|e| Error::kernel(context(), e))?;
    let id = prog.attach(file).map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))?;
    prog.take_link(id).map_err(|e| Error::kernel(context(), anyhow::anyhow!(describe(&e))))
}

/// The value the map holds for a key: the target's (there is at most one
/// other than PASS, [`Listeners::claim`] makes sure), else PASS.
fn effective(claims: &[u64]) -> u64 {
    claims.iter().copied().find(|v| *v != PASS).unwrap_or(PASS)
}

/// What makes a listener the target's.
struct Owned {
    /// The target's cgroup and its descendants: a socket's cgroup is its
    /// creator's.
    cgroups: HashSet<u64>,
    /// The socket inodes the target's processes hold open.
    inodes: HashSet<u32>,
}

impl Owned {
    fn owns(&self, s: &sock_diag::TcpSocket) -> bool {
        s.cgroup_id.is_some_and(|id| self.cgroups.contains(&id))
            || (s.inode != 0 && self.inodes.contains(&s.inode))
    }
}

/// The inodes of the sockets the target's processes have open
/// (`/proc/PID/fd/N` → `socket:[INODE]`). A process that exits meanwhile
/// has none.
fn socket_inodes(target: &Target) -> HashSet<u32> {
    let mut inodes = HashSet::new();
    for pid in pids_in_subtree(&target.path) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let link = link.to_string_lossy();
            if let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) {
                inodes.extend(inode.parse::<u32>().ok());
            }
        }
    }
    inodes
}

/// The entries for `listeners` (those of every namespace of the target):
/// `target` for each key of the target's listeners on `port`, PASS for each
/// key of another's listener on one of those ports. An error when a key is
/// both (sockets of the target and of another cgroup sharing an address
/// and port through `SO_REUSEPORT`: refusing one would refuse the other).
fn entries(
    listeners: &[sock_diag::TcpSocket],
    owned: &Owned,
    target: u64,
    port: Option<u16>,
) -> std::result::Result<HashMap<ListenerKey, u64>, String> {
    if listeners.iter().any(|s| s.cgroup_id.is_none()) {
        return Err(
            "the kernel does not report the cgroup of sockets (INET_DIAG_CGROUP_ID, Linux 5.8)".into()
        );
    }
    let mut out = HashMap::new();
    let ours = |s: &sock_diag::TcpSocket| owned.owns(s) && port.is_none_or(|p| s.local.port() == p);
    for s in listeners.iter().filter(|s| ours(s)) {
        out.extend(keys(s).into_iter().map(|k| (k, target)));
    }
    let ports: HashSet<u16> = out.keys().map(|k| k.port).collect();
    for s in listeners.iter().filter(|s| !owned.owns(s) && ports.contains(&s.local.port())) {
        for key in keys(s) {
            if out.get(&key) == Some(&target) {
                return Err(format!(
                    "{} is shared by a listener of the target and one of another cgroup \
                     (SO_REUSEPORT): refusing the target's connections would refuse the other's; \
                     no incoming refusal there is exact",
                    describe_key(&key)
                ));
            }
            out.insert(key, PASS);
        }
    }
    Ok(out)
}

/// The keys under which the program finds a listener: its own address and
/// port, and for an IPv6 wildcard listener that accepts IPv4 too, the IPv4
/// wildcard (the program sees those SYNs as IPv4). An IPv4-mapped address
/// is the IPv4 address.
fn keys(s: &sock_diag::TcpSocket) -> Vec<ListenerKey> {
    let port = s.local.port();
    let key = |family, addr| ListenerKey { addr, port, family, protocol: TCP };
    match s.local.ip() {
        IpAddr::V4(v4) => vec![key(AF_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0])],
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return vec![key(AF_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0])];
            }
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            let mut keys = vec![key(AF_INET6, [word(0), word(1), word(2), word(3)])];
            if v6.is_unspecified() && !s.v6only {
                keys.push(key(AF_INET, [0; 4]));
            }
            keys
        }
    }
}

/// A key as `ADDRESS:PORT`, for messages.
fn describe_key(k: &ListenerKey) -> String {
    let addr = if k.family == AF_INET {
        IpAddr::from(k.addr[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in k.addr.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    };
    SocketAddr::new(addr, k.port).to_string()
}

#[cfg(test)]
mod tests {
    use sock_diag::TcpSocket;

    use super::*;

    const TARGET: u64 = 77;
    const OTHER: u64 = 5;

    fn owned() -> Owned {
        Owned { cgroups: HashSet::from([TARGET, 78]), inodes: HashSet::from([900]) }
    }

    fn listener(addr: &str, cgroup: u64, inode: u32) -> TcpSocket {
        TcpSocket::listener(addr.parse().unwrap(), cgroup, inode, false)
    }

    fn key(addr: &str) -> ListenerKey {
        let a: SocketAddr = addr.parse().unwrap();
        keys(&TcpSocket::listener(a, 0, 0, true))[0]
    }

    #[test]
    fn a_dual_stack_wildcard_listener_also_answers_ipv4() {
        let k = keys(&listener("[::]:80", TARGET, 1));
        assert_eq!(k.len(), 2);
        assert_eq!((k[0].family, k[0].addr, k[0].port, k[0].protocol), (AF_INET6, [0; 4], 80, TCP));
        assert_eq!((k[1].family, k[1].addr), (AF_INET, [0; 4]));
        let only = keys(&TcpSocket::listener("[::]:80".parse().unwrap(), TARGET, 1, true));
        assert_eq!(only.len(), 1);
        let mapped = keys(&listener("[::ffff:10.0.0.1]:80", TARGET, 1));
        assert_eq!((mapped[0].family, mapped[0].addr[0]), (AF_INET, u32::from_ne_bytes([10, 0, 0, 1])));
        let v6 = keys(&listener("[2001:db8::1]:443", TARGET, 1));
        assert_eq!(v6[0].addr[0], u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]));
        assert_eq!(v6[0].addr[3], u32::from_ne_bytes([0, 0, 0, 1]));
        assert_eq!(describe_key(&v6[0]), "[2001:db8::1]:443");
        assert_eq!(describe_key(&key("10.0.0.1:80")), "10.0.0.1:80");
    }

    #[test]
    fn the_targets_listeners_and_others_on_their_ports() {
        let all = [
            listener("0.0.0.0:80", TARGET, 1),
            listener("10.0.0.2:80", OTHER, 2),
            listener("0.0.0.0:22", OTHER, 3),
            // A descendant's, and one held by a target process (socket
            // activation: created by another cgroup).
            listener("127.0.0.1:8080", 78, 4),
            listener("10.0.0.1:9000", OTHER, 900),
        ];
        let e = entries(&all, &owned(), TARGET, None).unwrap();
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!(e[&key("0.0.0.0:80")], TARGET);
        assert_eq!(e[&key("10.0.0.2:80")], PASS);
        assert_eq!(e[&key("127.0.0.1:8080")], TARGET);
        assert_eq!(e[&key("10.0.0.1:9000")], TARGET);
        assert!(!e.contains_key(&key("0.0.0.0:22")));
        let on_80 = entries(&all, &owned(), TARGET, Some(80)).unwrap();
        assert_eq!(on_80.len(), 2, "{on_80:?}");
        assert!(entries(&all, &owned(), TARGET, Some(443)).unwrap().is_empty());
    }

    #[test]
    fn a_port_shared_with_another_cgroup_is_refused() {
        let shared = [listener("0.0.0.0:80", TARGET, 1), listener("0.0.0.0:80", OTHER, 2)];
        let e = entries(&shared, &owned(), TARGET, None).unwrap_err();
        assert!(e.contains("0.0.0.0:80") && e.contains("SO_REUSEPORT"), "{e}");
        let mut unknown = listener("0.0.0.0:80", TARGET, 1);
        unknown.cgroup_id = None;
        let e = entries(&[unknown], &owned(), TARGET, None).unwrap_err();
        assert!(e.contains("Linux 5.8"), "{e}");
    }

    #[test]
    fn the_map_holds_the_targets_value_over_a_pass() {
        assert_eq!(effective(&[PASS, TARGET, PASS]), TARGET);
        assert_eq!(effective(&[PASS]), PASS);
    }
}
