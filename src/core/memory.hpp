// Process-wide memory allocator settings the daemons apply once, first thing in main().
#pragma once

#include <cstddef>

namespace cairn {

// Freed memory a thread's heap may keep before glibc hands it back to the kernel.
inline constexpr std::size_t kHeapRetainBytes = 16u << 20;

// glibc returns the free top of a heap to the kernel (madvise MADV_DONTNEED) as soon as it
// exceeds M_TRIM_THRESHOLD, 128 KiB by default. SQLite allocates and frees a 64 KiB statement
// journal around most writes on the store's writer thread, so each such statement paid an
// madvise, fresh page faults and, on virtual machines, a TLB shoot-down on every core: more
// CPU than the SQL itself. This keeps up to kHeapRetainBytes of freed memory per heap instead
// (returned only after a burst larger than that, never while idle-sized). No-op without glibc.
void tune_heap_trimming() noexcept;

}  // namespace cairn
