#include "server/rpc/page_token.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "server/runs/rejection.h"

namespace spotter {
namespace {

constexpr absl::string_view kVersion = "p1";

absl::Status BadToken(absl::string_view why) {
  return WithReason(
      absl::InvalidArgumentError(absl::StrCat(
          "page_token ", why,
          "; expected the next_page_token of the previous response, sent with the same filters")),
      "bad_page_token");
}

}  // namespace

std::string EncodePageToken(absl::string_view scope, uint64_t position) {
  return absl::WebSafeBase64Escape(absl::StrCat(kVersion, "\n", position, "\n", scope));
}

absl::StatusOr<uint64_t> DecodePageToken(absl::string_view token, absl::string_view scope) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return BadToken("is not one this server made");
  std::vector<absl::string_view> parts = absl::StrSplit(raw, absl::MaxSplits('\n', 2));
  uint64_t position = 0;
  if (parts.size() != 3 || parts[0] != kVersion || !absl::SimpleAtoi(parts[1], &position)) {
    return BadToken("is not one this server made");
  }
  if (parts[2] != scope) return BadToken("was made for a request with other filters");
  return position;
}

absl::StatusOr<size_t> PageSize(int32_t requested, size_t fallback, size_t max) {
  if (requested < 0) {
    return WithReason(absl::InvalidArgumentError(absl::StrFormat(
                          "page_size %d: expected 0 (the default, %d) or a positive number",
                          requested, fallback)),
                      "bad_page_size");
  }
  if (requested == 0) return fallback;
  return std::min(static_cast<size_t>(requested), max);
}

}  // namespace spotter
