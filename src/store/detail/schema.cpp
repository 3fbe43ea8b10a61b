#include "store/detail/schema.hpp"

#include <fmt/format.h>

#include "core/log.hpp"
#include "store/detail/sqlite.hpp"

namespace cairn::store::detail {
namespace {

// STRICT tables make SQLite refuse a value of the wrong type instead of silently converting
// it, so a binding bug fails loudly in tests rather than corrupting rows. Column order in
// `messages` puts the blob last: SQLite can then read refs/bytes without touching the blob's
// overflow pages, which keeps ack/expire cheap for large messages.
constexpr const char* kCreateSchema = R"sql(
CREATE TABLE messages(
  id INTEGER PRIMARY KEY,
  refs INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  data BLOB NOT NULL
) STRICT;
CREATE TABLE queues(
  id INTEGER PRIMARY KEY,
  endpoint TEXT NOT NULL,
  priority INTEGER NOT NULL,
  next_seq INTEGER NOT NULL,
  UNIQUE(endpoint, priority)
) STRICT;
CREATE TABLE entries(
  queue_id INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  msg_id INTEGER NOT NULL,
  enqueued_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY(queue_id, seq)
) WITHOUT ROWID, STRICT;
CREATE TABLE kv(
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY(tbl, key)
) WITHOUT ROWID, STRICT;
)sql";

// The periodic expiry finds what expired through this index instead of scanning every entry;
// partial, so entries that never expire cost nothing. Created on open for files written by
// builds without it (an index changes nothing in the format).
constexpr const char* kCreateExpiryIndex =
    "CREATE INDEX IF NOT EXISTS entries_expiry ON entries(expires_ms) WHERE expires_ms <> 0";

Status check_or_create(Connection& db) {
  auto app = db.query_int("PRAGMA application_id", "read application_id");
  if (!app) return std::move(app).error();
  auto version = db.query_int("PRAGMA user_version", "read user_version");
  if (!version) return std::move(version).error();
  auto tables = db.query_int("SELECT count(*) FROM sqlite_schema", "read schema");
  if (!tables) return std::move(tables).error();

  if (*app == 0 && *version == 0 && *tables == 0) {
    if (auto s = db.exec(kCreateSchema, "create schema"); !s) return s;
    if (auto s = db.exec(kCreateExpiryIndex, "create expiry index"); !s) return s;
    const auto pragmas = fmt::format("PRAGMA application_id = {}; PRAGMA user_version = {};",
                                     kApplicationId, kFormatVersion);
    return db.exec(pragmas.c_str(), "write format version");
  }
  if (*app != kApplicationId) {
    return make_error(
        errc::corruption,
        fmt::format("not a cairn message store (application_id={:#x}, {} tables)", *app, *tables));
  }
  if (*version != kFormatVersion) {
    return make_error(errc::corruption,
                      fmt::format("store format version {} is not supported (this build reads {})",
                                  *version, kFormatVersion));
  }
  return db.exec(kCreateExpiryIndex, "create expiry index");
}

}  // namespace

