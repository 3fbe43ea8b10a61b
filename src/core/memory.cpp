#include "core/memory.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cairn {

void tune_heap_trimming() noexcept {
#if defined(__GLIBC__)
  // Setting the trim threshold also freezes glibc's dynamic mmap threshold at its default
  // (128 KiB): large buffers still come from mmap and go back to the kernel when freed.
  (void)mallopt(M_TRIM_THRESHOLD, static_cast<int>(kHeapRetainBytes));
#endif
}

}  // namespace cairn
