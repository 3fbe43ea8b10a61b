#include "cloud/detail/sqlite_db.hpp"

#include <fmt/format.h>

#include "core/log.hpp"

namespace cairn::cloud::detail {

Result<std::unique_ptr<Database>> Database::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error err = sqlite_error(db, rc, fmt::format("open '{}'", path));
    if (db != nullptr) (void)sqlite3_close(db);
    return err;
  }
  (void)sqlite3_extended_result_codes(db, 1);  // only refines messages; cannot fail usefully
  return std::unique_ptr<Database>(new Database(db));
}

Database::~Database() {
  for (auto& [sql, stmt] : statements_) (void)sqlite3_finalize(stmt);
  if (const int rc = sqlite3_close(db_); rc != SQLITE_OK) {
    log::warn("cloud", "closing the database failed rc={} msg={}", rc, sqlite3_errstr(rc));
  }
}

Status Database::exec(const char* sql, std::string_view what) {
  char* msg = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
  sqlite3_free(msg);
  if (rc != SQLITE_OK) return error(rc, what);
  return {};
}

Result<sqlite3_stmt*> Database::statement(const char* sql) {
  if (auto it = statements_.find(sql); it != statements_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return error(rc, fmt::format("prepare '{}'", sql));
  statements_.emplace(sql, stmt);
  return stmt;
}

std::int64_t Database::changes() const noexcept { return sqlite3_changes64(db_); }

std::int64_t Database::last_insert_rowid() const noexcept { return sqlite3_last_insert_rowid(db_); }

Status Database::set_busy_timeout(int ms) {
  if (const int rc = sqlite3_busy_timeout(db_, ms); rc != SQLITE_OK) {
    return error(rc, "set busy timeout");
  }
  return {};
}

Status Database::transaction(const std::function<Status()>& body) {
  CAIRN_TRY(exec("BEGIN IMMEDIATE", "begin transaction"));
  Status s = body();
  if (s) s = exec("COMMIT", "commit");
  if (!s) {
    // After a failed COMMIT SQLite may already have rolled back; ROLLBACK then reports "no
    // transaction is active", which adds nothing to the error we return.
    (void)exec("ROLLBACK", "rollback");
  }
  return s;
}

Query::Query(Database& db, const char* sql) : db_(db) {
  auto stmt = db.statement(sql);
  if (stmt) {
    stmt_ = *stmt;
  } else {
    prepare_error_ = std::move(stmt).error();
  }
}

Query::~Query() {
  if (stmt_ == nullptr) return;
  (void)sqlite3_reset(stmt_);  // repeats the last step's error, already reported
  (void)sqlite3_clear_bindings(stmt_);
}

Query& Query::bind(int index, std::int64_t value) noexcept {
  if (stmt_ == nullptr) return *this;
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Query& Query::bind(int index, std::string_view text) noexcept {
  if (stmt_ == nullptr) return *this;
  const char* data = text.data() != nullptr ? text.data() : "";
  const int rc = sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_STATIC, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Query& Query::bind_blob(int index, std::string_view bytes) noexcept {
  if (stmt_ == nullptr) return *this;
  // A null pointer would bind SQL NULL; an empty body must stay a zero-length blob.
  const char* data = bytes.data() != nullptr ? bytes.data() : "";
  const int rc = sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_STATIC);
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Result<bool> Query::step(std::string_view what) {
  if (stmt_ == nullptr) return prepare_error_;
  if (bind_rc_ != SQLITE_OK) return db_.error(bind_rc_, what);
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_.error(rc, what);
}

Status Query::run(std::string_view what) {
  auto r = step(what);
  if (!r) return std::move(r).error();
  return {};
}

std::int64_t Query::column_int(int index) const noexcept {
  return sqlite3_column_int64(stmt_, index);
}

std::string Query::column_text(int index) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (text == nullptr) return {};
  return {text, static_cast<std::size_t>(size)};
}

std::string Query::column_blob(int index) const {
  const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (blob == nullptr) return {};
  return {blob, static_cast<std::size_t>(size)};
}

}  // namespace cairn::cloud::detail
