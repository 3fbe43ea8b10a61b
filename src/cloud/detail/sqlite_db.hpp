// Thin RAII helpers over the SQLite C API, private to the cloud store.
//
// Database owns one sqlite3 handle and the statements prepared on it: a statement is prepared
// the first time its SQL text is used and reused for the life of the connection. Query borrows
// one of them for one execution and resets it on scope exit, so no statement is ever left
// mid-step holding a read snapshot.
//
// Thread-safety: none; one thread at a time (the owning store's caller).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <sqlite3.h>

#include "core/result.hpp"
#include "store/detail/sqlite.hpp"

namespace cairn::cloud::detail {

// "what: <sqlite message> (sqlite rc=N)": the message store's mapping of SQLite codes to errc.
using store::detail::sqlite_error;

class Database {
 public:
  // Opens (creating if needed) the database file at `path`.
  static Result<std::unique_ptr<Database>> open(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs statements that return nothing of interest (DDL, PRAGMA setters).
  Status exec(const char* sql, std::string_view what);
  // The statement for `sql`, prepared on first use. `sql` must be a string with static storage.
  Result<sqlite3_stmt*> statement(const char* sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  std::int64_t changes() const noexcept;
  // Rowid of the last successful INSERT.
  std::int64_t last_insert_rowid() const noexcept;

  // How long a statement waits for a lock held by another connection before failing with
  // SQLITE_BUSY (errc::unavailable).
  Status set_busy_timeout(int ms);

  // Runs `body` between BEGIN IMMEDIATE and COMMIT; rolls back if body or COMMIT fails.
  Status transaction(const std::function<Status()>& body);

  Error error(int rc, std::string_view what) const { return sqlite_error(db_, rc, what); }

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::map<const char*, sqlite3_stmt*> statements_;
};

// One execution of a cached statement. Text and blob parameters are bound without copying, so
// they must outlive the Query; column views are valid until the next step or the end of it.
class Query {
 public:
  Query(Database& db, const char* sql);
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  // Failures (including a failed prepare) are remembered and returned by the next step/run.
  Query& bind(int index, std::int64_t value) noexcept;
  Query& bind(int index, std::string_view text) noexcept;
  Query& bind_blob(int index, std::string_view bytes) noexcept;

  // true: a row is available; false: done.
  Result<bool> step(std::string_view what);
  // Steps once, expecting no row.
  Status run(std::string_view what);

  std::int64_t column_int(int index) const noexcept;
  std::string column_text(int index) const;
  std::string column_blob(int index) const;

 private:
  Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
  Error prepare_error_;
  int bind_rc_ = SQLITE_OK;
};

}  // namespace cairn::cloud::detail
