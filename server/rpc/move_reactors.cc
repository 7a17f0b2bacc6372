#include "server/rpc/move_reactors.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/rpc/messages.h"
#include "server/rpc/queued_stream.h"
#include "server/runs/rejection.h"
#include "server/storage/store.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

namespace {

// Bytes a row counts for against the chunk size and the import budget:
// its value and about what its key and framing take on the wire.
int64_t RowBytes(size_t value_size) { return static_cast<int64_t>(value_size) + 32; }

void ObserveCall(StreamHost* host, Rpc rpc, absl::Time start) {
  host->deps().metrics->ObserveRpc(RpcName(rpc), absl::ToDoubleSeconds(absl::Now() - start));
}

// One ExportRun call. Deleted by whichever of OnDone and the commit callback
// (which reads and queues the rows) is last.
class ExportReactor final : public QueuedStream<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  explicit ExportReactor(StreamHost* host) : host_(host), start_(absl::Now()) {}

  void Begin(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
    v1::ExportRunRequest req;
    grpc::ByteBuffer copy(*raw);
    if (absl::Status s = ParseMessage(&copy, host_->limits(), &req); !s.ok()) return End(s);
    if (absl::Status s = host_->CheckRunHeader(ctx, req.name()); !s.ok()) return End(s);
    if (absl::StatusOr<const Principal*> caller = host_->Authenticate(ctx, Rpc::kExportRun);
        !caller.ok()) {
      ObserveCall(host_, Rpc::kExportRun, start_);  // counted by Authenticate
      FinishAfterWrites(ToGrpcStatus(caller.status()));
      return;
    }
    if (req.moved_to().empty()) {
      return End(WithReason(
          absl::InvalidArgumentError("moved_to is empty: name the replica (host:port) the run "
                                     "moves to; the tombstone left here names it"),
          "export_without_target"));
    }
    if (!host_->deps().persistent || host_->deps().store == nullptr) {
      return End(WithReason(absl::FailedPreconditionError(
                                "this spotterd keeps no state (no --state_file): there are no "
                                "stored rows to export"),
                            "export_without_store"));
    }
    absl::StatusOr<std::shared_ptr<Run>> run = host_->runs().Get(req.name());
    if (!run.ok()) return End(run.status());
    if (absl::Status s = host_->Track(this); !s.ok()) {  // shutting down, or stream quota
      ObserveCall(host_, Rpc::kExportRun, start_);       // counted by Track
      FinishAfterWrites(ToGrpcStatus(s));
      return;
    }
    tracked_ = true;
    if (absl::Status s = (*run)->Freeze(req.moved_to()); !s.ok()) return End(s);
    name_ = req.name();
    {
      absl::MutexLock l(&mu_);
      ++refs_;  // the commit callback's
    }
    // Read after the barrier: every change the run acknowledged, and its
    // tombstone record, are in the store by then, and a frozen run changes no
    // more. This runs on the committer thread, holding commits for one run's
    // indexed read.
    host_->committer().Enqueue({}, [this](const absl::Status& commit) {
      Stream(commit);
      Unref();
    });
  }

  void OnDone() override {
    if (tracked_) host_->Untrack(this);
    Unref();
  }

 private:
  void End(const absl::Status& status) {
    host_->CountReject(status);
    ObserveCall(host_, Rpc::kExportRun, start_);
    FinishAfterWrites(ToGrpcStatus(status));
  }

