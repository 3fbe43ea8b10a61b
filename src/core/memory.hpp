// Process-wide memory allocator settings the daemons apply once, first thing in main().
#pragma once

namespace cairn {

// glibc returns the free top of a heap to the kernel (madvise MADV_DONTNEED) as soon as it
// exceeds M_TRIM_THRESHOLD, 128 KiB by default. SQLite allocates and frees a 64 KiB statement
// journal around most writes on the store's writer thread, so each such statement paid an
// madvise, fresh page faults and, on virtual machines, a TLB shoot-down on every core: more
// CPU than the SQL itself. This lets each heap keep up to 16 MiB of freed memory (more than
// that is still returned). No-op without glibc.
void tune_heap_trimming() noexcept;

}  // namespace cairn
