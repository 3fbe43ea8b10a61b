#include "bench/model_delta_bench.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/process.hpp"

namespace cairn::bench {

namespace fs = std::filesystem;

namespace {

struct Scenario {
  std::string name;
  fs::path old_file;
  fs::path new_file;
  // Changes of a few KB are held to "best generic + index", larger ones to 0.9x the best.
};

struct ToolResult {
  std::optional<std::uint64_t> bytes;
  std::optional<double> apply_seconds;
  std::optional<std::uint64_t> apply_rss_kib;
  std::string error;
  bool timed_out = false;  // a step ran past --tool-timeout and was killed
};

// Records a failed step of one tool; a timeout is told apart so the table can say so.
void fail(ToolResult& result, const Error& e) {
  result.error = e.message;
  result.timed_out = e.code == errc::timeout;
}

struct Row {
  std::string scenario;
  std::uint64_t size = 0;
  std::uint64_t changed_bytes = 0;  // bytes that differ (same-size files) or moved
  std::map<std::string, ToolResult> tools;
  double cairn_pack_seconds = 0;
  std::uint64_t cairn_index_bytes = 0;  // the new version's index (.cidx)
  // What of it moved: an index delta's bytes when the device used one, else the index.
  std::uint64_t cairn_index_moved = 0;
};

const std::vector<std::string> kToolOrder{"full-zstd19", "cairn",   "casync",    "zsync",
                                          "bsdiff",      "xdelta3", "zstd-patch"};

std::uint64_t bytes_of_file(const fs::path& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

std::uint64_t differing_bytes(const fs::path& a, const fs::path& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  std::string da((std::istreambuf_iterator<char>(fa)), {});
  std::string db((std::istreambuf_iterator<char>(fb)), {});
  if (da.size() != db.size()) return std::max(da.size(), db.size());
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < da.size(); ++i) n += da[i] != db[i];
  return n;
}

class Bench {
 public:
  Bench(const ModelDeltaBenchOptions& o, fs::path work) : o_(o), work_(std::move(work)) {}
  int run();

 private:
  Result<std::string> sh(const std::vector<std::string>& argv, RunStats* stats = nullptr) {
    return run_capture(argv, (work_ / "tools.log").string(), tool_limit(), stats);
  }
  // One step of one tool (a pack, a diff, a fetch) may take this long before it is killed and
  // the tool's cell reads "timeout": a tool that hangs cannot stall the whole bench.
  std::chrono::milliseconds tool_limit() const {
    return std::chrono::milliseconds(static_cast<std::int64_t>(o_.tool_timeout_seconds * 1000));
  }
  Status prepare_models(std::vector<Scenario>& out);
  Status start_server();
  Row measure(const Scenario& s);
  void cairn(const Scenario& s, const fs::path& dir, Row& row);
  void casync(const Scenario& s, const fs::path& dir, Row& row);
  void zsync(const Scenario& s, const fs::path& dir, Row& row);
  void patch_tool(const std::string& tool, const Scenario& s, const fs::path& dir, Row& row);

