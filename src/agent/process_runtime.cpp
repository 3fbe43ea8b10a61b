#include "agent/process_runtime.hpp"

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "core/clock.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cairn::agent {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kLog = "process";

std::optional<json> read_json(const std::string& path) {
  auto text = read_file(path).value_or("");
  if (text.empty()) return std::nullopt;
  try {
    return json::parse(text);
  } catch (const json::exception&) {
    return std::nullopt;  // a write cut short by a crash: treated as absent
  }
}

// Written to a temporary file and renamed: a crash leaves the old or the new file, never half.
Status write_json(const std::string& path, const json& doc) {
  return write_file_atomic(path, doc.dump(), false);
}

std::string boot_id() {
  auto id = read_file("/proc/sys/kernel/random/boot_id").value_or("");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

struct ProcStat {
  std::int64_t pgrp = 0;
  std::uint64_t start_ticks = 0;
  char state = '?';
};

// /proc/PID/stat: "pid (comm) state ppid pgrp session ... starttime(22)". comm may hold spaces
// and parentheses, so fields are counted from the last ')'.
std::optional<ProcStat> proc_stat(std::int64_t pid) {
  auto text = read_file(fmt::format("/proc/{}/stat", pid)).value_or("");
  auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream in(text.substr(close + 2));
  std::vector<std::string> f;
  for (std::string field; in >> field;) f.push_back(field);
  // f[0] = state (field 3), f[2] = pgrp (field 5), f[19] = starttime (field 22)
  if (f.size() < 20) return std::nullopt;
  ProcStat s;
  s.state = f[0].empty() ? '?' : f[0][0];
  try {
    s.pgrp = std::stoll(f[2]);
    s.start_ticks = std::stoull(f[19]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return s;
}

std::vector<std::string> strings_of(const json& v) {
  std::vector<std::string> out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_string()) out.push_back(e.get<std::string>());
    }
  }
  return out;
}

// The cgroup v2 directory cairnd runs in, if the unified hierarchy is mounted.
std::optional<std::string> own_cgroup_v2() {
  if (!fs::exists("/sys/fs/cgroup/cgroup.controllers")) return std::nullopt;
  std::istringstream in(read_file("/proc/self/cgroup").value_or(""));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("0::")) return "/sys/fs/cgroup" + line.substr(3);
  }
  return std::nullopt;
}

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

// Sets up ROOT-cgroup/cairn-NAME with the limits; returns the directory or a reason.
Result<std::string> make_cgroup(const std::string& name, std::int64_t memory,
                                std::int64_t nano_cpus) {
  auto own = own_cgroup_v2();
  if (!own) return make_error(errc::unavailable, "no cgroup v2 hierarchy on this system");
  auto controllers = read_file(*own + "/cgroup.subtree_control").value_or("");
  std::string want;
  if (memory > 0 && controllers.find("memory") == std::string::npos) want += "+memory ";
  if (nano_cpus > 0 && controllers.find("cpu") == std::string::npos) want += "+cpu ";
  if (!want.empty() && !write_text(*own + "/cgroup.subtree_control", want)) {
    return make_error(errc::forbidden,
                      "cairnd's cgroup " + *own + " does not delegate the memory/cpu controllers");
  }
  auto dir = *own + "/cairn-" + name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::forbidden, "cannot create " + dir + ": " + ec.message());
  if (memory > 0 && !write_text(dir + "/memory.max", std::to_string(memory))) {
    return make_error(errc::forbidden, "cannot write " + dir + "/memory.max");
  }
  if (nano_cpus > 0) {
    constexpr std::int64_t period = 100000;  // microseconds
    auto quota = std::max<std::int64_t>(1000, nano_cpus / 10000);
    if (!write_text(dir + "/cpu.max", fmt::format("{} {}", quota, period))) {
      return make_error(errc::forbidden, "cannot write " + dir + "/cpu.max");
    }
  }
  return dir;
}

