// Status helpers. Abseil 20220623 (Debian 12) has no public RETURN_IF_ERROR /
// ASSIGN_OR_RETURN, so they are defined here, once.
#ifndef SPOTTER_CORE_UTIL_STATUS_MACROS_H_
#define SPOTTER_CORE_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status); returns it from the enclosing function
// when it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status _spotter_status = (expr);                   \
    if (!_spotter_status.ok()) return _spotter_status;         \
  } while (0)

#define SPOTTER_STATUS_CONCAT_INNER(a, b) a##b
#define SPOTTER_STATUS_CONCAT(a, b) SPOTTER_STATUS_CONCAT_INNER(a, b)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status from
// the enclosing function. `lhs` may be a declaration: ASSIGN_OR_RETURN(auto x, F()).
#define ASSIGN_OR_RETURN(lhs, rexpr)                                            \
  SPOTTER_ASSIGN_OR_RETURN_IMPL(                                                \
      SPOTTER_STATUS_CONCAT(_spotter_statusor_, __LINE__), lhs, rexpr)

#define SPOTTER_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // SPOTTER_CORE_UTIL_STATUS_MACROS_H_
