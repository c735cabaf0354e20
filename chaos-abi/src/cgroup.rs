//! How rules are keyed: by cgroup v2 id, matched against a packet's or a
//! task's ancestors so that a rule on a cgroup covers its whole subtree.

/// Deepest cgroup level (root = 0) a target may sit at.
pub const MAX_LEVEL: u32 = 31;

/// Which cgroup levels carry rules of one fault family (one entry of an
/// `Array<Levels>`). The eBPF side walks a packet's or task's ancestors from
/// `deepest` up to the root, looking up only the levels whose bit is set in
/// `mask`: untargeted events cost one lookup per level in use (usually one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// Bit `n` set: some rule targets a cgroup at level `n`.
    pub mask: u32,
    /// The highest set bit of `mask` (0 when empty).
    pub deepest: u32,
}

impl Levels {
    /// The levels of the given per-level rule counts.
    pub fn from_users(users: &[usize]) -> Self {
        let mut l = Self::default();
        for (level, n) in users.iter().enumerate().take(MAX_LEVEL as usize + 1) {
            if *n > 0 {
                l.mask |= 1 << level;
                l.deepest = level as u32;
            }
        }
        l
    }
}

const _: () = assert!(core::mem::size_of::<Levels>() == 8);

crate::pod!(Levels);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_track_the_deepest_rule() {
        assert_eq!(Levels::from_users(&[]), Levels::default());
        assert_eq!(Levels::from_users(&[0, 2, 0, 1]), Levels { mask: 0b1010, deepest: 3 });
    }
}
