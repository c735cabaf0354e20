//! Reference-counted attachments: a link (or any attachment) that several
//! attacks share is made by the first and released by the last.

use std::collections::BTreeMap;

use crate::error::Result;

/// Attachments by key (a device, a cgroup, a program), each with the
/// number of attacks using it.
pub(super) struct LinkSet<K, L> {
    links: BTreeMap<K, (L, usize)>,
}

impl<K, L> Default for LinkSet<K, L> {
    fn default() -> Self {
        Self { links: BTreeMap::new() }
    }
}

impl<K: Ord, L> LinkSet<K, L> {
    /// One more user of `key`: `attach` makes the attachment when it is the
    /// first (and nothing is counted when that fails).
    pub fn acquire(&mut self, key: K, attach: impl FnOnce() -> Result<L>) -> Result<()> {
        if let Some((_, users)) = self.links.get_mut(&key) {
            *users += 1;
        } else {
            self.links.insert(key, (attach()?, 1));
        }
        Ok(())
    }

    /// One user fewer of `key`: the attachment, to release, when that was
    /// the last.
    pub fn release(&mut self, key: &K) -> Option<L> {
        let (_, users) = self.links.get_mut(key)?;
        *users -= 1;
        if *users > 0 {
            return None;
        }
        self.links.remove(key).map(|(link, _)| link)
    }

    /// The attachment of `key`, to update what it carries.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut L> {
        self.links.get_mut(key).map(|(link, _)| link)
    }
}
