// The store's on-disk format: format identifiers, schema creation and every SQL statement the
// store runs. docs/queue_format.md describes the format for people; keep the two in step.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/result.hpp"

namespace cairn::store::detail {

class Connection;

// Written to the SQLite header (PRAGMA application_id) so a foreign SQLite file is refused
// instead of being "upgraded"; the bytes spell "crn1".
inline constexpr std::int32_t kApplicationId = 0x63726E31;
// PRAGMA user_version. Bump on any incompatible change and teach open() to migrate.
inline constexpr std::int32_t kFormatVersion = 1;

// Statements prepared once per connection (Connection::prepare_all) and reused.
enum class Sql : std::size_t {
  kBegin,
  kCommit,
  kRollback,
  kInsertMessage,
  kInsertQueue,
  kInsertEntry,
  kSaveNextSeq,
  kSelectAcked,
  kDeleteAcked,
  kMessageRefs,
  kReleaseRef,
  kDeleteMessage,
  kReadEntries,
  kDeleteEntry,
  kDeleteExpired,
  kQueueInfo,
  kLoadQueues,
  kLoadTotals,
  kPutKv,
  kEraseKv,
  kGetKv,
  kListKv,
  kIntegrityCheck,
  kCheckRefs,
  kCheckDangling,
  kCheckBytes,
  kCount,
};

const char* sql_text(Sql id) noexcept;

// Creates the schema in an empty database, or checks that an existing one is a cairn store of
// a format this build understands. Errors: corruption (foreign or unreadable file, newer
// format), io_error and friends from SQLite.
Status ensure_schema(Connection& db);

}  // namespace cairn::store::detail
