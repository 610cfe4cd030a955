//! Slotted series (`syscope_common::maps::MapKind::Slots`): a series key is
//! hashed once to find or claim its slot; writers that keep the slot (a
//! thread caches its syscalls' slots, a socket its request and RTT slots)
//! then add to an array element, which
//! the verifier turns into an address computation, with no hash lookup.
//!
//! A kept slot is checked against the slot's generation on every use: the
//! agent evicts a series by deleting its key and then moving the slot's
//! generation, and hands the slot back to the free queue, zeroed, only an
//! interval later. An update that passed the check just before the move
//! still lands in the old series' slot, where that last read counts it.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{Array, HashMap, Queue},
};
use syscope_common::{Histogram, SlotRef};

use crate::helpers::EEXIST;

/// One slotted map: keys to slots, values, generations, free slots.
pub(crate) struct Slots<K: 'static> {
    pub keys: &'static HashMap<K, SlotRef>,
    pub values: &'static Array<Histogram>,
    pub gens: &'static Array<u32>,
    pub free: &'static Queue<u32>,
}

impl<K> Slots<K> {
    /// The value of `r`, if its slot is still the same series'.
    #[inline(always)]
    pub(crate) fn live(&self, r: SlotRef) -> Option<*mut Histogram> {
        let gen = self.gens.get_ptr(r.slot)?;
        // SAFETY: a valid array value pointer; the agent writes it, hence a
        // volatile read.
        if unsafe { core::ptr::read_volatile(gen) } != r.gen {
            return None;
        }
        self.values.get_ptr_mut(r.slot)
    }

    /// The slot `key` maps to. A preallocated hash reuses a deleted
    /// element at once: between the lookup and the load the agent may have
    /// deleted `key` and another CPU stored a new key, with its own slot,
    /// in the same element. A second lookup that finds the same element
    /// still holding the same slot rules that out (a key deleted since
    /// finds nothing, or another element).
    #[inline(always)]
    fn find(&self, key: &K) -> Option<SlotRef> {
        let p = self.keys.get_ptr(key)?;
        // SAFETY: a valid value pointer of a preallocated hash (its memory
        // stays mapped); a stale read is caught below.
        let r = unsafe { core::ptr::read_volatile(p) };
        // Read through `p` (the same element when equal): verifiers before
        // 6.x do not take a pointer equal to a valid one as valid.
        let again = self.keys.get_ptr(key)?;
        // SAFETY: as above.
        (again == p && unsafe { core::ptr::read_volatile(p) } == r).then_some(r)
    }

    /// The slot of `key` and its value: found, or claimed from the free
    /// queue. `None`: no free slot (the map is full).
    #[inline(always)]
    pub(crate) fn resolve(&self, key: &K) -> Option<(SlotRef, *mut Histogram)> {
        if let Some(r) = self.find(key) {
            // A stale generation: the agent deleted the key since this
            // lookup, so claiming a new slot below succeeds.
            if let Some(h) = self.live(r) {
                return Some((r, h));
            }
        }
        let slot = self.free.pop().ok().flatten()?;
        let gen = self.gens.get_ptr(slot).map_or(0, |g| {
            // SAFETY: as in `live`.
            unsafe { core::ptr::read_volatile(g) }
        });
        let r = SlotRef { slot, gen };
        match self.keys.insert(key, r, BPF_NOEXIST as u64) {
            Ok(()) => self.live(r).map(|h| (r, h)),
            Err(e) => {
                // Another CPU claimed a slot for the key first (use that
                // one), or the key hash is full: this slot goes back.
                let _ = self.free.push(slot, 0);
                if e != EEXIST {
                    return None;
                }
                let r = self.find(key)?;
                self.live(r).map(|h| (r, h))
            }
        }
    }
}
