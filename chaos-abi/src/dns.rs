//! DNS faults (`dns-error`): one [`DnsRule`] per target cgroup, read by a
//! tc egress classifier on the devices of the target's network namespaces.
//! A matching query never leaves: the classifier turns it into its own
//! answer (an error code) and hands it back to the device's receive path,
//! or drops it (no answer at all).
//!
//! Names are matched through [`NAMES`], a longest-prefix trie keyed by the
//! query name written backwards ([`name_key`]), so that a suffix pattern
//! (`*.example.com`) and an exact name are both one lookup.

/// `HashMap<u64 /* cgroup id */, DnsRule>`.
pub const RULES: &str = "DNS_RULES";
/// `Array<cgroup::Levels>` with one entry: the levels of [`RULES`]' keys.
pub const LEVELS: &str = "DNS_LEVELS";
/// `PerCpuArray<DnsCounters>`, indexed by [`DnsRule::slot`].
pub const COUNTERS: &str = "DNS_COUNTERS";
/// `LpmTrie<NameKey, u8>`: the names of each attack, [`NAME_MATCH`] or
/// [`NAME_PASS`].
pub const NAMES: &str = "DNS_NAMES";

/// `SockHash<SockKey>`: the target's TCP connections to port 53, added by
/// the `dns_sockops` program when they are established, so that the
/// `dns_msg` program sees what they send.
pub const TCP_SOCKS: &str = "DNS_TCP_SOCKS";
/// Entries of [`TCP_SOCKS`]; a connection leaves it when it closes
/// (`sock_map_unhash`, net/core/sock_map.c), so this bounds the open ones.
pub const MAX_TCP_SOCKS: u32 = 65536;

/// Maximum number of target cgroups with a DNS rule at once.
pub const MAX_RULES: u32 = 1024;
/// Counter slots: the injector's slot numbers are shared by every family.
pub const MAX_SLOTS: u32 = crate::net::MAX_SLOTS;
/// Name patterns per attack.
pub const MAX_NAMES_PER_ATTACK: u32 = 64;
/// Entries of [`NAMES`]: a pattern may add one [`NAME_PASS`] entry.
pub const MAX_NAMES: u32 = 2 * MAX_NAMES_PER_ATTACK * MAX_SLOTS;

/// `threshold` that answers every matching query.
pub const ALWAYS: u64 = 1 << 32;

/// [`DnsRule::action`]: drop the query, so that the client waits for an
/// answer that never comes. Other values are the RCODE of the answer.
pub const ACTION_DROP: u32 = 0x100;
/// RCODEs chaos answers with (RFC 1035 §4.1.1).
pub const RCODE_SERVFAIL: u32 = 2;
pub const RCODE_NXDOMAIN: u32 = 3;
pub const RCODE_REFUSED: u32 = 5;

/// [`NAMES`] values.
pub const NAME_MATCH: u8 = 1;
/// A name a wildcard's prefix covers but the attack does not: the zone's
/// own name under `*.example.com` (a longer, so preferred, prefix).
pub const NAME_PASS: u8 = 0;

/// Bytes of a name in [`NameKey`]: an LPM trie's data is at most 256 bytes
/// (`LPM_DATA_SIZE_MAX`, kernel/bpf/lpm_trie.c), 4 of which are the slot.
pub const NAME_BYTES: usize = 252;
/// Bits of [`NameKey`] before the name.
pub const NAME_KEY_FIXED_BITS: u32 = 32;

/// A DNS fault on one cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsRule {
    /// `bpf_ktime_get_ns()` from which the rule is inert.
    pub deadline_ns: u64,
    /// Act on a matching query when `bpf_get_prandom_u32() < threshold`.
    pub threshold: u64,
    /// Index into [`COUNTERS`], and the first word of the attack's
    /// [`NameKey`]s.
    pub slot: u32,
    /// An RCODE, or [`ACTION_DROP`].
    pub action: u32,
}

/// A key of [`NAMES`]: an attack's slot, then a name backwards.
///
/// A query name `www.example.com` is, on the wire, `\x03www\x07example\x03com\x00`;
/// with each length byte written as `.` and the final zero left out it is
/// `.www.example.com`, and backwards `moc.elpmaxe.www.`. The key is that,
/// then a zero byte that closes the name. A pattern `*.example.com` is
/// the prefix `moc.elpmaxe.` (without the zero), which every name under
/// `example.com` starts with, and `notexample.com` (`moc.elpmaxeton.`)
/// does not; `example.com` is `moc.elpmaxe.\0`, which only that name is.
/// Names longer than [`NAME_BYTES`] are cut: they still match the
/// patterns that are prefixes of what is kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameKey {
    /// [`DnsRule::slot`], big-endian: the trie compares bytes in order.
    pub slot_be: u32,
    pub name: [u8; NAME_BYTES],
}