  ModelDeltaBenchOptions o_;
  fs::path work_;
  fs::path serve_root_;
  std::optional<ChildProcess> server_;
  std::uint16_t port_ = 0;
};

Status Bench::prepare_models(std::vector<Scenario>& out) {
  fs::path models = work_ / "models";
  fs::create_directories(models);
  std::string fixtures = o_.source_dir + "/tests/integration/model_fixtures.py";
  auto gen = [&](const std::string& variant) -> Result<fs::path> {
    fs::path p = models / ("net-" + variant + ".onnx");
    auto r =
        sh({"/usr/bin/python3", fixtures, "onnx", p.string(), "--seed", "1", "--variant", variant});
    if (!r) return std::move(r).error();
    return p;
  };
  auto base = gen("base");
  if (!base) return base.error();
  // A copy, not the same path: zstd --patch-from refuses a file as its own base.
  fs::path same = models / "net-identical.onnx";
  std::error_code ec;
  fs::copy_file(*base, same, fs::copy_options::overwrite_existing, ec);
  if (ec) return make_error(errc::io_error, "cannot copy " + base->string() + ": " + ec.message());
  out.push_back({"identical (generated ONNX)", *base, same});
  for (auto [variant, label] : std::vector<std::pair<std::string, std::string>>{
           {"head", "last layer retrained (generated ONNX)"},
           {"scale", "every weight x1.001 (generated ONNX)"},
           {"finetune", "fine-tune-like perturbation (generated ONNX)"},
           {"reorder", "re-exported, tensors reordered (generated ONNX)"}}) {
    auto p = gen(variant);
    if (!p) return p.error();
    out.push_back({label, *base, *p});
  }
  auto det = ppocr_det_model(o_.cache_dir, (work_ / "tools.log").string());
  if (!det) return det.error();
  for (auto [variant, label] : std::vector<std::pair<std::string, std::string>>{
           {"head", "head weights changed (PP-OCRv4 det)"},
           {"scale", "every weight x1.001 (PP-OCRv4 det)"},
           {"finetune", "fine-tune-like perturbation (PP-OCRv4 det)"}}) {
    fs::path p = models / ("det-" + variant + ".onnx");
    auto r = sh(
        {"/usr/bin/python3", fixtures, "perturb", det->string(), p.string(), "--variant", variant});
    if (!r) return r.error();
    out.push_back({label, *det, p});
  }
  fs::path tfl = fs::path(o_.tflite_dir) / "person_detect.tflite";
  if (!fs::exists(tfl)) {
    return make_error(errc::not_found,
                      "TFLite model missing: " + tfl.string() +
                          " (pass --tflite-dir; CI lays shared/ beside the clone)");
  }
  fs::path tfl_new = models / "person_detect-layer.tflite";
  auto r = sh({"/usr/bin/python3", fixtures, "tflite-layer", tfl.string(), tfl_new.string()});
  if (!r) return r.error();
  out.push_back({"one layer changed (TFLite person_detect)", tfl, tfl_new});
  return {};
}

Status Bench::start_server() {
  serve_root_ = work_ / "serve";
  fs::create_directories(serve_root_);
  fs::path port_file = work_ / "server.port";
  auto child = ChildProcess::spawn({"/usr/bin/python3", o_.source_dir + "/bench/static_server.py",
                                    serve_root_.string(), port_file.string()},
                                   (work_ / "server.log").string());
  if (!child) return child.error();
  server_.emplace(std::move(*child));
  for (int i = 0; i < 5000 && !fs::exists(port_file); ++i) {
    if (!server_->running()) return make_error(errc::unavailable, "static server exited");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::ifstream in(port_file);
  int port = 0;
  in >> port;
  if (port <= 0) return make_error(errc::unavailable, "static server did not start");
  port_ = static_cast<std::uint16_t>(port);
  return {};
}

void Bench::cairn(const Scenario& s, const fs::path& dir, Row& row) {
  auto& result = row.tools["cairn"];
  fs::path pub = dir / "cairn-pub";
  auto p1 = sh({o_.cairn_path, "model", "pack", s.old_file.string(), "--name", "m", "--version",
                "1", "--out", pub.string()});
  RunStats pack_stats;
  auto p2 = p1 ? sh({o_.cairn_path, "model", "pack", s.new_file.string(), "--name", "m",
                     "--version", "2", "--out", pub.string()},
                    &pack_stats)
               : p1;
  if (!p2) {
    fail(result, p2.error());
    return;
  }
  row.cairn_pack_seconds = pack_stats.seconds;
  auto url = [&](const std::string& v) {
    return fmt::format("http://127.0.0.1:{}/{}/cairn-pub/m-{}.cidx", port_,
                       fs::relative(dir, serve_root_).string(), v);
  };
  fs::path device = dir / "device";
  fs::create_directories(device);
  auto f1 = sh({o_.cairn_path, "model", "fetch", url("1"), "--out", (device / "model").string(),
                "--store", (device / "store").string(), "-q"});
  RunStats apply;
  auto f2 = f1 ? sh({o_.cairn_path, "model", "fetch", url("2"), "--out",
                     (device / "model").string(), "--store", (device / "store").string(), "-q"},
                    &apply)
               : f1;
  if (!f2) {
    fail(result, f2.error());
    return;
  }
  auto j = nlohmann::json::parse(*f2, nullptr, false);
  if (!j.is_object()) {
    result.error = "fetch printed no JSON";
    return;
  }
  result.bytes = j.value("downloaded", std::uint64_t{0});
  row.cairn_index_bytes = j.value("index_bytes", std::uint64_t{0});
  const auto index_delta = j.value("index_delta_bytes", std::uint64_t{0});
  row.cairn_index_moved = index_delta != 0 ? index_delta : row.cairn_index_bytes;
  result.apply_seconds = apply.seconds;
  result.apply_rss_kib = apply.max_rss_kib;
}

void Bench::casync(const Scenario& s, const fs::path& dir, Row& row) {
  auto& result = row.tools["casync"];
  fs::path store = dir / "casync.castr";
  auto m1 = sh({"/usr/bin/casync", "make", "--compression=zstd", "--store=" + store.string(),
                (dir / "old.caibx").string(), s.old_file.string()});
  if (!m1) {
    fail(result, m1.error());
    return;
  }
  std::set<std::string> before;
  for (const auto& e : fs::recursive_directory_iterator(store)) {
    if (e.is_regular_file()) before.insert(e.path().string());
  }
  auto m2 = sh({"/usr/bin/casync", "make", "--compression=zstd", "--store=" + store.string(),
                (dir / "new.caibx").string(), s.new_file.string()});
  if (!m2) {
    fail(result, m2.error());
    return;
  }
  std::uint64_t bytes = bytes_of_file(dir / "new.caibx");
  for (const auto& e : fs::recursive_directory_iterator(store)) {
    if (e.is_regular_file() && !before.count(e.path().string())) bytes += e.file_size();
  }
  result.bytes = bytes;
}

void Bench::zsync(const Scenario& s, const fs::path& dir, Row& row) {
  auto& result = row.tools["zsync"];
  fs::path target = dir / "zsync-new.bin";
  fs::copy_file(s.new_file, target, fs::copy_options::overwrite_existing);
  auto rel = fs::relative(dir, serve_root_).string();
  // A relative URL: zsync resolves it against the .zsync file's own URL.
  auto m = sh({"/usr/bin/zsyncmake", "-o", (dir / "new.zsync").string(), "-u", "zsync-new.bin",
               target.string()});
  if (!m) {
    fail(result, m.error());
    return;
  }
  fs::path old_copy = dir / "zsync-old.bin";
  fs::copy_file(s.old_file, old_copy, fs::copy_options::overwrite_existing);
  RunStats stats;
  // zsync reports its traffic on stderr: "used N local, fetched M".
  fs::path log = dir / "zsync.log";
  auto r = run_capture(
      {"/usr/bin/zsync", "-i", old_copy.string(), "-o", (dir / "zsync-out.bin").string(),
       fmt::format("http://127.0.0.1:{}/{}/new.zsync", port_, rel)},
      log.string(), tool_limit(), &stats);
  if (!r) {
    fail(result, r.error());
    return;
  }
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  text += *r;
  auto pos = text.rfind("fetched ");
  if (pos == std::string::npos) {
    result.error = "zsync printed no byte count";
    return;
  }
  result.bytes = std::stoull(text.substr(pos + 8)) + bytes_of_file(dir / "new.zsync");
  result.apply_seconds = stats.seconds;
  result.apply_rss_kib = stats.max_rss_kib;
}

void Bench::patch_tool(const std::string& tool, const Scenario& s, const fs::path& dir, Row& row) {
  auto& result = row.tools[tool];
  fs::path patch = dir / (tool + ".patch");
  fs::path out = dir / (tool + ".out");
  std::vector<std::string> make, apply;
  if (tool == "bsdiff") {
    make = {"/usr/bin/bsdiff", s.old_file.string(), s.new_file.string(), patch.string()};
    apply = {"/usr/bin/bspatch", s.old_file.string(), out.string(), patch.string()};
  } else if (tool == "xdelta3") {
    make = {"/usr/bin/xdelta3",  "-e",          "-9", "-f", "-s", s.old_file.string(),
            s.new_file.string(), patch.string()};
    apply = {"/usr/bin/xdelta3",  "-d",           "-f",        "-s",
             s.old_file.string(), patch.string(), out.string()};
  } else {
    make = {"/usr/bin/zstd",     "-q", "-f",          "-19", "--patch-from=" + s.old_file.string(),
            s.new_file.string(), "-o", patch.string()};
    apply = {"/usr/bin/zstd", "-q", "-f",        "-d", "--patch-from=" + s.old_file.string(),
             patch.string(),  "-o", out.string()};
  }
  auto m = sh(make);
  if (!m) {
    fail(result, m.error());
    return;
  }
  RunStats stats;
  auto a = sh(apply, &stats);
  if (!a) {
    fail(result, a.error());
    return;
  }
  if (differing_bytes(out, s.new_file) != 0) {
    result.error = tool + " did not reproduce the file";
    return;
  }
  result.bytes = bytes_of_file(patch);
  result.apply_seconds = stats.seconds;
  result.apply_rss_kib = stats.max_rss_kib;
}

Row Bench::measure(const Scenario& s) {
  static int counter = 0;
  fs::path dir = serve_root_ / ("s" + std::to_string(counter++));
  fs::create_directories(dir);
  Row row;
  row.scenario = s.name;
  row.size = bytes_of_file(s.new_file);
  row.changed_bytes = differing_bytes(s.old_file, s.new_file);
  auto full = sh({"/usr/bin/zstd", "-19", "-c", "-q", s.new_file.string()});
  if (full) {
    row.tools["full-zstd19"].bytes = full->size();
  } else {
    fail(row.tools["full-zstd19"], full.error());
  }
  cairn(s, dir, row);
  casync(s, dir, row);
  zsync(s, dir, row);
  for (const char* tool : {"bsdiff", "xdelta3", "zstd-patch"}) patch_tool(tool, s, dir, row);
  return row;
}

std::string cell(const ToolResult& r) {
  if (!r.bytes) return r.timed_out ? "timeout" : "error";
  return std::to_string(*r.bytes);
}

int Bench::run() {
  std::vector<Scenario> scenarios;
  if (auto s = prepare_models(scenarios); !s) {
    std::cerr << "cairn-bench: " << s.error().message << "\n";
    return 1;
  }
  if (auto s = start_server(); !s) {
    std::cerr << "cairn-bench: " << s.error().message << "\n";
    return 1;
  }
  std::vector<Row> rows;
  for (const auto& s : scenarios) {
    progress("scenario: " + s.name);
    rows.push_back(measure(s));
  }
  server_->stop();

  std::cout << "\nBytes transferred for one update (lower is better; cairn includes its index)\n\n";
  std::cout << "| scenario | file | changed | ";
  for (const auto& t : kToolOrder) std::cout << t << " | ";
  std::cout << "cairn / best of bsdiff,xdelta3,zstd-patch | target | cairn index / moved |\n"
               "|---|---:|---:|";
  for (std::size_t i = 0; i < kToolOrder.size(); ++i) std::cout << "---:|";
  std::cout << "---:|---|---:|\n";
  nlohmann::json out = nlohmann::json::array();
  bool all_met = true;
  for (const auto& row : rows) {
    std::cout << "| " << row.scenario << " | " << row.size << " | " << row.changed_bytes << " | ";
    for (const auto& t : kToolOrder) {
      auto it = row.tools.find(t);
      std::cout << (it == row.tools.end() ? "-" : cell(it->second)) << " | ";
    }
    std::optional<std::uint64_t> best;
    for (const char* t : {"bsdiff", "xdelta3", "zstd-patch"}) {
      auto it = row.tools.find(t);
      if (it != row.tools.end() && it->second.bytes) {
        best = best ? std::min(*best, *it->second.bytes) : *it->second.bytes;
      }
    }
    const auto& c = row.tools.at("cairn");
    const auto& full = row.tools.at("full-zstd19");
    std::string ratio = "-", verdict = "n/a";
    if (c.bytes && best && full.bytes) {
      ratio =
          *best ? fmt::format("{:.2f}x", static_cast<double>(*c.bytes) / static_cast<double>(*best))
                : "-";
      // Few-KB changes: at most best + index. Larger: at most 0.9x best. Always <= full + 1 %.
      bool small = *best <= 8 * 1024;
      bool met = small ? *c.bytes <= *best + row.cairn_index_bytes
                       : static_cast<double>(*c.bytes) <= 0.9 * static_cast<double>(*best);
      met = met && static_cast<double>(*c.bytes) <= 1.01 * static_cast<double>(*full.bytes);
      verdict = std::string(met ? "met" : "MISSED") + (small ? " (<= best+index)" : " (<= 0.9x)");
      all_met = all_met && met;
    }
    std::cout << ratio << " | " << verdict << " | " << row.cairn_index_bytes << " / "
              << row.cairn_index_moved << " |\n";
    nlohmann::json j{{"scenario", row.scenario},
                     {"size", row.size},
                     {"changed", row.changed_bytes},
                     {"cairn_index_bytes", row.cairn_index_bytes},
                     {"cairn_index_moved", row.cairn_index_moved},
                     {"cairn_pack_s", row.cairn_pack_seconds},
                     {"target", verdict}};
    for (const auto& [tool, r] : row.tools) {
      nlohmann::json t;
      if (r.bytes) t["bytes"] = *r.bytes;
      if (r.apply_seconds) t["apply_s"] = *r.apply_seconds;
      if (r.apply_rss_kib) t["apply_rss_kib"] = *r.apply_rss_kib;
      if (!r.error.empty()) t["error"] = r.error.substr(0, 300);
      j["tools"][tool] = t;
    }
    out.push_back(j);
  }
  std::cout << "\nTime to pack (cairn, new version incl. deltas) and to apply on the device "
               "(seconds / peak RSS MiB)\n\n";
  std::cout << "| scenario | cairn pack | cairn fetch | zsync | bspatch | xdelta3 -d | zstd -d "
               "--patch-from |\n|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& row : rows) {
    std::cout << "| " << row.scenario << " | " << fmt::format("{:.2f}", row.cairn_pack_seconds)
              << " | ";
    for (const char* t : {"cairn", "zsync", "bsdiff", "xdelta3", "zstd-patch"}) {
      const auto& r = row.tools.at(t);
      if (r.apply_seconds && r.apply_rss_kib) {
        std::cout << fmt::format("{:.2f} / {:.1f}", *r.apply_seconds,
                                 static_cast<double>(*r.apply_rss_kib) / 1024.0);
      } else {
        std::cout << "-";
      }
      std::cout << " | ";
    }
    std::cout << "\n";
  }
  std::cout << "\nerrors:";
  bool any_error = false;
  for (const auto& row : rows) {
    for (const auto& [tool, r] : row.tools) {
      if (!r.error.empty()) {
        any_error = true;
        std::cout << "\n  " << row.scenario << " / " << tool << ": " << r.error.substr(0, 300);
      }
    }
  }
  std::cout << (any_error ? "\n" : " none\n");
  std::cout << nlohmann::json{{"model_delta", out}, {"targets_met", all_met}}.dump() << "\n";
  return any_error ? 1 : 0;
}

}  // namespace

int run_model_delta_bench(const ModelDeltaBenchOptions& options) {
  auto work = make_work_dir("cairn-bench-model-delta");
  if (!work) {
    std::cerr << "cairn-bench: " << work.error().message << "\n";
    return 1;
  }
  int rc = Bench(options, *work).run();
  finish_work_dir(*work, options.keep_dir);
  return rc;
}

}  // namespace cairn::bench
