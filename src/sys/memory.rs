//! Giving memory back to the OS: a finished instance's linear memory, and the
//! heap's free pages. The only `unsafe` in `sys` on Unix; every call here is specific
//! to Linux or to glibc (elsewhere they do nothing, see each function).
//!
//! Why the runtime needs them: the instance pool keeps the pages a connection
//! touched resident when its slot is freed, so the next connection in that
//! slot starts without page faults or a TLB shootdown. That is what makes
//! short connections cheap, but after a flood of thousands of connections
//! every slot the flood used would keep its pages until the process exits.
//! wasmtime has no call to trim the pool afterwards, so the runtime releases
//! a slot's pages itself, before the instance is dropped, when the pool
//! already keeps enough (see `runtime::residency`).
#![allow(unsafe_code)]

/// Returns `memory`'s pages to the OS. Afterwards every byte reads as it did
/// when the mapping was made: zero, or the module's data image where wasmtime
/// mapped it copy-on-write from the image file. That is exactly the state
/// wasmtime itself restores a pool slot to, so its own reset of the slot then
/// finds nothing written and keeps nothing resident.
///
/// On systems other than Linux and Android this does nothing: there, wasmtime
/// already remaps a freed slot with fresh memory and keeps nothing resident.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn release_pages(memory: &mut [u8]) {
    if memory.is_empty() {
        return;
    }
    // SAFETY: `memory` is borrowed exclusively for the duration of the call,
    // so nothing else reads or writes it while its pages are dropped, and it
    // stays mapped (MADV_DONTNEED never unmaps). The only effect is that its
    // contents become those described above, which for a byte buffer is no
    // different from the caller overwriting it. A failure (EINVAL for a range
    // the kernel will not touch, e.g. a locked one) leaves the pages as they
    // were, which is only a missed saving.
    let _ = unsafe {
        rustix::mm::madvise(
            memory.as_mut_ptr().cast(),
            memory.len(),
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn release_pages(memory: &mut [u8]) {
    let _ = memory;
}

/// Returns the heap's free pages to the OS. glibc keeps memory freed by many
/// threads in its per-thread arenas for reuse and returns only the top of
/// each arena by itself, so after thousands of sessions end, their freed
/// stores and buffers would stay resident; `malloc_trim` walks every arena
/// and releases the whole free pages inside them. Other C libraries (musl,
/// Bionic, the BSDs' and macOS's) return memory on their own and have no
/// such call, so there this does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    // SAFETY: `malloc_trim` takes no pointers and is thread-safe: it locks
    // each arena while it walks it, like `malloc` and `free` do.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

/// Has the heap return a freed top of each arena once it passes 128 KiB,
/// for a process that runs many short-lived session threads (the
/// `water-pt` command; a library user's heap is left alone).
///
/// glibc raises that threshold by itself each time a large block it had
/// mapped separately is freed, up to 64 MiB, and [`trim_heap`] cannot
/// shrink the top of an arena other than the main one; with a thread per
/// session the heap has up to eight arenas per core, so after a flood each
/// kept a few MiB (measured: 28 MB over 34 arena heaps after 10,000
/// connections, 11 MB with the threshold fixed). Fixing the threshold also
/// keeps blocks of 128 KiB and more mapped separately, which costs nothing
/// here: no session allocates one (measured: 55 `mmap` and 22 `munmap` in
/// all over 2,000 connections, as without it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_heap() {
    // SAFETY: `mallopt` takes no pointers and only changes glibc's own
    // parameters, under its lock.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Released pages read as zero again (an anonymous mapping), and the
    /// buffer stays usable.
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn released_pages_read_as_zero() {
        let page = rustix::param::page_size();
        // A whole number of pages, page-aligned, as a pool slot is.
        let mut pages = vec![0u8; page * 5];
        let start = pages.as_ptr().align_offset(page);
        let slot = &mut pages[start..start + page * 4];
        slot.fill(0xa5);
        release_pages(slot);
        assert!(
            slot.iter().all(|&b| b == 0),
            "released pages kept their bytes"
        );
        slot[7] = 1;
        assert_eq!(slot[7], 1);
    }

    #[test]
    fn trimming_the_heap_keeps_live_allocations() {
        let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096]).collect();
        let freed: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 4096]).collect();
        drop(freed);
        trim_heap();
        for (i, v) in kept.iter().enumerate() {
            assert!(v.iter().all(|&b| b == i as u8));
        }
    }
}
