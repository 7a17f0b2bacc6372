// A minimal HTTP/1.0 GET over loopback, for scraping /metrics in tests.
#ifndef SPOTTER_TESTS_TESTING_HTTP_H_
#define SPOTTER_TESTS_TESTING_HTTP_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace spotter::testing {

// The body of GET http://127.0.0.1:<port><path>; an error on connection
// failure or a non-200 status.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Parses Prometheus text exposition into {"name{labels}" -> value}, with the
// labels exactly as written (e.g. `spotter_rejects_total{reason="nan"}`).
std::map<std::string, double> ParseExposition(const std::string& text);

}  // namespace spotter::testing

#endif  // SPOTTER_TESTS_TESTING_HTTP_H_
