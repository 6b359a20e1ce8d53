//! What a distributor remembers of one requester's OTPs (its own issues, and other distributors'
//! use markers), kept in expiry order with a count of every value held.
//!
//! Issuing is the hot path: it asks whether a value is held ([`Ledger::holds`], one hash lookup)
//! and adds one entry, pushing out the entry that expires first when the ledger is full (the
//! front, for this distributor's own OTPs). Verifying looks at every entry, whatever matches, so
//! that its timing says nothing about which one did ([`Ledger::iter`]).

use super::Known;
use crate::role::Millis;
use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Ordered by `expires_at`, the earliest first.
    entries: VecDeque<Known>,
    /// How many entries hold each value.
    values: HashMap<u64, u32>,
}

impl Ledger {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Known> {
        self.entries.iter()
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Known> {
        self.entries.get_mut(index)
    }

    /// Whether some entry (live, used or expired but not yet compacted) holds `value`.
    pub fn holds(&self, value: u64) -> bool {
        self.values.contains_key(&value)
    }

    /// The entry for `otp`, if one is held.
    pub fn find_mut(&mut self, otp: &crate::id::OtpRef) -> Option<&mut Known> {
        // The counter first: a cheap comparison that rules out almost every entry.
        self.entries
            .iter_mut()
            .find(|k| k.otp.counter == otp.counter && k.otp == *otp)
    }

    /// Adds `known` in expiry order. When the ledger holds `max` entries, the one that expires
    /// first is pushed out, except that another distributor's marker never pushes out one of
    /// `me`'s own OTPs; false (and nothing added) when no entry may go.
    pub fn add(&mut self, mut known: Known, max: usize, me: PeerId) -> bool {
        known.own = known.otp.issuer == me;
        if self.entries.len() >= max {
            let own = known.own;
            let Some(i) = self.entries.iter().position(|k| own || !k.own) else {
                return false;
            };
            self.remove(i);
        }
        *self.values.entry(known.value).or_insert(0) += 1;
        // This distributor's own OTPs expire in issue order: at the back, without a search.
        if self
            .entries
            .back()
            .is_none_or(|k| k.expires_at <= known.expires_at)
        {
            self.entries.push_back(known);
        } else {
            let at = self
                .entries
                .partition_point(|k| k.expires_at <= known.expires_at);
            self.entries.insert(at, known);
        }
        true
    }

    /// Forgets every entry that expires before `before`.
    pub fn forget_before(&mut self, before: Millis) {
        while self.entries.front().is_some_and(|k| k.expires_at < before) {
            self.remove(0);
        }
    }

    fn remove(&mut self, index: usize) {
        let Some(k) = self.entries.remove(index) else {
            return;
        };
        if let Some(n) = self.values.get_mut(&k.value) {
            *n -= 1;
            if *n == 0 {
                self.values.remove(&k.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::OtpRef;
    use crate::id::RoundId;

    fn known(issuer: PeerId, counter: u64, value: u64, expires_at: Millis) -> Known {
        Known {
            otp: OtpRef {
                issuer,
                requester: PeerId::random(),
                round: RoundId(1),
                counter,
            },
            value,
            expires_at,
            used: false,
            own: false,
        }
    }

    #[test]
    fn the_earliest_expiry_goes_first_and_a_marker_never_pushes_out_an_own_otp() {
        let (me, other) = (PeerId::random(), PeerId::random());
        let mut l = Ledger::default();
        assert!(l.add(known(me, 1, 11, 300), 3, me));
        assert!(l.add(known(other, 2, 22, 100), 3, me));
        assert!(l.add(known(me, 3, 33, 200), 3, me));
        let order: Vec<Millis> = l.iter().map(|k| k.expires_at).collect();
        assert_eq!(order, [100, 200, 300]);
        // Full: an own OTP pushes out the earliest (the marker, value 22).
        assert!(l.add(known(me, 4, 44, 400), 3, me));
        assert!(!l.holds(22) && l.holds(11) && l.holds(33) && l.holds(44));
        // Full of own OTPs: a marker is refused and nothing changes.
        assert!(!l.add(known(other, 5, 55, 50), 3, me));
        assert_eq!(l.len(), 3);
        assert!(!l.holds(55));
        l.forget_before(301);
        assert_eq!(l.len(), 1);
        assert!(l.holds(44) && !l.holds(11) && !l.holds(33));
    }

    #[test]
    fn a_value_held_twice_stays_held_until_both_are_gone() {
        let me = PeerId::random();
        let mut l = Ledger::default();
        l.add(known(me, 1, 7, 100), 8, me);
        l.add(known(me, 2, 7, 200), 8, me);
        l.forget_before(150);
        assert!(l.holds(7));
        l.forget_before(250);
        assert!(!l.holds(7) && l.is_empty());
    }
}
