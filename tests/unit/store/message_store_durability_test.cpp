// Durability of MessageStore: sticky errors, damaged files, and kill -9 of a writing process.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <semaphore>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "core/clock.hpp"
#include "store/message_store.hpp"
#include "store_test_util.hpp"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cairn::store {
namespace {

using testing::append_one;
using testing::append_sync;
using testing::open_or_die;
using testing::options_for;
using testing::queue;
using testing::target;
using testing::TempDir;

// ---------------------------------------------------------------------------------------------
// Sticky errors.

void expect_io_error(const Status& s, const char* what) {
  ASSERT_FALSE(s.ok()) << what;
  EXPECT_EQ(s.error().code, errc::io_error) << what << ": " << s.error().to_string();
}

TEST(MessageStoreStickyError, FailedCommitFailsTheWholeBatchAndEveryLaterWrite) {
  TempDir dir;
  Options o = options_for(dir, Options::Sync::full);
  o.fail_commit_after_for_test = 3;
  {
    auto store = open_or_die(o);
    ASSERT_TRUE(store);
    ASSERT_TRUE(testing::put_sync(*store, "t", "k", "v").ok());  // commit 1
    EXPECT_EQ(append_one(*store, "a", target("q")), 1u);         // commit 2

    // Commit 3 is the gate; the batch behind it is the one that fails.
    std::vector<Status> statuses;
    bool append_failed = false;
    bool read_failed = false;
    {
      testing::WriterGate gate(*store);
      store->append("b", {target("q")}, [&](Result<std::vector<std::uint64_t>> r) {
        append_failed = !r.ok() && r.error().code == errc::io_error;
      });
      store->ack(queue("q"), 1, [&](Status s) { statuses.push_back(std::move(s)); });
      store->read(queue("q"), 0, 10, [&](Result<std::vector<Entry>> r) {
        // It would have seen "b", which never became durable.
        read_failed = !r.ok() && r.error().code == errc::io_error;
      });
      store->put("t", "k", "new", [&](Status s) { statuses.push_back(std::move(s)); });
      gate.release();
      expect_io_error(store->flush(), "flush after the failed batch");
    }
    EXPECT_TRUE(append_failed);
    EXPECT_TRUE(read_failed);
    ASSERT_EQ(statuses.size(), 2u);
    expect_io_error(statuses[0], "ack in the failed batch");
    expect_io_error(statuses[1], "put in the failed batch");

    const Stats s = store->stats();
    EXPECT_FALSE(s.healthy);
    EXPECT_EQ(s.appended_total, 1u);
    EXPECT_EQ(s.stored_messages, 1u);

    // Every later write fails at once...
    auto r = append_sync(*store, "c", {target("q")});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, errc::io_error);
    expect_io_error(testing::ack_sync(*store, queue("q"), 1), "later ack");
    expect_io_error(testing::put_sync(*store, "t", "k2", "v"), "later put");
    expect_io_error(testing::erase_sync(*store, "t", "k"), "later erase");
    auto n = testing::expire_sync(*store);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.error().code, errc::io_error);
    EXPECT_FALSE(store->stats().healthy);

    // ...while reads keep working and show exactly what was committed.
    EXPECT_EQ(testing::messages_of(*store, queue("q")), std::vector<std::string>{"a"});
    auto qs = testing::queues_sync(*store);
    ASSERT_TRUE(qs.ok());
    ASSERT_EQ(qs->size(), 1u);
    EXPECT_EQ((*qs)[0].length, 1u);
    auto v = store->get("t", "k");
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->value_or(""), "v");
  }
  // Reopening (without the fault) recovers a healthy store with the committed data.
  o.fail_commit_after_for_test = -1;
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->stats().healthy);
  EXPECT_TRUE(store->check_integrity().ok());
  EXPECT_EQ(testing::messages_of(*store, queue("q")), std::vector<std::string>{"a"});
  EXPECT_EQ(append_one(*store, "d", target("q")), 2u);
}

