// Store::ScanRun, which ExportRun reads a moving run with: exactly the rows
// of one run (not of a run whose name extends it), table by table in
// kAllTables order and by (k1, k2) within a table, for the default
// implementation (MemoryStore filters Scan) and SQLite's indexed query.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/storage/sqlite_store.h"
#include "server/storage/store.h"
#include "tests/testing/status_matchers.h"

namespace spotter {
namespace {

using Row = std::tuple<Table, std::string, uint64_t, uint64_t, std::string>;

class ScanRunTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      path_ = absl::StrCat(::testing::TempDir(), "/spotter_scan_run_", getpid(), ".db");
      std::remove(path_.c_str());
      auto s = SqliteStore::Open(path_, SqliteOptions{});
      ASSERT_THAT(s, testing::IsOk());
      store_ = *std::move(s);
    } else {
      store_ = std::make_unique<MemoryStore>();
    }
    // Out of order, across tables, with neighbours "a" would match as a
    // prefix or that sort around it.
    std::vector<StoreOp> ops;
    for (const std::string run : {"ab", "a", "b", "A"}) {
      ops.push_back(StoreOp::Put(Table::kPoints, run, 0, 2, run + "-p2"));
      ops.push_back(StoreOp::Put(Table::kRuns, run, 0, 0, run + "-run"));
      ops.push_back(StoreOp::Put(Table::kUploads, run, 1, 7, run + "-u1.7"));
      ops.push_back(StoreOp::Put(Table::kUploads, run, 0, 9, run + "-u0.9"));
      ops.push_back(StoreOp::Put(Table::kPoints, run, 0, 1, run + "-p1"));
    }
    ASSERT_THAT(store_->Apply(ops), testing::IsOk());
  }
  void TearDown() override {
    store_.reset();
    if (!path_.empty()) {
      for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path_ + suffix).c_str());
    }
  }

  std::string path_;
  std::unique_ptr<Store> store_;
};

TEST_P(ScanRunTest, VisitsExactlyTheRunsRowsInTableAndKeyOrder) {
  std::vector<Row> got;
  ASSERT_THAT(store_->ScanRun("a",
                              [&](StoredRow&& r) {
                                got.emplace_back(r.table, r.run, r.k1, r.k2, r.value);
                                return absl::OkStatus();
                              }),
              testing::IsOk());
  const std::vector<Row> want = {{Table::kRuns, "a", 0, 0, "a-run"},
                                 {Table::kUploads, "a", 0, 9, "a-u0.9"},
                                 {Table::kUploads, "a", 1, 7, "a-u1.7"},
                                 {Table::kPoints, "a", 0, 1, "a-p1"},
                                 {Table::kPoints, "a", 0, 2, "a-p2"}};
  EXPECT_EQ(got, want);
}

TEST_P(ScanRunTest, StopsAtTheVisitorsErrorAndCanScanAgain) {
  int seen = 0;
  const absl::Status s = store_->ScanRun("b", [&](StoredRow&&) {
    return ++seen == 2 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 2);
  int again = 0;
  ASSERT_THAT(store_->ScanRun("b",
                              [&](StoredRow&&) {
                                ++again;
                                return absl::OkStatus();
                              }),
              testing::IsOk());
  EXPECT_EQ(again, 5) << "a stopped scan must not leave its statement mid-way";
  int none = 0;
  ASSERT_THAT(store_->ScanRun("nope",
                              [&](StoredRow&&) {
                                ++none;
                                return absl::OkStatus();
                              }),
              testing::IsOk());
  EXPECT_EQ(none, 0);
}

INSTANTIATE_TEST_SUITE_P(Store, ScanRunTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "Sqlite" : "Memory";
                         });

}  // namespace
}  // namespace spotter
