// Thin RAII helpers over the SQLite C API, private to the store.
//
// Connection owns one sqlite3 handle and every prepared statement the store uses on it
// (prepared once at open, reused for the life of the connection). Query borrows one cached
// statement for one execution and resets it on scope exit, so a statement can never be left
// mid-step holding a read snapshot or a lock.
//
// Thread-safety: none. A Connection is used by one thread at a time; the owner provides the
// locking (the writer thread owns the write connection, a mutex guards the read connection).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <sqlite3.h>

#include "core/result.hpp"
#include "store/detail/schema.hpp"

namespace cairn::store::detail {

// Maps an SQLite result code (primary or extended) to the project's error code.
errc errc_from_sqlite(int rc) noexcept;

// "what: <sqlite message> (sqlite rc=N)", with the code mapped by errc_from_sqlite.
// `db` may be null (open failures).
Error sqlite_error(sqlite3* db, int rc, std::string_view what);

class Connection {
 public:
  // Opens `path` with sqlite3_open_v2 `flags` (SQLITE_OPEN_NOMUTEX is always added: the owner
  // serialises access, so SQLite's own per-call mutex is pure overhead).
  static Result<std::unique_ptr<Connection>> open(const std::string& path, int flags);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* handle() const noexcept { return db_; }

  // Runs one or more statements that return no rows we care about (DDL, PRAGMA setters).
  Status exec(const char* sql, std::string_view what);
  // One-off statements returning a single value in the first column of the first row (PRAGMA
  // getters, counts); the statement is prepared, run and finalized.
  Result<std::int64_t> query_int(const char* sql, std::string_view what);
  Result<std::string> query_text(const char* sql, std::string_view what);

  // Prepares every statement in schema.hpp's Sql list. Call after the schema exists.
  Status prepare_all();
  // REQUIRES: prepare_all() succeeded.
  sqlite3_stmt* statement(Sql id) const noexcept { return stmts_[static_cast<std::size_t>(id)]; }

  Error error(int rc, std::string_view what) const { return sqlite_error(db_, rc, what); }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::array<sqlite3_stmt*, static_cast<std::size_t>(Sql::kCount)> stmts_{};
};

// One execution of a cached statement. Text and blob parameters are bound SQLITE_STATIC (no
// copy), so the bound bytes must outlive the Query; column views are valid until the next
// step() or the end of the Query.
class Query {
 public:
  Query(const Connection& db, Sql id) : db_(db), stmt_(db.statement(id)) {}
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  // A failed bind is remembered and returned by the next step(), so call sites check once.
  void bind_int(int index, std::int64_t value) noexcept;
  void bind_text(int index, std::string_view value) noexcept;
  void bind_blob(int index, std::string_view value) noexcept;

  // SQLITE_ROW, SQLITE_DONE, or an error code (including a remembered bind failure).
  int step() noexcept;
  // Steps once and expects SQLITE_DONE (statements that return no rows).
  Status run(std::string_view what);

  std::int64_t column_int(int index) const noexcept;
  bool column_is_null(int index) const noexcept;
  std::string_view column_text(int index) const noexcept;
  std::string_view column_blob(int index) const noexcept;

  Error error(int rc, std::string_view what) const { return db_.error(rc, what); }

 private:
  const Connection& db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

}  // namespace cairn::store::detail