// Runs `child` in a forked process and returns its exit code (or 128 + signal).
template <class F>
int run_in_child(F child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(child());  // no gtest teardown, no destructors in the child
  }
  if (pid < 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

TEST(MessageStoreStickyError, RealWriteFailureMakesTheStoreReadOnly) {
  // A genuine I/O failure: RLIMIT_FSIZE makes the kernel refuse to grow any file past the
  // limit (EFBIG), which SQLite sees exactly like a full disk. Done in a child process, since
  // the limit applies to the whole process.
  TempDir dir;
  const Options o = options_for(dir, Options::Sync::full);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const std::string body(4096, 'p');
  const int code = run_in_child([&]() -> int {
    ::close(pipe_fds[0]);
    auto store = MessageStore::open(o);
    if (!store) return 2;
    MessageStore& s = **store;
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{256 * 1024, RLIM_INFINITY};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 3;
    std::uint64_t acked = 0;
    bool failed = false;
    for (int i = 0; i < 1000 && !failed; ++i) {
      auto r = append_sync(s, body, {target("q")});
      if (r.ok()) {
        ++acked;
      } else if (r.error().code == errc::io_error) {
        failed = true;
      } else {
        return 4;
      }
    }
    if (!failed) return 5;
    if (s.stats().healthy) return 6;
    if (append_sync(s, "x", {target("q")}).ok()) return 7;
    if (testing::put_sync(s, "t", "k", "v").ok()) return 8;
    if (s.flush().ok()) return 9;
    auto read = testing::read_sync(s, queue("q"));
    if (!read.ok() || read->size() != acked) return 10;
    if (!s.get("t", "k").ok()) return 11;
    if (::write(pipe_fds[1], &acked, sizeof acked) != sizeof acked) return 12;
    return 0;
  });
  ::close(pipe_fds[1]);
  std::uint64_t acked = 0;
  const auto got = ::read(pipe_fds[0], &acked, sizeof acked);
  ::close(pipe_fds[0]);
  ASSERT_EQ(code, 0) << "child failed at step " << code;
  ASSERT_EQ(got, static_cast<ssize_t>(sizeof acked));
  EXPECT_GT(acked, 0u);

  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->stats().healthy);
  EXPECT_TRUE(store->check_integrity().ok());
  const auto messages = testing::messages_of(*store, queue("q"));
  EXPECT_EQ(messages.size(), acked);  // the failed batch was rolled back, nothing half-written
  for (const auto& m : messages) EXPECT_EQ(m, body);
}

// ---------------------------------------------------------------------------------------------
// Damaged files: a clear error at open, never a crash.

void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

void expect_open_fails_with_corruption(const Options& o) {
  auto r = MessageStore::open(o);
  ASSERT_FALSE(r.ok()) << "a damaged file opened";
  EXPECT_EQ(r.error().code, errc::corruption) << r.error().to_string();
  EXPECT_FALSE(r.error().message.empty());
}

// A store with some data, closed cleanly (so everything sits in the main file, no WAL).
void make_populated_store(const Options& o) {
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  for (int i = 0; i < 300; ++i) {
    store->append(std::string(1000, static_cast<char>('a' + i % 26)),
                  {target("q" + std::to_string(i % 3))}, nullptr);
  }
  store->put("t", "k", "v", nullptr);
  ASSERT_TRUE(store->flush().ok());
}

TEST(MessageStoreCorruption, GarbageFileIsRefusedAtOpen) {
  TempDir dir;
  const Options o = options_for(dir);
  write_file(o.path, random_bytes(64 * 1024, 1));
  expect_open_fails_with_corruption(o);
}

TEST(MessageStoreCorruption, GarbageAfterAValidHeaderIsRefusedAtOpen) {
  TempDir dir;
  const Options o = options_for(dir);
  write_file(o.path, std::string("SQLite format 3\0", 16) + random_bytes(64 * 1024, 2));
  expect_open_fails_with_corruption(o);
}