std::string describe_wait_status(int status, int& exit_code) {
  if (WIFEXITED(status)) {
    exit_code = WEXITSTATUS(status);
    return fmt::format("exited with {}", exit_code);
  }
  if (WIFSIGNALED(status)) {
    exit_code = 128 + WTERMSIG(status);  // as a shell and Docker report it
    return fmt::format("killed by signal {}", WTERMSIG(status));
  }
  exit_code = -1;
  return "ended";
}

}  // namespace

ProcessRuntime::ProcessRuntime(ProcessRuntimeOptions options) : options_(std::move(options)) {
  std::error_code ec;
  fs::create_directories(options_.root, ec);
}

ProcessRuntime::~ProcessRuntime() = default;

RuntimeInfo ProcessRuntime::info() {
  RuntimeInfo i;
  i.type = "process";
  i.version = CAIRN_VERSION;
  i.reachable = true;
  i.detail = own_cgroup_v2() ? "cgroup v2: memory/CPU limits applied where delegated"
                             : "no cgroup v2: memory/CPU limits are ignored";
  return i;
}

Result<std::string> ProcessRuntime::executable(const std::string& image) {
  std::string path = image;
  if (path.starts_with("file://")) path = path.substr(7);
  if (!path.starts_with("/")) {
    return make_error(errc::invalid_argument,
                      "image '" + image + "' is not an absolute path or a file:// URL");
  }
  return path;
}

Status ProcessRuntime::prepare(const ModuleSpec& spec) { return image_present(spec.image); }

Status ProcessRuntime::image_present(const std::string& image) {
  auto exe = executable(image);
  if (!exe) return std::move(exe).error();
  if (::access(exe->c_str(), X_OK) != 0) {
    return make_error(errc::not_found,
                      fmt::format("{}: not an executable file ({})", *exe, std::strerror(errno)));
  }
  return {};
}

