// Fault injection (docs/failure_policy.md), the loop SQLite uses in its own I/O-error tests:
// a shim VFS wraps the default one and makes the Nth file call (read, write, truncate, sync,
// file size, shared-memory map) fail, for every N across a publish/deliver/ack workload. For
// each N: every append the store confirmed (what the hub PUBACKs) that was not acknowledged
// is still there, unchanged, after a reopen; a disk that fills refuses with a reason and the
// store recovers by itself when space returns; an I/O error or a failed fsync turns the store
// unhealthy (or, as in cairnd, ends the process with a clear message) instead of going on.
//
// The shim is registered as SQLite's default VFS only for the duration of one test (the store
// opens its connections with the default VFS), so the other store tests see the real disk.
#include <atomic>
#include <cstring>
#include <future>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "core/log.hpp"
#include "store/message_store.hpp"
#include "store_test_util.hpp"

namespace cairn::store {
namespace fault_injection {

using testing::append_sync;
using testing::open_or_die;
using testing::options_for;
using testing::queue;
using testing::target;
using testing::TempDir;

// What a failing call returns. disk_full fails writes only, as a full file system does (reads
// and syncs of what is already there still work); io_error fails every counted call.
enum class Fault { io_error, disk_full };

// The countdown shared by every file the shim opens. Only touched by the store's threads while
// a test waits for them, and by the test between workloads; atomics keep ASan/TSan quiet.
struct Plan {
  std::atomic<bool> armed{false};
  std::atomic<std::int64_t> countdown{0};  // the call that fails when it reaches 0
  std::atomic<bool> persist{false};        // once failed, every later counted call fails too
  std::atomic<bool> failing{false};
  Fault fault = Fault::io_error;
  std::atomic<std::int64_t> calls{0};     // counted calls since armed
  std::atomic<std::int64_t> injected{0};  // calls failed on purpose
};

Plan g_plan;
sqlite3_vfs* g_real = nullptr;

// Returns SQLITE_OK to let the call through, else the error the call fails with.
int maybe_fail(bool is_write, int io_error_code) {
  if (!g_plan.armed.load()) return SQLITE_OK;
  if (g_plan.fault == Fault::disk_full && !is_write) return SQLITE_OK;
  ++g_plan.calls;
  bool fail = g_plan.failing.load() && g_plan.persist.load();
  if (!fail && g_plan.countdown.fetch_sub(1) == 1) {
    fail = true;
    g_plan.failing = true;
  }
  if (!fail) return SQLITE_OK;
  ++g_plan.injected;
  return g_plan.fault == Fault::disk_full ? SQLITE_FULL : io_error_code;
}

struct ShimFile {
  sqlite3_file base;
  sqlite3_file* real;  // the default VFS's file, allocated right after this struct
};

sqlite3_file* real_of(sqlite3_file* f) { return reinterpret_cast<ShimFile*>(f)->real; }

int shim_close(sqlite3_file* f) { return real_of(f)->pMethods->xClose(real_of(f)); }
int shim_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  if (int rc = maybe_fail(false, SQLITE_IOERR_READ)) return rc;
  return real_of(f)->pMethods->xRead(real_of(f), buf, n, off);
}
int shim_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  if (int rc = maybe_fail(true, SQLITE_IOERR_WRITE)) return rc;
  return real_of(f)->pMethods->xWrite(real_of(f), buf, n, off);
}
int shim_truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = maybe_fail(false, SQLITE_IOERR_TRUNCATE)) return rc;
  return real_of(f)->pMethods->xTruncate(real_of(f), size);
}
int shim_sync(sqlite3_file* f, int flags) {
  if (int rc = maybe_fail(false, SQLITE_IOERR_FSYNC)) return rc;
  return real_of(f)->pMethods->xSync(real_of(f), flags);
}
int shim_file_size(sqlite3_file* f, sqlite3_int64* size) {
  if (int rc = maybe_fail(false, SQLITE_IOERR_FSTAT)) return rc;
  return real_of(f)->pMethods->xFileSize(real_of(f), size);
}
int shim_lock(sqlite3_file* f, int level) { return real_of(f)->pMethods->xLock(real_of(f), level); }
int shim_unlock(sqlite3_file* f, int level) {
  return real_of(f)->pMethods->xUnlock(real_of(f), level);
}
int shim_check_reserved_lock(sqlite3_file* f, int* out) {
  return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
int shim_file_control(sqlite3_file* f, int op, void* arg) {
  return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
int shim_sector_size(sqlite3_file* f) { return real_of(f)->pMethods->xSectorSize(real_of(f)); }
int shim_device_characteristics(sqlite3_file* f) {
  return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
int shim_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  if (int rc = maybe_fail(false, SQLITE_IOERR_SHMMAP)) return rc;
  return real_of(f)->pMethods->xShmMap(real_of(f), region, size, extend, out);
}
int shim_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}
void shim_shm_barrier(sqlite3_file* f) { real_of(f)->pMethods->xShmBarrier(real_of(f)); }
int shim_shm_unmap(sqlite3_file* f, int delete_flag) {
  return real_of(f)->pMethods->xShmUnmap(real_of(f), delete_flag);
}
// No memory-mapped I/O: reads must all go through xRead to be counted.
int shim_fetch(sqlite3_file*, sqlite3_int64, int, void** out) {
  *out = nullptr;
  return SQLITE_OK;
}
int shim_unfetch(sqlite3_file*, sqlite3_int64, void*) { return SQLITE_OK; }

const sqlite3_io_methods kShimMethods = {
    3,
    shim_close,
    shim_read,
    shim_write,
    shim_truncate,
    shim_sync,
    shim_file_size,
    shim_lock,
    shim_unlock,
    shim_check_reserved_lock,
    shim_file_control,
    shim_sector_size,
    shim_device_characteristics,
    shim_shm_map,
    shim_shm_lock,
    shim_shm_barrier,
    shim_shm_unmap,
    shim_fetch,
    shim_unfetch,
};

int shim_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  auto* shim = reinterpret_cast<ShimFile*>(f);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  // The default VFS keeps its own pointer (and its pAppData) in the file: give it its own.
  const int rc = g_real->xOpen(g_real, name, shim->real, flags, out_flags);
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kShimMethods : nullptr;
  return rc;
}