TEST(MessageStoreCorruption, DamagedTablePagesAreRefusedAtOpen) {
  TempDir dir;
  const Options o = options_for(dir);
  make_populated_store(o);
  const auto size = std::filesystem::file_size(o.path);
  ASSERT_GT(size, 100u * 1024);
  // Keep page 1 (header and schema), overwrite every other page.
  std::fstream f(o.path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(4096);
  const std::string junk = random_bytes(size - 4096, 3);
  f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  f.close();
  expect_open_fails_with_corruption(o);
}

TEST(MessageStoreCorruption, TruncatedFileIsRefusedAtOpen) {
  TempDir dir;
  const Options o = options_for(dir);
  make_populated_store(o);
  std::filesystem::resize_file(o.path, 4096 + 100);
  expect_open_fails_with_corruption(o);
}

// Creates or edits a database with raw SQL, as another program might.
void run_sql(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  EXPECT_EQ(sqlite3_close(db), SQLITE_OK);
}

TEST(MessageStoreCorruption, ForeignSqliteDatabaseIsRefused) {
  TempDir dir;
  const Options o = options_for(dir);
  std::filesystem::create_directories(std::filesystem::path(o.path).parent_path());
  run_sql(o.path, "CREATE TABLE messages(x); INSERT INTO messages VALUES(1);");
  expect_open_fails_with_corruption(o);
}

TEST(MessageStoreCorruption, NewerFormatVersionIsRefused) {
  TempDir dir;
  const Options o = options_for(dir);
  make_populated_store(o);
  run_sql(o.path, "PRAGMA user_version = 99");
  auto r = MessageStore::open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::corruption);
  EXPECT_NE(r.error().message.find("99"), std::string::npos) << r.error().message;
}

