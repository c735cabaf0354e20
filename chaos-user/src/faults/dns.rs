//! `dns-error`: the target's DNS lookups of chosen names fail — the
//! resolver answers NXDOMAIN, SERVFAIL or REFUSED, or does not answer at
//! all — while other names resolve as before.
//!
//! It acts on the queries, not on the resolver: each matching query the
//! target sends over UDP to port 53, to any server (a node-local cache on
//! loopback included), is answered by the kernel on its way out or dropped.

use std::{collections::BTreeMap, fmt, str::FromStr};

use chaos_abi::dns::{
    self, ACTION_DROP, DnsRule, MAX_NAMES_PER_ATTACK, NAME_MATCH, NAME_PASS, NameKey, RCODE_NXDOMAIN,
    RCODE_REFUSED, RCODE_SERVFAIL,
};
use serde::{Serialize, Serializer};

use crate::units::Percent;

/// What a matching query gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DnsAnswer {
    /// "No such name" (RCODE 3): final; glibc's getaddrinfo fails with
    /// EAI_NONAME at once.
    #[default]
    Nxdomain,
    /// "Server failure" (RCODE 2): glibc tries its next server, then fails
    /// with EAI_AGAIN.
    Servfail,
    /// "Refused" (RCODE 5): as SERVFAIL for glibc; musl ignores it and
    /// waits (a timeout).
    Refused,
    /// No answer: the query is dropped, and the client times out and
    /// retries (glibc: 5 s per try, 2 tries per server, by default).
    Timeout,
}

impl DnsAnswer {
    fn action(self) -> u32 {
        match self {
            Self::Nxdomain => RCODE_NXDOMAIN,
            Self::Servfail => RCODE_SERVFAIL,
            Self::Refused => RCODE_REFUSED,
            Self::Timeout => ACTION_DROP,
        }
    }
}

/// A name pattern: `example.com` (that name), `*.example.com` (the names
/// below it, not itself) or `*` (every name). Lowercase, without a final
/// dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Below(String),
    All,
}

/// Longest name chaos matches, in text form: what fits in a trie key with
/// its leading dot and closing zero (`chaos_abi::dns::NAME_BYTES`, 252
/// bytes). DNS allows 253 (RFC 1035 §2.3.4: 255 bytes on the wire); names
/// that long are not in use.
const MAX_NAME: usize = dns::NAME_BYTES - 2;

impl FromStr for NamePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if name == "*" {
            return Ok(Self::All);
        }
        let (below, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if rest.is_empty() {
            return Err(format!("name {s:?} is empty: give a name (example.com), *.example.com or *"));
        }
        if rest.len() > MAX_NAME {
            return Err(format!(
                "name {s:?} is {} characters long: chaos matches names of up to {MAX_NAME} (DNS allows 253)",
                rest.len()
            ));
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(format!("name {s:?} has an empty label (two dots in a row)"));
            }
            if label.len() > 63 {
                return Err(format!("name {s:?} has a label longer than 63 characters, the most DNS allows"));
            }
            if label.contains('*') {
                return Err(format!(
                    "name {s:?}: a wildcard is allowed only as the whole first label (*.example.com) or \
                     alone (*)"
                ));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(format!(
                    "name {s:?} has {c:?}: names are letters, digits, '-' and '_' (an internationalised \
                     name in its xn-- form)"
                ));
            }
        }
        Ok(if below { Self::Below(rest.to_owned()) } else { Self::Exact(rest.to_owned()) })
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Below(n) => write!(f, "*.{n}"),
            Self::All => f.write_str("*"),
        }
    }
}

impl Serialize for NamePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl NamePattern {
    /// Whether `name` (lowercase, no final dot) is one of this pattern's.
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => name == n,
            Self::Below(n) => name.strip_suffix(n.as_str()).is_some_and(|head| head.ends_with('.')),
            Self::All => true,
        }
    }
}

/// `dns-error`: answer the target's queries for `names` with `answer`, at
/// `percent`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsError {
    /// The patterns; every name when it holds `*` alone.
    pub names: Vec<NamePattern>,
    pub answer: DnsAnswer,
    pub percent: Percent,
}

impl DnsError {
    /// Every name when `names` is empty.
    pub fn new(names: Vec<NamePattern>, answer: DnsAnswer, percent: Percent) -> Result<Self, String> {
        if percent.value() == 0.0 {
            return Err("--percent 0 fails no lookup; give a share from 0.0000001 to 100".into());
        }
        if names.len() > MAX_NAMES_PER_ATTACK as usize {
            return Err(format!("{} --name given; at most {MAX_NAMES_PER_ATTACK} per attack", names.len()));
        }
        let mut names = if names.is_empty() { vec![NamePattern::All] } else { names };
        names.dedup();
        Ok(Self { names, answer, percent })
    }

