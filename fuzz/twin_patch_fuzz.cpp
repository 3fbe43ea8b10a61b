// libFuzzer target: arbitrary text as twin patches, a device view and a stored twin.
//
// A JSON array is read as a sequence of patches, anything else as one patch; they go in turn
// to the five ways of changing a Twin. After every step the invariants must hold: a patch that
// validate_patch rejects changes nothing, an accepted one bumps exactly the right versions,
// sections stay within their limits, diff/merge round-trips between the old and new section,
// the delivered desired patch reproduces the new desired section, and the storage form
// round-trips. Any broken invariant aborts, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "twin/twin.hpp"

namespace {

using cairn::twin::json;
using cairn::twin::Twin;

// Strict equality: dump() tells 1 from 1.0 apart, which operator== does not.
bool same(const json& a, const json& b) {
  return cairn::twin::dump_json(a) == cairn::twin::dump_json(b);
}

json without_version(json patch) {
  patch.erase("$version");
  return patch;
}

void check_round_trip(const json& from, const json& to) {
  json result = from;
  cairn::twin::merge_patch(result, cairn::twin::diff(from, to));
  FUZZ_CHECK(same(result, to));
  FUZZ_CHECK(cairn::twin::diff(to, to).empty());
}

// The merged section obeys every rule, except that its serialized form may exceed the patch
// limit (quotes and punctuation count there, not in the section limit).
void check_section(const json& section, std::size_t limit) {
  FUZZ_CHECK(section.is_object());
  FUZZ_CHECK(cairn::twin::section_size(section) <= limit);
  const auto valid = cairn::twin::validate_patch(section);
  FUZZ_CHECK(valid || valid.error().message.find("bytes serialized") != std::string::npos);
}

void check_storage(const Twin& twin) {
  const std::string text = twin.serialize();
  auto back = Twin::parse(text);
  FUZZ_CHECK(back);
  FUZZ_CHECK(back->serialize() == text);
}

void apply(Twin& twin, const json& patch, std::size_t step) {
  const bool valid = static_cast<bool>(cairn::twin::validate_patch(patch));
  const Twin before = twin;
  bool ok = false;
  switch (step % 5) {
    case 0: {
      ok = static_cast<bool>(twin.patch_reported(patch));
      if (!ok) break;
      FUZZ_CHECK(twin.reported_version == before.reported_version + 1);
      FUZZ_CHECK(twin.desired_version == before.desired_version);
      check_section(twin.reported, cairn::twin::kMaxSectionBytes);
      check_round_trip(before.reported, twin.reported);
      break;
    }
    case 1:
    case 2: {
      auto delivered = step % 5 == 1 ? twin.patch_desired(patch) : twin.replace_desired(patch);
      ok = static_cast<bool>(delivered);
      if (!ok) break;
      FUZZ_CHECK(twin.desired_version == before.desired_version + 1);
      FUZZ_CHECK(twin.reported_version == before.reported_version);
      FUZZ_CHECK((*delivered)["$version"] == twin.desired_version);
      check_section(twin.desired, cairn::twin::kMaxSectionBytes);
      check_round_trip(before.desired, twin.desired);
      // A device that applies the delivered patch ends up with the new section.
      json device = before.desired;
      cairn::twin::merge_patch(device, without_version(*delivered));
      FUZZ_CHECK(same(device, twin.desired));
      // So does one that catches up later through desired_patch_since.
      const auto since = twin.desired_patch_since(before.device_view()["desired"]);
      json late = before.desired;
      if (since) cairn::twin::merge_patch(late, without_version(*since));
      FUZZ_CHECK(same(late, twin.desired));
      break;
    }
    case 3:
    case 4: {
      ok = static_cast<bool>(step % 5 == 3 ? twin.patch_tags(patch) : twin.replace_tags(patch));
      if (!ok) break;
      FUZZ_CHECK(twin.desired_version == before.desired_version);
      check_section(twin.tags, cairn::twin::kMaxTagsBytes);
      check_round_trip(before.tags, twin.tags);
      break;
    }
  }
  if (ok) {
    FUZZ_CHECK(valid);
    FUZZ_CHECK(twin.version == before.version + 1);
  } else {
    FUZZ_CHECK(twin == before);
    FUZZ_CHECK(twin.serialize() == before.serialize());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto stored = Twin::parse(text)) check_storage(*stored);

  auto doc = cairn::twin::parse_json(text);
  if (!doc) return 0;

  if (auto viewed = Twin::from_device_view(*doc)) {
    auto again = Twin::from_device_view(viewed->device_view());
    FUZZ_CHECK(again);
    FUZZ_CHECK(same(again->desired, viewed->desired));
    FUZZ_CHECK(same(again->reported, viewed->reported));
    check_storage(*viewed);
  }

  std::vector<const json*> patches;
  if (doc->is_array()) {
    for (const auto& element : *doc) patches.push_back(&element);
  } else {
    patches.push_back(&*doc);
  }
  Twin twin;
  for (std::size_t step = 0; step < patches.size(); ++step) apply(twin, *patches[step], step);
  // A single patch goes through all five operations.
  if (patches.size() == 1) {
    for (std::size_t step = 1; step < 5; ++step) apply(twin, *patches[0], step);
  }
  check_storage(twin);
  return 0;
}