// Registers the shim as the default VFS for the life of this object.
class FaultVfs {
 public:
  FaultVfs() {
    g_real = sqlite3_vfs_find(nullptr);
    vfs_ = *g_real;
    vfs_.zName = "cairn-fault-injection";
    vfs_.szOsFile = static_cast<int>(sizeof(ShimFile)) + g_real->szOsFile;
    vfs_.xOpen = shim_open;
    vfs_.pNext = nullptr;
    EXPECT_EQ(sqlite3_vfs_register(&vfs_, 1), SQLITE_OK);
  }
  ~FaultVfs() {
    disarm();
    sqlite3_vfs_register(g_real, 1);
    sqlite3_vfs_unregister(&vfs_);
  }
  FaultVfs(const FaultVfs&) = delete;
  FaultVfs& operator=(const FaultVfs&) = delete;

  // The nth counted call from now fails (n >= 1); n = 0 only counts.
  static void arm(Fault fault, std::int64_t n, bool persist) {
    g_plan.fault = fault;
    g_plan.countdown = n;
    g_plan.persist = persist;
    g_plan.failing = false;
    g_plan.calls = 0;
    g_plan.injected = 0;
    g_plan.armed = true;
  }
  static void disarm() { g_plan.armed = false; }

 private:
  sqlite3_vfs vfs_{};
};

// What the workload knows: every message the store confirmed, per queue and sequence number,
// and the highest sequence number whose acknowledgement the store confirmed.
struct Ledger {
  std::map<std::string, std::map<std::uint64_t, std::string>> confirmed;
  std::map<std::string, std::uint64_t> acked_through;
  int transient_failures = 0;
  int fatal_failures = 0;
};

void count_failure(Ledger& ledger, const Error& e) {
  if (e.code == errc::unavailable) {
    ++ledger.transient_failures;
    EXPECT_NE(e.message.find("retry later"), std::string::npos) << e.message;
  } else {
    ++ledger.fatal_failures;
    EXPECT_EQ(e.code, errc::io_error) << e.to_string();
  }
}