    /// Whether a query for `name` (lowercase, no final dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|p| p.matches(name))
    }

    /// The rule the classifier reads.
    pub fn rule(&self, deadline_ns: u64, slot: u32) -> DnsRule {
        DnsRule { deadline_ns, threshold: self.percent.threshold(), slot, action: self.answer.action() }
    }

    /// The attack's entries in `chaos_abi::dns::NAMES`: each pattern's
    /// key, and for `*.example.com` a key for `example.com` itself, which
    /// the wildcard's prefix covers but the pattern does not (so it passes,
    /// unless another pattern has it).
    pub fn name_entries(&self, slot: u32) -> Vec<(u32, NameKey, u8)> {
        let mut entries = BTreeMap::new();
        for pattern in &self.names {
            let (name, exact) = match pattern {
                NamePattern::Exact(n) => (n.as_str(), true),
                NamePattern::Below(n) => (n.as_str(), false),
                NamePattern::All => ("", false),
            };
            // Validated names fit (MAX_NAME).
            let Some((bits, key)) = dns::name_key(slot, name.as_bytes(), exact) else { continue };
            entries.insert((bits, key.name), (key, NAME_MATCH));
            if let NamePattern::Below(n) = pattern
                && let Some((bits, key)) = dns::name_key(slot, n.as_bytes(), true)
            {
                let value = if self.matches(n) { NAME_MATCH } else { NAME_PASS };
                entries.entry((bits, key.name)).or_insert((key, value));
            }
        }
        entries.into_iter().map(|((bits, _), (key, value))| (bits, key, value)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> NamePattern {
        s.parse().unwrap()
    }

    fn fault(names: &[&str]) -> DnsError {
        let names = names.iter().map(|n| pattern(n)).collect();
        DnsError::new(names, DnsAnswer::Nxdomain, Percent::new(100.0).unwrap()).unwrap()
    }

    #[test]
    fn patterns_are_names_wildcards_or_everything() {
        assert_eq!(pattern("Example.COM."), NamePattern::Exact("example.com".into()));
        assert_eq!(pattern("*.example.com"), NamePattern::Below("example.com".into()));
        assert_eq!(pattern("*"), NamePattern::All);
        assert_eq!(pattern("_srv._tcp.x-y.example").to_string(), "_srv._tcp.x-y.example");
        for (bad, why) in [
            ("", "empty"),
            (".", "empty"),
            ("*..", "empty"),
            ("a..b", "empty label"),
            ("a.*.b", "wildcard"),
            ("*x.b", "wildcard"),
            ("a b", "' '"),
            (&"a".repeat(64), "longer than 63"),
            (&["a"; 126].join("."), "251 characters long: chaos matches names of up to 250"),
        ] {
            let e = bad.parse::<NamePattern>().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// The longest name accepted has its entries, exact and below: none
    /// is dropped for not fitting the trie's key.
    #[test]
    fn the_longest_names_fit() {
        let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(58)].join(".");
        assert_eq!(longest.len(), 250);
        assert_eq!(fault(&[&longest]).name_entries(7).len(), 1);
        assert_eq!(fault(&[&format!("*.{longest}")]).name_entries(7).len(), 2);
    }

    #[test]
    fn a_wildcard_covers_the_names_below_not_the_zone() {
        let f = fault(&["*.example.com", "api.internal"]);
        assert!(f.matches("www.example.com") && f.matches("a.b.example.com"));
        assert!(!f.matches("example.com") && !f.matches("notexample.com") && !f.matches("com"));
        assert!(f.matches("api.internal") && !f.matches("x.api.internal"));
        assert!(fault(&[]).matches("anything.at.all"), "no --name: every name");
    }

    /// The trie: a `*.zone` pattern brings a `zone` entry that passes,
    /// unless another pattern wants the zone.
    #[test]
    fn the_zone_of_a_wildcard_passes_unless_another_pattern_has_it() {
        let value_of = |f: &DnsError, name: &str| {
            let (bits, key) = dns::name_key(7, name.as_bytes(), true).unwrap();
            f.name_entries(7).into_iter().find(|(b, k, _)| *b == bits && k.name == key.name).map(|e| e.2)
        };
        assert_eq!(value_of(&fault(&["*.example.com"]), "example.com"), Some(NAME_PASS));
        assert_eq!(value_of(&fault(&["*.example.com", "example.com"]), "example.com"), Some(NAME_MATCH));
        assert_eq!(value_of(&fault(&["*.example.com", "example.com"]), "example.com"), Some(NAME_MATCH));
        assert_eq!(value_of(&fault(&["*.example.com", "*.com"]), "example.com"), Some(NAME_MATCH));
        assert_eq!(value_of(&fault(&["*.example.com", "*"]), "example.com"), Some(NAME_MATCH));
        assert_eq!(fault(&["*.example.com", "example.com"]).name_entries(7).len(), 2);
        let all = fault(&[]).name_entries(7);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, dns::NAME_KEY_FIXED_BITS);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let e = DnsError::new(vec![], DnsAnswer::Nxdomain, Percent::new(0.0).unwrap()).unwrap_err();
        assert!(e.contains("--percent 0"), "{e}");
        let many = (0..=MAX_NAMES_PER_ATTACK).map(|i| pattern(&format!("n{i}.example"))).collect();
        let e = DnsError::new(many, DnsAnswer::Nxdomain, Percent::new(1.0).unwrap()).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn experiment_steps_take_the_same_fields() {
        let step = "{fault: dns-error, names: ['*.example.com', db.internal], answer: servfail, percent: 50, \
                    duration: 1m}";
        let Ok(crate::faults::Fault::DnsError(f)) = crate::faults::fault_of_step(step) else {
            panic!("{step} is not a dns-error")
        };
        assert_eq!(f.names, [pattern("*.example.com"), pattern("db.internal")]);
        assert_eq!((f.answer, f.percent.value()), (DnsAnswer::Servfail, 50.0));
        let e = crate::faults::fault_of_step("{fault: dns-error, names: ['a.*'], duration: 1m}").unwrap_err();
        assert!(e.contains("wildcard"), "{e}");
    }
}
