#include "store/detail/sqlite.hpp"

#include <fmt/format.h>

#include "core/log.hpp"

namespace cairn::store::detail {

errc errc_from_sqlite(int rc) noexcept {
  switch (rc & 0xff) {  // primary code; extended codes refine it in the message only
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FORMAT:
      return errc::corruption;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:  // the disk (or a quota) is full: transient, writes work again later
      return errc::unavailable;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_NOLFS:
    case SQLITE_PROTOCOL:
      return errc::io_error;
    case SQLITE_TOOBIG:
      return errc::limit_exceeded;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_MISUSE:
    default:
      // Our SQL or our bindings are wrong; SQLITE_OK/ROW/DONE land here too, since reporting
      // a success code as an error is itself a bug.
      return errc::internal;
  }
}

Error sqlite_error(sqlite3* db, int rc, std::string_view what) {
  // sqlite3_errmsg describes the most recent failure on the handle, which is this one as long
  // as the caller builds the error right after the failing call (every call site does).
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return make_error(errc_from_sqlite(rc), fmt::format("{}: {} (sqlite rc={})", what, msg, rc));
}

namespace {

// SQLite's page cache allocates 20 pages per connection up front (SQLITE_DEFAULT_PCACHE_INITSZ)
// and threads a free list through them, so all 87 KiB (4 KiB pages) are resident from the
// open on, however few pages the store has read. Without that first allocation pages are
// allocated as they are read, up to the same cache_size. sqlite3_config only works before
// SQLite initialises (the programs open their stores at start-up, before other threads use
// SQLite); if something in the process opened a database first, the default stays.
void skip_initial_page_cache_allocation() noexcept {
  static const int rc = sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
  (void)rc;
}

}  // namespace

Result<std::unique_ptr<Connection>> Connection::open(const std::string& path, int flags) {
  skip_initial_page_cache_allocation();
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    // sqlite3_open_v2 hands back a handle even on failure (for the message); it must be closed.
    Error err = sqlite_error(db, rc, fmt::format("open '{}'", path));
    if (db != nullptr) (void)sqlite3_close(db);  // nothing to report beyond `err`
    return err;
  }
  if (const int erc = sqlite3_extended_result_codes(db, 1); erc != SQLITE_OK) {
    Error err = sqlite_error(db, erc, "enable extended result codes");
    (void)sqlite3_close(db);
    return err;
  }
  return std::unique_ptr<Connection>(new Connection(db));
}

Connection::~Connection() {
  for (sqlite3_stmt*& stmt : stmts_) {
    // finalize returns the error of the statement's last step, which its Query already
    // reported; only close's result tells us something new.
    (void)sqlite3_finalize(stmt);
    stmt = nullptr;
  }
  if (const int rc = sqlite3_close(db_); rc != SQLITE_OK) {
    log::warn("store", "closing the database failed rc={} msg={}", rc, sqlite3_errstr(rc));
  }
}

Status Connection::exec(const char* sql, std::string_view what) {
  char* msg = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
  sqlite3_free(msg);  // sqlite3_errmsg still holds the same text
  if (rc != SQLITE_OK) return error(rc, what);
  return {};
}

namespace {

template <class T, class Read>
Result<T> query_one(sqlite3* db, const char* sql, std::string_view what, Read read) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, what);
  rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    Error err = rc == SQLITE_DONE
                    ? make_error(errc::internal, fmt::format("{}: no row returned", what))
                    : sqlite_error(db, rc, what);
    (void)sqlite3_finalize(stmt);  // repeats the step's error
    return err;
  }
  T value = read(stmt);
  (void)sqlite3_finalize(stmt);  // the step succeeded; finalize cannot report anything new
  return value;
}

}  // namespace

Result<std::int64_t> Connection::query_int(const char* sql, std::string_view what) {
  return query_one<std::int64_t>(db_, sql, what,
                                 [](sqlite3_stmt* s) { return sqlite3_column_int64(s, 0); });
}

Result<std::string> Connection::query_text(const char* sql, std::string_view what) {
  return query_one<std::string>(db_, sql, what, [](sqlite3_stmt* s) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    const int size = sqlite3_column_bytes(s, 0);
    return text != nullptr ? std::string(text, static_cast<std::size_t>(size)) : std::string();
  });
}

Status Connection::prepare_all() {
  for (std::size_t i = 0; i < stmts_.size(); ++i) {
    const auto id = static_cast<Sql>(i);
    if (stmts_[i] != nullptr) continue;
    // PERSISTENT: these live as long as the connection, so SQLite should not take them from
    // its short-lived lookaside pool.
    const int rc =
        sqlite3_prepare_v3(db_, sql_text(id), -1, SQLITE_PREPARE_PERSISTENT, &stmts_[i], nullptr);
    if (rc != SQLITE_OK) return error(rc, fmt::format("prepare statement {}", i));
  }
  return {};
}

Query::~Query() {
  // reset repeats the error of the last step (already returned to the caller by step());
  // clear_bindings always succeeds. Clearing drops the SQLITE_STATIC pointers into the
  // caller's buffers before those buffers die.
  (void)sqlite3_reset(stmt_);
  (void)sqlite3_clear_bindings(stmt_);
}

void Query::bind_int(int index, std::int64_t value) noexcept {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

void Query::bind_text(int index, std::string_view value) noexcept {
  const int rc =
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_STATIC, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

void Query::bind_blob(int index, std::string_view value) noexcept {
  // A null pointer would bind SQL NULL; an empty message must stay a zero-length blob.
  const char* data = value.data() != nullptr ? value.data() : "";
  const int rc = sqlite3_bind_blob64(stmt_, index, data, value.size(), SQLITE_STATIC);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

int Query::step() noexcept {
  if (bind_rc_ != SQLITE_OK) return bind_rc_;
  return sqlite3_step(stmt_);
}

Status Query::run(std::string_view what) {
  const int rc = step();
  if (rc != SQLITE_DONE) return error(rc, what);
  return {};
}

std::int64_t Query::column_int(int index) const noexcept {
  return sqlite3_column_int64(stmt_, index);
}

bool Query::column_is_null(int index) const noexcept {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

std::string_view Query::column_text(int index) const noexcept {
  // Pointer first, then size: that order is what SQLite documents as safe.
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (text == nullptr) return {};
  return {text, static_cast<std::size_t>(size)};
}

std::string_view Query::column_blob(int index) const noexcept {
  const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (blob == nullptr) return {};  // zero-length blob (or NULL)
  return {blob, static_cast<std::size_t>(size)};
}

}  // namespace cairn::store::detail