// Publish/deliver/ack: pipelined appends (several per group commit, some fanned out to two
// queues), a consumer reading and acknowledging part of what it read, a session write.
void run_workload(MessageStore& store, Ledger& ledger, int rounds) {
  int id = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::pair<std::string, std::future<Result<std::vector<std::uint64_t>>>>> pending;
    for (int i = 0; i < 4; ++i, ++id) {
      std::string message = "message-" + std::to_string(id) + std::string(200 + id * 37 % 900, 'x');
      std::vector<Target> targets{target("in")};
      if (id % 3 == 0) targets.push_back(target("upstream", 1));
      auto promise = std::make_shared<std::promise<Result<std::vector<std::uint64_t>>>>();
      pending.emplace_back(message, promise->get_future());
      store.append(message, targets,
                   [promise](Result<std::vector<std::uint64_t>> r) { promise->set_value(r); });
    }
    for (auto& [message, future] : pending) {
      auto r = future.get();
      if (!r) {
        count_failure(ledger, r.error());
        continue;
      }
      ledger.confirmed["in"][r->at(0)] = message;
      if (r->size() == 2) ledger.confirmed["upstream"][r->at(1)] = message;
    }
    for (const char* name : {"in", "upstream"}) {
      const QueueKey q = queue(name, std::string_view(name) == "upstream" ? 1 : 0);
      auto read = testing::read_sync(store, q, 0, 3);
      if (!read) {
        count_failure(ledger, read.error());
        continue;
      }
      if (read->size() < 2) continue;
      // The consumer acknowledges the first two it got; the third stays in flight.
      const std::uint64_t seq = read->at(1).seq;
      if (auto s = testing::ack_sync(store, q, seq); s) {
        ledger.acked_through[name] = std::max(ledger.acked_through[name], seq);
      } else {
        count_failure(ledger, s.error());
      }
    }
    if (auto s = testing::put_sync(store, "sessions", "client-" + std::to_string(round % 3),
                                   std::to_string(round));
        !s) {
      count_failure(ledger, s.error());
    }
  }
}

// After a clean reopen: the store is consistent and every confirmed message that was not
// acknowledged is there with its sequence number and bytes; nothing acknowledged came back.
void expect_nothing_confirmed_lost(const Options& options, const Ledger& ledger,
                                   const std::string& context) {
  auto store = open_or_die(options);
  ASSERT_TRUE(store) << context;
  EXPECT_TRUE(store->check_integrity()) << context;
  for (const auto& [name, confirmed] : ledger.confirmed) {
    const QueueKey q = queue(name, name == "upstream" ? 1 : 0);
    auto read = testing::read_sync(*store, q);
    ASSERT_TRUE(read) << context << ": " << read.error().to_string();
    std::map<std::uint64_t, std::string> stored;
    for (auto& e : *read) stored[e.seq] = std::move(e.message);
    const auto acked = ledger.acked_through.find(name);
    const std::uint64_t through = acked == ledger.acked_through.end() ? 0 : acked->second;
    for (const auto& [seq, message] : confirmed) {
      if (seq <= through) {
        EXPECT_FALSE(stored.contains(seq))
            << context << ": " << name << " seq " << seq << " was acknowledged and came back";
        continue;
      }
      const auto it = stored.find(seq);
      if (it == stored.end()) {
        ADD_FAILURE() << context << ": " << name << " seq " << seq << " confirmed, then lost";
      } else {
        EXPECT_EQ(it->second, message) << context << ": " << name << " seq " << seq;
      }
    }
  }
}

constexpr int kRounds = 12;

// The workload waits for each ack before it goes on, so acks never have company to wait for:
// without the delay a run takes a fraction of the time.
Options fault_options(const TempDir& dir) {
  Options o = options_for(dir, Options::Sync::full);
  o.ack_delay_ms = 0;
  return o;
}

// The number of counted calls of the workload without faults: the range N goes over.
std::int64_t calls_of_workload(Fault fault) {
  TempDir dir;
  const Options o = fault_options(dir);
  auto store = open_or_die(o);
  if (!store) return 0;
  FaultVfs::arm(fault, 0, false);
  Ledger ledger;
  run_workload(*store, ledger, kRounds);
  FaultVfs::disarm();
  EXPECT_EQ(ledger.transient_failures + ledger.fatal_failures, 0);
  EXPECT_EQ(g_plan.injected.load(), 0);
  return g_plan.calls.load();
}

// At most this many values of N per loop, spread evenly over the workload, to bound the time
// of a run under the sanitizers.
constexpr std::int64_t kMaxRuns = 40;

