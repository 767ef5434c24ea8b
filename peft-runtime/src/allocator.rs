//! How the binaries' allocator (mimalloc, declared in each binary) treats memory a training step
//! frees.

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the version `libmimalloc-sys` 0.1.49
/// builds by default; its Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the kernel. A training step frees and
/// allocates the same hundreds of megabytes of activations and gradients every step; mimalloc by
/// default hands pages back once they have been free for a second (a step on the CPU takes
/// seconds), and the next step page-faults them in again, the kernel zeroing each page: a fifth
/// of a full fine-tuning step on flex, measured with `perf`. The process's resident memory then
/// stays at its peak, which it reaches every step anyway. Call first in `main`.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option, which mimalloc reads again at each purge; it takes no
    // pointers and is safe to call at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the option's number against a mimalloc upgrade that renumbers the options:
    /// `purge_delay` is the one whose default is 1000 (ms, in mimalloc 3's `options.c`), and it
    /// is set to -1.
    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        // SAFETY: reads one integer option.
        let read = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(read(), 1000, "mimalloc 3's default purge delay is 1000 ms");
        keep_freed_memory();
        assert_eq!(read(), -1);
    }
}
