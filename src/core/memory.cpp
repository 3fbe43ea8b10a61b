#include "core/memory.hpp"

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

namespace cairn {
namespace {

// Freed memory a heap may keep before glibc hands it back to the kernel.
constexpr int kHeapRetainBytes = 16 << 20;

}  // namespace

void tune_heap_trimming() noexcept {
#if defined(M_TRIM_THRESHOLD)
  // Setting the trim threshold also freezes glibc's dynamic mmap threshold at its default
  // (128 KiB): large buffers still come from mmap and go back to the kernel when freed.
  (void)mallopt(M_TRIM_THRESHOLD, kHeapRetainBytes);
#endif
}

}  // namespace cairn