void fault_loop(Fault fault, bool persist) {
  FaultVfs vfs;
  const std::int64_t total = calls_of_workload(fault);
  ASSERT_GT(total, 50) << "the workload makes too few file calls to be worth injecting into";
  const std::int64_t step = std::max<std::int64_t>(1, total / kMaxRuns);
  int runs_that_failed = 0;
  for (std::int64_t n = 1; n <= total; n += step) {
    const std::string context = "fault at call " + std::to_string(n) + " of " +
                                std::to_string(total) + (persist ? " (persistent)" : " (once)");
    TempDir dir;
    const Options o = fault_options(dir);
    Ledger ledger;
    {
      auto store = open_or_die(o);
      ASSERT_TRUE(store) << context;
      FaultVfs::arm(fault, n, persist);
      run_workload(*store, ledger, kRounds);
      const bool injected = g_plan.injected.load() > 0;
      runs_that_failed += injected ? 1 : 0;
      const Stats during = store->stats();
      if (fault == Fault::disk_full) {
        // A full disk is never a reason to stop trusting the store.
        EXPECT_TRUE(during.healthy) << context;
        EXPECT_EQ(ledger.fatal_failures, 0) << context;
        if (persist && injected && ledger.transient_failures > 0) {
          EXPECT_TRUE(during.refusing) << context;
          EXPECT_NE(during.refusal_reason.find("full"), std::string::npos)
              << context << ": " << during.refusal_reason;
        }
      }
      if (!during.healthy) {
        // The fatal path: every later write is refused with the reason, never half-done.
        auto refused = append_sync(*store, "after the failure", {target("in")});
        ASSERT_FALSE(refused) << context;
        EXPECT_EQ(refused.error().code, errc::io_error) << context;
        EXPECT_NE(refused.error().message.find("unhealthy"), std::string::npos)
            << context << ": " << refused.error().message;
      }
      // Space returns (or the fault was a passing one): without reopening, a transiently
      // failing store takes writes again.
      FaultVfs::disarm();
      if (store->stats().healthy) {
        auto again = append_sync(*store, "space is back", {target("in")});
        ASSERT_TRUE(again) << context << ": " << again.error().to_string();
        ledger.confirmed["in"][again->at(0)] = "space is back";
        EXPECT_FALSE(store->stats().refusing) << context;
      }
    }
    expect_nothing_confirmed_lost(o, ledger, context);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Most values of N hit a call of the workload (the last ones may fall in the final read).
  EXPECT_GT(runs_that_failed, 0);
}

TEST(MessageStoreFaults, IoErrorAtEveryNthCallLosesNothingConfirmed) {
  fault_loop(Fault::io_error, /*persist=*/false);
}

TEST(MessageStoreFaults, PersistentIoErrorFromTheNthCallLosesNothingConfirmed) {
  fault_loop(Fault::io_error, /*persist=*/true);
}

TEST(MessageStoreFaults, DiskFullAtEveryNthWriteRefusesAndRecovers) {
  fault_loop(Fault::disk_full, /*persist=*/false);
}

TEST(MessageStoreFaults, DiskFullFromTheNthWriteRefusesAndRecoversWhenSpaceReturns) {
  fault_loop(Fault::disk_full, /*persist=*/true);
}

// As cairnd runs the store (Options::exit_on_fatal): a failed fsync ends the process with a
// clear message and exit code 1, for the supervisor to restart it on a clean reopen.
TEST(MessageStoreFaultsDeathTest, FailedFsyncExitsForACleanReopen) {
  // The default ("fast") death test style forks without re-running the test, so the child
  // uses this test's directory; no store thread runs in the parent at that point.
  TempDir dir;
  Options o = options_for(dir, Options::Sync::full);
  o.exit_on_fatal = true;
  EXPECT_EXIT(
      {
        log::init(log::Level::error);  // to stderr, as in cairnd
        FaultVfs vfs;
        auto store = open_or_die(o);
        if (store) {
          testing::append_one(*store, "before", target("in"));
          // Every file call fails from now on, as when the disk goes away: whichever the
          // commit reaches first (a read, a WAL write, the fsync) is fatal.
          FaultVfs::arm(Fault::io_error, 1, true);
          (void)append_sync(*store, "lost with the process", {target("in")});
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "FATAL: the message store .* cannot be trusted");
  // The confirmed message survived the exit.
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(testing::messages_of(*store, queue("in")), (std::vector<std::string>{"before"}));
}

}  // namespace fault_injection
}  // namespace cairn::store