  void Unref() {
    bool last;
    {
      absl::MutexLock l(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  // Queues the run's rows in messages of about kExportChunkBytes.
  void Stream(const absl::Status& commit) {
    if (!commit.ok()) return End(StoreFailed(commit));
    // Parts the receiving replica accepts when its --max_message_bytes is
    // this one's: at most half of it.
    const int64_t part_bytes = std::min<int64_t>(static_cast<int64_t>(kExportChunkBytes),
                                                 host_->limits().max_message_bytes / 2);
    v1::ExportRunResponse chunk;
    int64_t bytes = 0;
    absl::Status s = host_->deps().store->ScanRun(name_, [&](StoredRow&& row) {
      {
        absl::MutexLock l(&mu_);
        if (finishing()) return absl::CancelledError("the client went away");
      }
      bytes += RowBytes(row.value.size());
      v1::RunRow* out = chunk.add_rows();
      out->set_table(static_cast<uint32_t>(row.table));
      out->set_k1(row.k1);
      out->set_k2(row.k2);
      out->set_value(std::move(row.value));
      if (bytes >= part_bytes) {
        Send(chunk);
        chunk.Clear();
        bytes = 0;
      }
      return absl::OkStatus();
    });
    if (s.ok() && chunk.rows_size() > 0) Send(chunk);
    End(s);
  }

  StreamHost* const host_;
  const absl::Time start_;
  std::string name_;
  bool tracked_ = false;               // set before any other thread sees the reactor
  int refs_ ABSL_GUARDED_BY(mu_) = 1;  // OnDone's; +1 while the commit callback is queued
};

// One ImportRun call: reads every message, then imports after the one marked
// `last`. Finish is called exactly once (End), after which nothing is read.
class ImportReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  ImportReactor(StreamHost* host, grpc::CallbackServerContext* ctx, grpc::ByteBuffer* response)
      : host_(host), ctx_(ctx), response_(response), start_(absl::Now()) {}

  void Begin() {
    if (absl::StatusOr<const Principal*> caller = host_->Authenticate(ctx_, Rpc::kImportRun);
        !caller.ok()) {
      ObserveCall(host_, Rpc::kImportRun, start_);  // counted by Authenticate
      Finish(ToGrpcStatus(caller.status()));
      return;
    }
    StartRead(&buf_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side (or went away) before `last`
      return End(Bad(name_.empty() ? absl::StrFormat("the ImportRun stream ended after %d "
                                                     "messages without naming a run",
                                                     messages_)
                                   : absl::StrFormat("the ImportRun stream of run %s ended "
                                                     "after %d messages without one marked "
                                                     "last: nothing was imported",
                                                     name_, messages_)));
    }
    v1::ImportRunRequest req;
    if (absl::Status s = ParseMessage(&buf_, host_->limits(), &req); !s.ok()) return End(s);
    if (name_.empty()) {
      if (req.name().empty()) {
        return End(Bad("the first ImportRun message names no run: expected the run's name"));
      }
      if (absl::Status s = host_->CheckRunHeader(ctx_, req.name()); !s.ok()) return End(s);
      name_ = req.name();
    } else if (!req.name().empty() && req.name() != name_) {
      return End(
          Bad(absl::StrFormat("ImportRun message %d names run %s, the first named %s: "
                              "one call imports one run",
                              messages_, req.name(), name_)));
    }
    ++messages_;
    const int64_t budget = host_->limits().max_import_bytes;
    for (v1::RunRow& row : *req.mutable_rows()) {
      if (row.table() < static_cast<uint32_t>(Table::kRuns) ||
          row.table() > static_cast<uint32_t>(Table::kDirectives)) {
        return End(
            Bad(absl::StrFormat("row %d of run %s names table %d: expected 1 (runs) to 8 "
                                "(directives), as ExportRun streams them",
                                rows_.size(), name_, row.table())));
      }
      bytes_ += RowBytes(row.value().size());
      if (bytes_ > budget) {
        return End(
            WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                           "run %s's rows take more than %d bytes, the most one import may hold "
                           "(--max_import_bytes); raise it on this replica and run the move again",
                           name_, budget)),
                       "import_too_large"));
      }
      rows_.push_back({static_cast<Table>(row.table()), name_, row.k1(), row.k2(),
                       std::move(*row.mutable_value())});
    }
    if (!req.last()) {
      StartRead(&buf_);
      return;
    }
    Import();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Bad(const std::string& message) {
    return WithReason(absl::InvalidArgumentError(message), "import_bad_rows");
  }

  void End(const absl::Status& status) {
    host_->CountReject(status);
    ObserveCall(host_, Rpc::kImportRun, start_);
    Finish(ToGrpcStatus(status));
  }

  void Import() {
    if (rows_.empty()) {
      return End(
          Bad(absl::StrFormat("ImportRun of run %s carries no rows: expected the rows "
                              "ExportRun streamed for it",
                              name_)));
    }
    absl::StatusOr<std::shared_ptr<Run>> run = host_->runs().Import(name_, std::move(rows_));
    rows_.clear();
    if (!run.ok()) return End(run.status());
    // Answer once the rows are durable.
    host_->committer().Enqueue({}, [this, run = *run](const absl::Status& commit) {
      if (!commit.ok()) return End(StoreFailed(commit));
      v1::ImportRunResponse resp;
      *resp.mutable_run() = run->Info();
      *response_ = Serialize(resp);
      End(absl::OkStatus());
    });
  }

  StreamHost* const host_;
  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const response_;
  const absl::Time start_;
  grpc::ByteBuffer buf_;
  std::string name_;
  int messages_ = 0;
  int64_t bytes_ = 0;
  std::vector<StoredRow> rows_;
};

}  // namespace

absl::Status StoreFailed(const absl::Status& commit) {
  return WithReason(absl::UnavailableError(absl::StrFormat(
                        "the server cannot persist its state (%s); the change may be lost: "
                        "retry after the server restarts",
                        commit.message())),
                    "store_failed");
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* StartExport(StreamHost* host,
                                                        grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* raw) {
  auto* reactor = new ExportReactor(host);
  reactor->Begin(ctx, raw);
  return reactor;
}

grpc::ServerReadReactor<grpc::ByteBuffer>* StartImport(StreamHost* host,
                                                       grpc::CallbackServerContext* ctx,
                                                       grpc::ByteBuffer* response) {
  auto* reactor = new ImportReactor(host, ctx, response);
  reactor->Begin();
  return reactor;
}

}  // namespace spotter