TEST(MessageStoreCorruption, MissingBodyIsReportedByReadsAndIntegrityCheck) {
  TempDir dir;
  const Options o = options_for(dir);
  {
    auto store = open_or_die(o);
    ASSERT_TRUE(store);
    append_one(*store, "one", target("q"));
    append_one(*store, "two", target("q"));
  }
  run_sql(o.path, "DELETE FROM messages WHERE id = (SELECT max(id) FROM messages)");
  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  const Status check = store->check_integrity();
  ASSERT_FALSE(check.ok());
  EXPECT_EQ(check.error().code, errc::corruption);
  auto r = testing::read_sync(*store, queue("q"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errc::corruption);
  EXPECT_TRUE(store->stats().healthy);  // a bad row is not a failed write
  // The damaged entry can still be acked away, after which the queue works again.
  ASSERT_TRUE(testing::ack_sync(*store, queue("q"), 2).ok());
  EXPECT_TRUE(store->check_integrity().ok());
}

// ---------------------------------------------------------------------------------------------
// kill -9 while appending: nothing whose callback reported success may be lost.

struct Record {
  std::uint64_t index = 0;
  std::uint64_t seq_a = 0;
  std::uint64_t seq_b = 0;
};

std::string payload(std::uint64_t i) {
  std::string s = "msg-" + std::to_string(i) + "-";
  const std::size_t size = 16 + (i * 7919) % 3000;  // a mix of small and multi-page bodies
  while (s.size() < size) s.push_back(static_cast<char>('a' + (i + s.size()) % 26));
  return s;
}

// Appends forever, reporting each acknowledged append on `fd`. Never returns.
[[noreturn]] void crash_child(const Options& o, int fd, std::uint64_t first_index) {
  auto opened = MessageStore::open(o);
  if (!opened) ::_exit(2);
  MessageStore& store = **opened;
  // Bounded in-flight window, like a hub with a receive maximum: without it the producer
  // would queue millions of appends in memory while the writer fsyncs.
  std::counting_semaphore<1024> window(512);
  const std::int64_t far = now_unix_ms() + 86'400'000;
  for (std::uint64_t i = first_index;; ++i) {
    window.acquire();
    store.append(payload(i), {target("$upstream", 0, i % 3 == 0 ? far : 0), target("m/in", 1)},
                 [fd, i, &window](Result<std::vector<std::uint64_t>> r) {
                   if (r.ok()) {
                     const Record rec{i, (*r)[0], (*r)[1]};
                     // <= PIPE_BUF bytes: atomic, so a kill never leaves half a record.
                     if (::write(fd, &rec, sizeof rec) != sizeof rec) ::_exit(3);
                   }
                   window.release();
                 });
  }
}

// Reads records from `fd` until `want` were read (then SIGKILLs the child) and then until EOF.
std::vector<Record> collect_then_kill(pid_t child, int fd, std::size_t want) {
  std::vector<Record> records;
  std::string buffer;
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    if (!killed && (records.size() >= want || std::chrono::steady_clock::now() > deadline)) {
      ::kill(child, SIGKILL);
      killed = true;
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 1000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    char chunk[4096];
    const auto n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child (and every copy of the write end) is gone
    buffer.append(chunk, static_cast<std::size_t>(n));
    while (buffer.size() >= sizeof(Record)) {
      Record r;
      std::memcpy(&r, buffer.data(), sizeof r);
      buffer.erase(0, sizeof r);
      records.push_back(r);
    }
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child ended on its own, status " << status;
  EXPECT_TRUE(buffer.empty()) << "torn record";
  return records;
}

class MessageStoreCrashTest : public ::testing::TestWithParam<Options::Sync> {};

TEST_P(MessageStoreCrashTest, KillNineLosesNoAcknowledgedAppend) {
  TempDir dir;
  const Options o = options_for(dir, GetParam());
  std::vector<Record> acked;
  // Two rounds: the second child recovers the killed store and keeps appending to it.
  for (std::uint64_t round = 0; round < 2; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      crash_child(o, fds[1], round * 1'000'000'000);
    }
    ::close(fds[1]);
    auto records = collect_then_kill(pid, fds[0], 3000);
    ::close(fds[0]);
    ASSERT_GE(records.size(), 3000u) << "child stopped reporting (round " << round << ")";
    acked.insert(acked.end(), records.begin(), records.end());
  }

  auto store = open_or_die(o);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->check_integrity().ok());
  std::map<std::uint64_t, std::string> a;
  std::map<std::uint64_t, std::string> b;
  for (auto [key, out] : {std::pair{queue("$upstream"), &a}, std::pair{queue("m/in", 1), &b}}) {
    auto entries = testing::read_sync(*store, key);
    ASSERT_TRUE(entries.ok()) << entries.error().to_string();
    for (auto& e : *entries) {
      EXPECT_TRUE(out->emplace(e.seq, std::move(e.message)).second) << "duplicate seq";
    }
  }
  // Committed-but-unreported appends may exist beyond what was acked; nothing acked may miss.
  EXPECT_GE(a.size(), acked.size());
  EXPECT_EQ(a.size(), b.size());
  std::size_t missing = 0;
  for (const Record& r : acked) {
    const std::string want = payload(r.index);
    const auto ia = a.find(r.seq_a);
    const auto ib = b.find(r.seq_b);
    if (ia == a.end() || ia->second != want || ib == b.end() || ib->second != want) ++missing;
  }
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged appends";
  // Sequence numbers continued across the crash instead of restarting.
  EXPECT_EQ(a.rbegin()->first, a.size());
}

INSTANTIATE_TEST_SUITE_P(SyncModes, MessageStoreCrashTest,
                         ::testing::Values(Options::Sync::full, Options::Sync::normal),
                         [](const ::testing::TestParamInfo<Options::Sync>& param_info) {
                           return param_info.param == Options::Sync::full ? std::string("Full")
                                                                          : std::string("Normal");
                         });

}  // namespace
}  // namespace cairn::store