impl Default for NameKey {
    fn default() -> Self {
        Self { slot_be: 0, name: [0; NAME_BYTES] }
    }
}

/// The [`NAMES`] key of a pattern: `name` lowercase and dot-separated
/// without a final dot (`example.com`; empty for the root), as an exact
/// name (`exact`) or as the suffix of the names below it (`*.name`; the
/// empty name then means every name). Returns the prefix length in bits,
/// or `None` when the name does not fit.
pub fn name_key(slot: u32, name: &[u8], exact: bool) -> Option<(u32, NameKey)> {
    let mut key = NameKey { slot_be: slot.to_be(), name: [0; NAME_BYTES] };
    // `.` before each label, backwards: the label bytes reversed, a `.`
    // after each label.
    let mut len = 0;
    if !name.is_empty() {
        len = name.len() + 1;
        if len > NAME_BYTES {
            return None;
        }
        for (i, b) in name.iter().rev().enumerate() {
            key.name[i] = *b;
        }
        key.name[name.len()] = b'.';
    }
    if exact {
        if len >= NAME_BYTES {
            return None;
        }
        // The closing zero (already there).
        len += 1;
    }
    Some((NAME_KEY_FIXED_BITS + 8 * len as u32, key))
}

/// A key of [`TCP_SOCKS`]: a connection's addresses and ports as
/// `bpf_sock_ops` and `sk_msg_md` both present them (the same conversion,
/// net/core/filter.c), so that the sk_msg program finds its own socket.
/// IPv4 addresses are in the first word of `local` and `remote`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockKey {
    pub family: u32,
    pub local_port: u32,
    pub remote_port: u32,
    pub _pad: u32,
    pub local: [u32; 4],
    pub remote: [u32; 4],
}

/// Per-CPU counters of one attack. The loader sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// The target's DNS queries (to port 53, over UDP or TCP) while the
    /// rule held.
    pub queries: u64,
    /// ... whose name matched a pattern.
    pub matched: u64,
    /// ... answered with the rule's RCODE.
    pub answered: u64,
    /// ... dropped (no answer).
    pub dropped: u64,
    /// Queries that found the rule past its deadline and were passed.
    pub expired: u64,
    /// Queries passed because chaos could not read their name (compressed,
    /// not one question, truncated): never acted on.
    pub unparsed: u64,
}

const _: () = assert!(core::mem::size_of::<DnsRule>() == 24);
const _: () = assert!(core::mem::size_of::<NameKey>() * 8 == NAME_KEY_FIXED_BITS as usize + 8 * NAME_BYTES);
const _: () = assert!(core::mem::size_of::<DnsCounters>() == 48);

const _: () = assert!(core::mem::size_of::<SockKey>() == 48);

crate::pod!(DnsRule, NameKey, DnsCounters, SockKey);

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(bits: u32, key: &NameKey) -> &[u8] {
        &key.name[..((bits - NAME_KEY_FIXED_BITS) / 8) as usize]
    }

    #[test]
    fn names_are_written_backwards_with_a_dot_before_each_label() {
        let (bits, key) = name_key(3, b"www.example.com", true).unwrap();
        assert_eq!(bytes(bits, &key), b"moc.elpmaxe.www.\0");
        assert_eq!(key.slot_be, 3u32.to_be());
        let (bits, key) = name_key(3, b"example.com", false).unwrap();
        assert_eq!(bytes(bits, &key), b"moc.elpmaxe.");
        assert_eq!(name_key(0, b"", false).unwrap().0, NAME_KEY_FIXED_BITS, "every name");
        let (bits, key) = name_key(0, b"", true).unwrap();
        assert_eq!(bytes(bits, &key), b"\0", "the root");
    }

    #[test]
    fn long_names_do_not_fit() {
        let long = [b'a'; NAME_BYTES];
        assert!(name_key(0, &long, false).is_none());
        assert!(name_key(0, &long[..NAME_BYTES - 1], false).is_some());
        assert!(name_key(0, &long[..NAME_BYTES - 1], true).is_none());
        assert!(name_key(0, &long[..NAME_BYTES - 2], true).is_some());
    }
}