Result<CreateResult> ProcessRuntime::create(const ModuleSpec& spec) {
  auto exe = executable(spec.image);
  if (!exe) return std::move(exe).error();
  auto d = dir(spec.name);
  if (fs::exists(d + "/module.json")) {
    return make_error(errc::already_exists, "module '" + spec.name + "' exists");
  }
  std::error_code ec;
  fs::create_directories(d + "/work", ec);
  if (ec) return make_error(errc::io_error, "cannot create " + d + ": " + ec.message());

  CreateResult result;
  const auto& co = spec.create_options;
  std::vector<std::string> argv{*exe};
  for (auto& a : strings_of(co.value("Entrypoint", json()))) argv.push_back(a);
  for (auto& a : strings_of(co.value("Cmd", json()))) argv.push_back(a);
  std::vector<std::pair<std::string, std::string>> env = spec.env;
  for (auto& kv : strings_of(co.value("Env", json()))) {
    auto eq = kv.find('=');
    if (eq != std::string::npos) env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  std::string workdir = d + "/work";
  if (auto w = co.find("WorkingDir"); w != co.end() && w->is_string() && !w->empty()) {
    workdir = w->get<std::string>();
  }
  std::string cgroup;
  std::int64_t memory = 0, nano_cpus = 0;
  if (auto hc = co.find("HostConfig"); hc != co.end() && hc->is_object()) {
    memory = hc->value("Memory", std::int64_t{0});
    nano_cpus = hc->value("NanoCpus", std::int64_t{0});
    for (const auto& [key, value] : hc->items()) {
      if (key != "Memory" && key != "NanoCpus") {
        result.notes.push_back("HostConfig." + key +
                               " ignored: the process runtime has no use for it");
      }
    }
  }
  for (const auto& [key, value] : co.items()) {
    if (key != "Cmd" && key != "Entrypoint" && key != "Env" && key != "WorkingDir" &&
        key != "HostConfig") {
      result.notes.push_back(key + " ignored: the process runtime has no use for it");
    }
  }
  if (memory > 0 || nano_cpus > 0) {
    auto cg = make_cgroup(spec.name, memory, nano_cpus);
    if (cg) {
      cgroup = *cg;
    } else {
      if (memory > 0) result.notes.push_back("HostConfig.Memory ignored: " + cg.error().message);
      if (nano_cpus > 0) {
        result.notes.push_back("HostConfig.NanoCpus ignored: " + cg.error().message);
      }
    }
  }
  json env_json = json::array();
  std::set<std::string> seen;
  for (const auto& [k, v] : env) {
    if (seen.insert(k).second) env_json.push_back(k + "=" + v);
  }
  json doc = {{"name", spec.name},       {"image", spec.image},
              {"version", spec.version}, {"argv", argv},
              {"env", env_json},         {"workdir", workdir},
              {"cgroup", cgroup},        {"configHash", spec.config_hash},
              {"notes", result.notes},   {"createdAt", now_unix_ms()}};
  CAIRN_TRY(write_json(d + "/module.json", doc));
  result.id = spec.name;
  return result;
}

std::int64_t ProcessRuntime::alive_pid(const std::string& name) {
  auto d = dir(name);
  auto proc = read_json(d + "/process.json");
  if (!proc) return 0;
  auto pid = proc->value("pid", std::int64_t{0});
  if (pid <= 0) return 0;
  bool ended = false;
  int exit_code = -1;
  std::string description;
  // Our own child: waitpid tells how it ended (and reaps it).
  int status = 0;
  pid_t r = ::waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
  if (r == static_cast<pid_t>(pid)) {
    ended = true;
    description = describe_wait_status(status, exit_code);
  } else if (r == 0) {
    return pid;  // our child, still running
  } else {
    // Not our child (adopted after a cairnd restart): alive only if the same process still holds
    // the pid: same boot, same start time.
    auto st = proc_stat(pid);
    bool same = st && st->state != 'Z' && st->start_ticks == proc->value("startTicks", 0ull) &&
                proc->value("bootId", "") == boot_id();
    if (same) return pid;
    ended = true;
    description = "exited while cairnd was not its parent (exit code unknown)";
  }
  if (ended) {
    bool stopping = false;
    {
      std::lock_guard lock(mutex_);
      running_.erase(name);
      stopping = stopping_.count(name) != 0;
    }
    // Ended by stop(): "stopped", whatever signal or code it ended with.
    json exit_doc = {{"exitCode", exit_code},
                     {"exitedAt", now_unix_ms()},
                     {"description", stopping ? "stopped" : description},
                     {"stopped", stopping},
                     {"startedAt", proc->value("startedAt", std::int64_t{0})}};
    (void)write_json(d + "/exit.json", exit_doc);
    std::error_code ec;
    fs::remove(d + "/process.json", ec);
    log::info(kLog, "module {} (pid {}) {}", name, pid, description);
    std::lock_guard lock(changed_mutex_);  // see ModuleRuntime::on_change
    if (changed_) changed_(name);
  }
  return 0;
}

Status ProcessRuntime::start(const std::string& name) {
  auto d = dir(name);
  auto mod = read_json(d + "/module.json");
  if (!mod) return make_error(errc::not_found, "no module '" + name + "'");
  if (alive_pid(name) != 0) return {};

  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<std::string> argv = (*mod)["argv"].get<std::vector<std::string>>();
  std::vector<std::string> env = (*mod)["env"].get<std::vector<std::string>>();
  std::vector<char*> argv_c, env_c;
  for (auto& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (auto& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);
  std::string workdir = mod->value("workdir", d + "/work");
  std::string log_path = d + "/output.log";
  std::string cgroup_procs = mod->value("cgroup", "");
  if (!cgroup_procs.empty()) cgroup_procs += "/cgroup.procs";

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return make_error(errc::io_error, fmt::format("pipe: {}", std::strerror(errno)));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    return make_error(errc::io_error, fmt::format("fork: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    auto fail = [&](int step) {
      int e[2] = {step, errno};
      ssize_t w = ::write(err_pipe[1], e, sizeof e);
      (void)w;
      ::_exit(127);
    };
    ::setsid();
    if (!cgroup_procs.empty()) {
      int fd = ::open(cgroup_procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        ssize_t w = ::write(fd, "0", 1);
        (void)w;
        ::close(fd);
      }
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
    if (devnull < 0 || out < 0) fail(1);
    if (::dup2(devnull, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) fail(1);
    // Nothing of cairnd's (listeners, the store, other modules' sockets) leaks into a module.
    int keep = err_pipe[1];
    if (keep > 3) ::close_range(3, static_cast<unsigned>(keep - 1), 0);
    ::close_range(static_cast<unsigned>(keep + 1), ~0U, 0);
    if (::chdir(workdir.c_str()) != 0) fail(2);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv_c[0], argv_c.data(), env_c.data());
    fail(3);
  }
  ::close(err_pipe[1]);
  int e[2] = {0, 0};
  ssize_t got = ::read(err_pipe[0], e, sizeof e);
  ::close(err_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof e)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    const char* step = e[0] == 1   ? "open its log"
                       : e[0] == 2 ? "enter its working directory"
                                   : "execute";
    return make_error(errc::io_error,
                      fmt::format("module '{}': cannot {} ({}): {}", name, step,
                                  e[0] == 2 ? workdir : argv[0], std::strerror(e[1])));
  }
  auto st = proc_stat(pid);
  json proc = {{"pid", pid},
               {"startTicks", st ? st->start_ticks : 0},
               {"bootId", boot_id()},
               {"startedAt", now_unix_ms()}};
  if (auto s = write_json(d + "/process.json", proc); !s) {
    ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return s;
  }
  {
    std::lock_guard lock(mutex_);
    running_[name] = pid;
    stopping_.erase(name);
  }
  log::info(kLog, "module {} started: pid {}", name, pid);
  return {};
}

Status ProcessRuntime::stop(const std::string& name, std::chrono::seconds grace) {
  if (!fs::exists(dir(name) + "/module.json")) {
    return make_error(errc::not_found, "no module '" + name + "'");
  }
  auto pid = alive_pid(name);
  if (pid == 0) return {};
  {
    std::lock_guard lock(mutex_);
    stopping_[name] = true;
  }
  ::kill(static_cast<pid_t>(-pid), SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (alive_pid(name) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      log::warn(kLog, "module {} ignored SIGTERM for {}s: SIGKILL", name, grace.count());
      ::kill(static_cast<pid_t>(-pid), SIGKILL);
      auto kill_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (alive_pid(name) != 0 && std::chrono::steady_clock::now() < kill_deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The rest of the group (children the module left behind) goes too.
  ::kill(static_cast<pid_t>(-pid), SIGKILL);
  return alive_pid(name) == 0 ? Status{}
                              : make_error(errc::timeout, "module '" + name + "' did not stop");
}

Status ProcessRuntime::remove(const std::string& name) {
  auto d = dir(name);
  auto mod = read_json(d + "/module.json");
  if (!mod) return make_error(errc::not_found, "no module '" + name + "'");
  CAIRN_TRY(stop(name, std::chrono::seconds(0)));
  std::error_code ec;
  if (auto cg = mod->value("cgroup", ""); !cg.empty()) fs::remove(cg, ec);
  fs::remove_all(d, ec);
  if (ec) return make_error(errc::io_error, "cannot remove " + d + ": " + ec.message());
  std::lock_guard lock(mutex_);
  running_.erase(name);
  stopping_.erase(name);
  return {};
}

void ProcessRuntime::rotate_log(const std::string& name) {
  auto path = dir(name) + "/output.log";
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec || size < options_.max_log_bytes) return;
  // Copy and truncate: the module keeps its O_APPEND descriptor and writes on at offset 0.
  fs::copy_file(path, path + ".1", fs::copy_options::overwrite_existing, ec);
  if (!ec && ::truncate(path.c_str(), 0) != 0) {
    log::warn(kLog, "cannot truncate {}: {}", path, std::strerror(errno));
  }
}

Result<ModuleState> ProcessRuntime::inspect(const std::string& name) {
  auto d = dir(name);
  auto mod = read_json(d + "/module.json");
  if (!mod) return make_error(errc::not_found, "no module '" + name + "'");
  ModuleState s;
  s.name = name;
  s.image = mod->value("image", "");
  s.config_hash = mod->value("configHash", "");
  auto pid = alive_pid(name);
  rotate_log(name);
  if (pid != 0) {
    auto proc = read_json(d + "/process.json");
    s.pid = pid;
    s.status = RuntimeStatus::running;
    s.description = "running";
    s.started_at_ms = proc ? proc->value("startedAt", std::int64_t{0}) : 0;
    s.id = fmt::format("{}:{}", pid, proc ? proc->value("startTicks", 0ull) : 0ull);
    if (auto ex = read_json(d + "/exit.json"))
      s.exited_at_ms = ex->value("exitedAt", std::int64_t{0});
    return s;
  }
  s.id = name;
  if (auto ex = read_json(d + "/exit.json")) {
    s.exit_code = ex->value("exitCode", -1);
    s.exited_at_ms = ex->value("exitedAt", std::int64_t{0});
    s.started_at_ms = ex->value("startedAt", std::int64_t{0});
    s.description = ex->value("description", "");
    s.status = ex->value("stopped", false) || s.exit_code == 0 ? RuntimeStatus::stopped
                                                               : RuntimeStatus::failed;
  } else {
    s.status = RuntimeStatus::stopped;
    s.description = "created";
  }
  return s;
}

Result<std::vector<ModuleState>> ProcessRuntime::list() {
  std::vector<ModuleState> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.root, ec)) {
    if (!entry.is_directory() || !fs::exists(entry.path() / "module.json")) continue;
    auto s = inspect(entry.path().filename().string());
    if (s) out.push_back(std::move(*s));
  }
  if (ec) return make_error(errc::io_error, "cannot list " + options_.root + ": " + ec.message());
  {
    std::lock_guard lock(mutex_);
    for (const auto& m : out) {
      if (m.pid != 0) running_[m.name] = m.pid;
    }
  }
  return out;
}

Result<std::string> ProcessRuntime::logs(const std::string& name, const LogOptions& options) {
  auto d = dir(name);
  if (!fs::exists(d + "/module.json"))
    return make_error(errc::not_found, "no module '" + name + "'");
  std::string text;
  for (const char* file : {"/output.log.1", "/output.log"}) {
    auto path = d + file;
    std::error_code ec;
    auto mtime = fs::last_write_time(path, ec);
    if (ec) continue;
    if (options.since_ms > 0) {
      // Lines carry no time of their own: a file last written before `since` is skipped whole.
      auto sys = std::chrono::file_clock::to_sys(mtime);
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(sys.time_since_epoch());
      if (ms.count() < options.since_ms) continue;
    }
    text += read_file(path).value_or("");
  }
  if (options.tail) {
    std::size_t n = *options.tail, pos = text.size();
    if (pos > 0 && text.back() == '\n') --pos;
    while (n > 0 && pos > 0) {
      auto nl = text.rfind('\n', pos - 1);
      if (nl == std::string::npos) {
        pos = 0;
        break;
      }
      pos = nl;
      --n;
      if (n == 0) {
        ++pos;
        break;
      }
    }
    if (*options.tail == 0) pos = text.size();
    text = text.substr(pos);
  }
  return text;
}

bool ProcessRuntime::owns_process(const std::string& name, std::int64_t pid) {
  std::int64_t module_pid = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(name);
    if (it == running_.end()) return false;
    module_pid = it->second;
  }
  auto st = proc_stat(pid);
  return st && st->pgrp == module_pid;
}

void ProcessRuntime::on_change(std::function<void(const std::string& name)> changed) {
  std::lock_guard lock(changed_mutex_);
  changed_ = std::move(changed);
}

}  // namespace cairn::agent