const char* sql_text(Sql id) noexcept {
  switch (id) {
    case Sql::kBegin:
      // IMMEDIATE takes the write lock up front, so a batch can never fail half-way with
      // SQLITE_BUSY on lock upgrade.
      return "BEGIN IMMEDIATE";
    case Sql::kCommit:
      return "COMMIT";
    case Sql::kRollback:
      return "ROLLBACK";
    case Sql::kInsertMessage:
      return "INSERT INTO messages(refs, bytes, data) VALUES(?1, ?2, ?3)";
    case Sql::kInsertQueue:
      return "INSERT INTO queues(endpoint, priority, next_seq) VALUES(?1, ?2, 1)";
    case Sql::kInsertEntry:
      return "INSERT INTO entries(queue_id, seq, msg_id, enqueued_ms, expires_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5)";
    case Sql::kSaveNextSeq:
      return "UPDATE queues SET next_seq = ?2 WHERE id = ?1";
    // The ack path reads, then writes: a RETURNING clause would make SQLite open and close a
    // temporary B-tree on every run, which cost more than the second statement.
    case Sql::kSelectAcked:
      return "SELECT msg_id FROM entries WHERE queue_id = ?1 AND seq <= ?2";
    case Sql::kDeleteAcked:
      return "DELETE FROM entries WHERE queue_id = ?1 AND seq <= ?2";
    case Sql::kMessageRefs:
      return "SELECT refs, bytes FROM messages WHERE id = ?1";
    case Sql::kReleaseRef:
      return "UPDATE messages SET refs = refs - 1 WHERE id = ?1";
    case Sql::kDeleteMessage:
      return "DELETE FROM messages WHERE id = ?1";
    case Sql::kReadEntries:
      // The CASE keeps SQLite from loading the body of an expired entry that is about to be
      // deleted; `m.id IS NULL` reports an entry whose body is missing (corruption).
      return "SELECT e.seq, e.msg_id, e.enqueued_ms, e.expires_ms, "
             "CASE WHEN e.expires_ms <> 0 AND e.expires_ms <= ?3 THEN NULL ELSE m.data END, "
             "m.id IS NULL "
             "FROM entries AS e LEFT JOIN messages AS m ON m.id = e.msg_id "
             "WHERE e.queue_id = ?1 AND e.seq > ?2 ORDER BY e.seq";
    case Sql::kDeleteEntry:
      return "DELETE FROM entries WHERE queue_id = ?1 AND seq = ?2";
    case Sql::kDeleteExpired:
      // Bounded (?2 rows) so one call never holds the write lock for an unbounded time.
      return "DELETE FROM entries WHERE (queue_id, seq) IN (SELECT queue_id, seq FROM entries "
             "WHERE expires_ms <> 0 AND expires_ms <= ?1 LIMIT ?2) RETURNING msg_id";
    case Sql::kQueueInfo:
      return "SELECT q.endpoint, q.priority, count(e.seq), coalesce(min(e.seq), 0) "
             "FROM queues AS q LEFT JOIN entries AS e ON e.queue_id = q.id "
             "GROUP BY q.id ORDER BY q.endpoint, q.priority";
    case Sql::kLoadQueues:
      return "SELECT q.id, q.endpoint, q.priority, q.next_seq, "
             "(SELECT max(e.seq) FROM entries AS e WHERE e.queue_id = q.id) FROM queues AS q";
    case Sql::kLoadTotals:
      return "SELECT count(*), coalesce(sum(bytes), 0) FROM messages";
    case Sql::kPutKv:
      return "INSERT INTO kv(tbl, key, value) VALUES(?1, ?2, ?3) "
             "ON CONFLICT(tbl, key) DO UPDATE SET value = excluded.value";
    case Sql::kEraseKv:
      return "DELETE FROM kv WHERE tbl = ?1 AND key = ?2";
    case Sql::kGetKv:
      return "SELECT value FROM kv WHERE tbl = ?1 AND key = ?2";
    case Sql::kListKv:
      return "SELECT key, value FROM kv WHERE tbl = ?1 ORDER BY key";
    case Sql::kIntegrityCheck:
      return "PRAGMA integrity_check";
    case Sql::kCheckRefs:
      return "SELECT count(*) FROM messages AS m "
             "LEFT JOIN (SELECT msg_id, count(*) AS n FROM entries GROUP BY msg_id) AS r "
             "ON r.msg_id = m.id WHERE m.refs <> coalesce(r.n, 0)";
    case Sql::kCheckDangling:
      return "SELECT count(*) FROM entries AS e "
             "WHERE NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = e.msg_id)";
    case Sql::kCheckBytes:
      return "SELECT count(*) FROM messages WHERE bytes <> length(data)";
    case Sql::kCount:
      break;
  }
  return nullptr;
}

Status ensure_schema(Connection& db) {
  // One IMMEDIATE transaction: the check and the creation cannot interleave with another
  // opener (the file lock already prevents that; this keeps a half-created schema impossible).
  if (auto s = db.exec("BEGIN IMMEDIATE", "begin schema check"); !s) return s;
  if (auto s = check_or_create(db); !s) {
    if (auto r = db.exec("ROLLBACK", "roll back schema check"); !r) {
      log::warn("store", "rollback after schema check failed: {}", r.error().to_string());
    }
    return s;
  }
  return db.exec("COMMIT", "commit schema");
}

}  // namespace cairn::store::detail
