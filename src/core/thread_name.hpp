// Names for a daemon's threads, so `top -H`, `ps -L`, perf and debuggers tell them apart.
#pragma once

#include <string_view>

namespace cairn {

// Names the calling thread. Linux keeps 15 bytes of a name: a longer one is cut there.
void name_this_thread(std::string_view name) noexcept;

}  // namespace cairn
