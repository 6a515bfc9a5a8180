//! The binary's global allocator: mimalloc for small blocks, the system allocator for large ones.
//!
//! Allocation is a sixth of the server's CPU under load with glibc's `malloc` (BENCHMARKS.md),
//! and mimalloc takes most of that away. Used for everything, though, it costs about 20 MB of idle
//! RSS: sled `calloc`s dozens of 512 KiB metric histograms when it opens, which glibc serves
//! with fresh `mmap`ed pages that stay untouched (and so never resident), while other allocators
//! hand out memory they must zero. So the line is drawn by size: a block of [`LARGE`] bytes or
//! more goes to the system allocator, the rest to mimalloc. `GlobalAlloc` gives `dealloc` and
//! `realloc` the layout the block was allocated with, so the size alone says which allocator
//! owns a block; a `realloc` across the line moves the block.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks this size or larger go to the system allocator (above glibc's `mmap` threshold).
pub const LARGE: usize = 256 * 1024;

pub struct SplitAllocator;

/// `mi_option_arena_eager_commit` (its place in mimalloc's `mi_option_e`, the same in v2 and v3;
/// the Rust bindings do not name it).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Tunes mimalloc for a small idle footprint; call before the first allocation
/// ([`install_allocator!`](crate::install_allocator) does it from `.init_array` on Linux). By default mimalloc
/// commits its arenas eagerly on Linux, which kept about 12 MB more resident at idle; committed
/// on demand, the server's idle RSS stays within 2 MB of glibc's.
pub fn configure() {
    // SAFETY: setting an option is a plain store into mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

fn is_large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: every block is allocated, reallocated and freed by the same allocator, chosen by a pure
// function of its size, and both allocators uphold `GlobalAlloc`'s contract themselves.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY (of the layout): the caller guarantees `new_size`, rounded up to the
                // alignment, does not overflow `isize`.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

/// Makes [`SplitAllocator`] the global allocator of the calling binary and, on Linux (the only
/// system where mimalloc commits arenas eagerly by default), runs [`configure`] from
/// `.init_array`: before anything is allocated, even by the standard library's own start-up.
/// From `main` it is too late (the idle server stayed at 27 MB instead of 14.6).
#[macro_export]
macro_rules! install_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::alloc::SplitAllocator = $crate::alloc::SplitAllocator;

        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static CONFIGURE_ALLOCATOR: extern "C" fn() = {
            extern "C" fn configure_allocator() {
                $crate::alloc::configure();
            }
            configure_allocator
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_bytes_across_the_line_both_ways() {
        let allocator = SplitAllocator;
        let small = 1000;
        let large = LARGE + 4096;
        unsafe {
            let layout = Layout::from_size_align(small, 16).unwrap();
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null());
            for i in 0..small {
                *ptr.add(i) = (i % 251) as u8;
            }
            let grown = allocator.realloc(ptr, layout, large);
            assert!(!grown.is_null());
            assert_eq!(grown as usize % 16, 0);
            for i in 0..small {
                assert_eq!(*grown.add(i), (i % 251) as u8);
            }
            let grown_layout = Layout::from_size_align(large, 16).unwrap();
            let shrunk = allocator.realloc(grown, grown_layout, 100);
            assert!(!shrunk.is_null());
            for i in 0..100 {
                assert_eq!(*shrunk.add(i), (i % 251) as u8);
            }
            allocator.dealloc(shrunk, Layout::from_size_align(100, 16).unwrap());

            let zeroed_layout = Layout::from_size_align(large, 64).unwrap();
            let zeroed = allocator.alloc_zeroed(zeroed_layout);
            assert!(!zeroed.is_null());
            assert!((0..large).all(|i| *zeroed.add(i) == 0));
            allocator.dealloc(zeroed, zeroed_layout);
        }
    }
}
