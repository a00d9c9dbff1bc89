//! What a finished session leaves resident, and how that is kept bounded.
//!
//! Two things outlive a session's instance: the pages its pool slot keeps
//! resident for the next instance (up to the pool's keep-resident size per
//! slot, the pages the connection touched), and the memory its store and
//! host state took from the heap, which the allocator keeps after `free`.
//! Both are worth keeping while the load is steady: a reused slot with its
//! pages in place starts a connection without page faults or TLB shootdowns.
//! After a flood of thousands of connections they are not: every slot the
//! flood touched would stay resident until the process exits.
//!
//! So the pool keeps pages for at most [`RESIDENT_BUDGET`] bytes of unused
//! memory slots (tables, a page or so each, keep none): a session ending
//! while the unused slots already hold that much gives its own pages back
//! ([`crate::sys::release_pages`]) before wasmtime takes its slot back. Slots are reused most-recently-freed first, so under
//! a steady load the warm slots are the ones in use and the budget is not
//! reached; after a flood only the budget's worth stays. And when most of a
//! burst's sessions have ended, the heap's free pages go back to the OS too
//! ([`crate::sys::trim_heap`]). What the heap still holds then is bounded by
//! its arenas (glibc keeps the top of each, a few hundred KiB to a few MiB,
//! and has at most eight per core), not by the size of the burst.

use super::host::Host;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::{Engine, PoolingAllocatorMetrics, Store};

/// Most bytes the instance pool's unused slots keep resident: the pages of
/// 64 slots at the pool's 128 KiB per slot, or of about 115 silent
/// Shadowsocks connections (about 70 KiB each). Under a steady load the
/// unused slots hold far less, since a new connection takes the slot freed
/// last; what this bounds is what a flood leaves behind.
pub const RESIDENT_BUDGET: usize = 8 << 20;

/// Sessions that must have ended since the last peak before the heap is
/// trimmed: trimming walks every arena, so it waits for a real burst.
const TRIM_AFTER_ENDED: usize = 256;

pub(crate) struct Residency {
    pool: Option<PoolingAllocatorMetrics>,
    /// Sessions between deciding to keep their pages and wasmtime taking
    /// their slot back (only then does the pool's count include them).
    /// Counted so that thousands of sessions ending at once, as a flood
    /// does when it closes, cannot all see the pool under budget.
    keeping: AtomicUsize,
    /// Most sessions open at once since the heap was last trimmed.
    peak: AtomicUsize,
}

impl Residency {
    pub fn new(engine: &Engine) -> Self {
        Self {
            pool: engine.pooling_allocator_metrics(),
            keeping: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Notes that `live` sessions are open now (called as one starts).
    pub fn started(&self, live: usize) {
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    /// Drops a finished session's store, first giving its memory's pages back
    /// if the pool's unused slots already keep [`RESIDENT_BUDGET`] resident.
    /// Called on the session's thread, where the instance was used.
    pub fn retire(&self, mut store: Store<Host>) {
        let Some(pool) = &self.pool else {
            return;
        };
        // Sessions ending at this moment count as keeping the most a slot
        // may keep: the pool's own count includes them only once their slots
        // are back.
        let keeping = self.keeping.fetch_add(1, Ordering::Relaxed);
        let kept = pool.unused_memory_bytes_resident() + keeping * super::KEEP_RESIDENT;
        if kept >= RESIDENT_BUDGET {
            if let Some(memory) = store.data().wasi.memory {
                crate::sys::release_pages(memory.data_mut(&mut store));
            }
        }
        drop(store);
        self.keeping.fetch_sub(1, Ordering::Relaxed);
    }

    /// Called once a session's slot and permit are given back, with `live`
    /// sessions still open. The heap is trimmed when most of a burst has
    /// ended (at least [`TRIM_AFTER_ENDED`] sessions since the peak, and no
    /// more than a quarter of the peak still open), and once more when the
    /// last session of a burst of at least [`TRIM_AFTER_ENDED`] / 4 ends;
    /// each time the peak starts again from here.
    pub fn ended(&self, live: usize) {
        let peak = self.peak.load(Ordering::Relaxed);
        let burst_ended = peak >= live + TRIM_AFTER_ENDED && live <= peak / 4;
        let last_of_a_burst = live == 0 && peak >= TRIM_AFTER_ENDED / 4;
        if !(burst_ended || last_of_a_burst) {
            return;
        }
        // One session does the trim; the others see the new peak.
        if self
            .peak
            .compare_exchange(peak, live, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!("{peak} sessions at the peak, {live} now: trimming the heap");
            crate::sys::trim_heap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residency() -> Residency {
        Residency {
            pool: None,
            keeping: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The heap is trimmed once a burst has mostly ended, once per burst,
    /// and not for the ordinary coming and going of a few sessions.
    #[test]
    fn trims_once_after_a_burst() {
        let r = residency();
        for live in 1..=10 {
            r.started(live);
        }
        r.ended(0);
        assert_eq!(r.peak.load(Ordering::Relaxed), 10, "small loads never trim");

        r.started(1000);
        r.ended(900);
        r.ended(300);
        assert_eq!(
            r.peak.load(Ordering::Relaxed),
            1000,
            "not while a third is open"
        );
        r.ended(250);
        assert_eq!(r.peak.load(Ordering::Relaxed), 250, "trimmed at a quarter");
        r.ended(200);
        assert_eq!(r.peak.load(Ordering::Relaxed), 250, "once per burst");
        r.ended(0);
        assert_eq!(
            r.peak.load(Ordering::Relaxed),
            0,
            "and when its last session ends"
        );
        r.started(1);
        r.ended(0);
        assert_eq!(
            r.peak.load(Ordering::Relaxed),
            1,
            "not after a single session"
        );
    }
}
