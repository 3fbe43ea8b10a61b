#include "core/thread_name.hpp"

#include <algorithm>
#include <cstddef>

#include <pthread.h>

namespace cairn {

void name_this_thread(std::string_view name) noexcept {
  constexpr std::size_t kMaxName = 15;  // the kernel's limit, without the terminating zero
  char text[kMaxName + 1] = {};
  std::copy_n(name.data(), std::min(name.size(), kMaxName), text);
  (void)pthread_setname_np(pthread_self(), text);
}

}  // namespace cairn
