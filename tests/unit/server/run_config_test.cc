// The RunConfig field table (server/runs/run_config.h) against its three
// other sources: the proto (every field has an entry, each comment's
// `[default]` is the table's), the core structs (a default of a field the
// core holds is the core struct's default member) and the resolution clients
// see (defaults, range errors and their order, idempotence).
#include "server/runs/run_config.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

#ifndef SPOTTER_SOURCE_DIR
#error "SPOTTER_SOURCE_DIR must name the source tree (tests/CMakeLists.txt)"
#endif

namespace spotter {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// RunConfig fields that are deliberately not table entries.
const std::set<std::string>& NotInTable() {
  static const auto* const kFields = new std::set<std::string>{
      "labels",  // free-form, shown in ListRuns; not part of the run (ConfigDifference skips it)
  };
  return *kFields;
}

// Message fields whose own fields are entries ("phase.warmup_fraction").
const std::set<std::string>& NestedMessages() {
  static const auto* const kFields = new std::set<std::string>{"projection", "phase"};
  return *kFields;
}

const ConfigField* Find(const std::string& path) {
  for (const ConfigField& f : RunConfigFields()) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

v1::RunConfig Minimal(uint64_t total_steps, double peak_lr) {
  v1::RunConfig c;
  c.set_total_steps(total_steps);
  c.set_peak_lr(peak_lr);
  return c;
}

// The run the core structs' defaults describe: with their total_steps and
// peak_lr every derived default equals the core default too.
v1::RunConfig CoreReference() {
  return Minimal(ControllerConfig{}.total_steps, ControllerConfig{}.peak_lr);
}

v1::RunConfig Resolved(const v1::RunConfig& c, const Limits& limits = Limits{}) {
  absl::StatusOr<v1::RunConfig> r = ResolveRunConfig(c, limits);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : v1::RunConfig{};
}

double Number(const ConfigValue& v) { return std::get<double>(v); }

// Every scalar path below `d`, prefixed by `prefix`; fails on any field that
// is neither a scalar, a listed nested message nor listed as not in the table.
void CollectScalarPaths(const Descriptor* d, const std::string& prefix,
                        std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = prefix + f->name();
    if (NotInTable().count(path) != 0) continue;
    if (f->is_repeated()) {
      ADD_FAILURE() << path << " is repeated: decide its default and comparison, then list it";
      continue;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      EXPECT_EQ(NestedMessages().count(path), 1u)
          << path << " is a new nested message: list it in NestedMessages() once its fields "
          << "have entries";
      CollectScalarPaths(f->message_type(), path + ".", out);
      continue;
    }
    out->push_back(path);
  }
}

// ---------------------------------------------------------------------------
// The table against the proto.

TEST(RunConfigFieldsTest, EveryProtoFieldHasAnEntry) {
  std::vector<std::string> paths;
  CollectScalarPaths(v1::RunConfig::descriptor(), "", &paths);
  ASSERT_FALSE(paths.empty());
  for (const std::string& path : paths) {
    EXPECT_NE(Find(path), nullptr) << "RunConfig field " << path << " has no entry in "
                                   << "RunConfigFields() (server/runs/run_config.cc)";
  }
  EXPECT_EQ(RunConfigFields().size(), paths.size());
}

TEST(RunConfigFieldsTest, EveryEntryNamesOneScalarField) {
  std::set<std::string_view> seen;
  for (const ConfigField& f : RunConfigFields()) {
    EXPECT_TRUE(seen.insert(f.path).second) << f.path << " is listed twice";
    ASSERT_FALSE(f.descriptors.empty()) << f.path;
    std::vector<std::string> names;
    for (const FieldDescriptor* d : f.descriptors) names.push_back(d->name());
    EXPECT_EQ(absl::StrJoin(names, "."), f.path);
    EXPECT_NE(f.descriptors.back()->cpp_type(), FieldDescriptor::CPPTYPE_MESSAGE) << f.path;
  }
}

TEST(RunConfigFieldsTest, EntriesAreWellFormed) {
  for (const ConfigField& f : RunConfigFields()) {
    SCOPED_TRACE(std::string(f.path));
    const FieldDescriptor* leaf = f.descriptors.back();
    const bool takes_default = f.rule == DefaultRule::kIfZero || f.rule == DefaultRule::kIfUnset;
    EXPECT_EQ(f.default_value != nullptr, takes_default);
    EXPECT_EQ(f.to_core != nullptr, f.from_core != nullptr);
    // `optional` fields have presence; their default applies only when unset.
    EXPECT_EQ(f.rule == DefaultRule::kIfUnset, leaf->has_presence());
    if (f.rule == DefaultRule::kRequired) {
      EXPECT_NE(f.out_of_range, nullptr);
    }
    if (leaf->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      EXPECT_EQ(f.out_of_range, nullptr);
      EXPECT_EQ(f.to_core, nullptr);
    }
  }
}

// The proto file, as far as the default comments go.
struct ProtoDoc {
  // "PhaseConfig.warmup_fraction" -> its leading comment, lines joined by
  // spaces.
  std::map<std::string, std::string> comments;
  // Enum value name -> the whole line declaring it (with its comment).
  std::map<std::string, std::string> enum_lines;
};

ProtoDoc ParseProto() {
  ProtoDoc doc;
  const std::string path = std::string(SPOTTER_SOURCE_DIR) + "/proto/spotter/v1/spotter.proto";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  const std::regex message_re(R"(^\s*message\s+(\w+)\s*\{)");
  const std::regex field_re(R"(^\s*(optional\s+)?[\w.]+\s+(\w+)\s*=\s*\d+\s*;(.*)$)");
  const std::regex enum_value_re(R"(^\s*(\w+)\s*=\s*-?\d+\s*;.*$)");
  std::string line, message, pending;
  int depth = 0;
  while (std::getline(in, line)) {
    const absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    std::smatch m;
    if (absl::StartsWith(trimmed, "//")) {
      absl::StrAppend(&pending, pending.empty() ? "" : " ",
                      absl::StripAsciiWhitespace(trimmed.substr(2)));
      continue;
    }
    if (depth == 0 && std::regex_search(line, m, message_re)) {
      message = m[1].str();
    } else if (depth == 1 && !message.empty() && std::regex_search(line, m, field_re)) {
      doc.comments[message + "." + m[2].str()] = pending;
    } else if (std::regex_search(line, m, enum_value_re)) {
      doc.enum_lines[m[1].str()] = line;
    }
    pending.clear();
    for (char c : line) depth += c == '{' ? 1 : c == '}' ? -1 : 0;
    if (depth == 0) message.clear();
  }
  return doc;
}

// The `[...]` groups of `comment` that state a default: every bracket but
// those of "Range [a, b]".
std::vector<std::string> DefaultBrackets(const std::string& comment) {
  std::vector<std::string> out;
  const std::regex bracket_re(R"(\[([^\]]*)\])");
  for (auto it = std::sregex_iterator(comment.begin(), comment.end(), bracket_re);
       it != std::sregex_iterator(); ++it) {
    const std::string before = comment.substr(0, static_cast<size_t>(it->position()));
    if (absl::EndsWith(absl::StripTrailingAsciiWhitespace(before), "Range")) continue;
    out.push_back((*it)[1]);
  }
  return out;
}

TEST(RunConfigFieldsTest, ProtoCommentsStateTheTableDefaults) {
  const ProtoDoc doc = ParseProto();
  ASSERT_FALSE(doc.comments.empty());
  // Derived defaults evaluate on the core reference run; a comment stating a
  // number ("[64]" for sketch_rows = min(64, sketch_dim)) means that run.
  const v1::RunConfig reference = Resolved(CoreReference());
  for (const ConfigField& f : RunConfigFields()) {
    SCOPED_TRACE(std::string(f.path));
    const FieldDescriptor* leaf = f.descriptors.back();
    const std::string key = absl::StrCat(leaf->containing_type()->name(), ".", leaf->name());
    ASSERT_EQ(doc.comments.count(key), 1u) << key << " not found in spotter.proto";
    const std::vector<std::string> brackets = DefaultBrackets(doc.comments.at(key));
    if (leaf->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
      // Enum defaults are stated at the enum: "X_UNSPECIFIED = 0; // server default: Y".
      EXPECT_TRUE(brackets.empty());
      const std::string zero = leaf->enum_type()->FindValueByNumber(0)->name();
      ASSERT_TRUE(absl::EndsWith(zero, "UNSPECIFIED")) << zero;
      const std::string prefix(absl::StripSuffix(zero, "UNSPECIFIED"));
      ASSERT_EQ(doc.enum_lines.count(zero), 1u) << zero << " not found in spotter.proto";
      std::smatch m;
      const std::regex stated_re(R"(server default:\s*(\w+))");
      ASSERT_TRUE(std::regex_search(doc.enum_lines.at(zero), m, stated_re))
          << zero << " states no server default";
      const int value = static_cast<int>(Number(f.default_value(reference)));
      EXPECT_EQ(prefix + m[1].str(), leaf->enum_type()->FindValueByNumber(value)->name());
      continue;
    }
    if (f.default_value == nullptr) {
      EXPECT_TRUE(brackets.empty()) << "a field without a default states one";
      continue;
    }
    ASSERT_EQ(brackets.size(), 1u) << "the comment of " << key << " must state [its default]";
    const std::string& stated = brackets[0];
    const ConfigValue value = f.default_value(reference);
    if (std::holds_alternative<std::string>(value)) {
      EXPECT_EQ(stated, absl::StrCat("\"", std::get<std::string>(value), "\""));
      continue;
    }
    const std::string first_token = stated.substr(0, stated.find(' '));
    double number = 0;
    if (absl::SimpleAtod(first_token, &number)) {
      EXPECT_DOUBLE_EQ(number, Number(value)) << "proto states [" << stated << "]";
    } else {
      // A formula: the table states it as the proto does.
      EXPECT_EQ(stated, f.formula);
    }
  }
}

// ---------------------------------------------------------------------------
// The table against the core structs.

TEST(RunConfigFieldsTest, DefaultsAreTheCoreDefaults) {
  const v1::RunConfig reference = Resolved(CoreReference());
  const RunCoreConfig core_defaults;
  for (const ConfigField& f : RunConfigFields()) {
    if (f.from_core == nullptr || f.default_value == nullptr) continue;
    SCOPED_TRACE(std::string(f.path));
    EXPECT_DOUBLE_EQ(Number(f.default_value(reference)), f.from_core(core_defaults));
    if (f.formula.empty()) {
      // A constant default does not depend on the run.
      EXPECT_DOUBLE_EQ(Number(f.default_value(Minimal(7777, 3.5))), f.from_core(core_defaults));
    }
  }
}

// A value of `leaf`'s type unlike its default and any default: the mapping to
// the core member must carry it.
ConfigValue Distinctive(const FieldDescriptor* leaf) {
  switch (leaf->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return 0.375;
    case FieldDescriptor::CPPTYPE_ENUM:
      return static_cast<double>(
          leaf->enum_type()->value(leaf->enum_type()->value_count() - 1)->number());
    default:
      return 37.0;
  }
}

TEST(RunConfigFieldsTest, CoreMappingCarriesTheProtoValue) {
  for (const ConfigField& f : RunConfigFields()) {
    if (f.to_core == nullptr) continue;
    SCOPED_TRACE(std::string(f.path));
    v1::RunConfig c;
    const ConfigValue v = Distinctive(f.descriptors.back());
    SetConfigValue(&c, f, v);
    EXPECT_EQ(GetConfigValue(c, f), v);
    RunCoreConfig core;
    f.to_core(c, &core);
    double expected = Number(v);
    // The core has no SRHT; the server maps it to COUNT_SKETCH (ToProjectionKind).
    if (f.path == "projection.kind" && expected == v1::PROJECTION_KIND_SRHT) {
      expected = v1::PROJECTION_KIND_COUNT_SKETCH;
    }
    EXPECT_DOUBLE_EQ(f.from_core(core), expected);
    // The mapping writes only its own member: from every other entry's view
    // the core structs keep their defaults.
    for (const ConfigField& g : RunConfigFields()) {
      if (g.from_core == nullptr || &g == &f) continue;
      EXPECT_DOUBLE_EQ(g.from_core(core), g.from_core(RunCoreConfig{})) << "and " << g.path;
    }
  }
}

template <typename T>
void ExpectSame(const T& a, const T& b, const char* member) {
  if constexpr (std::is_floating_point_v<T>) {
    EXPECT_DOUBLE_EQ(a, b) << member;
  } else {
    EXPECT_TRUE(a == b) << member;
  }
}
#define EXPECT_MEMBER(a, b, member) ExpectSame((a).member, (b).member, #member)

TEST(RunConfigFieldsTest, DefaultRunGivesTheDefaultCoreStructs) {
  const v1::RunConfig c = Resolved(CoreReference());
  const ControllerConfig got = ToControllerConfig(c), want;
  EXPECT_MEMBER(got, want, total_steps);
  EXPECT_MEMBER(got, want, steps_per_epoch);
  EXPECT_MEMBER(got, want, base_lr);
  EXPECT_MEMBER(got, want, peak_lr);
  EXPECT_MEMBER(got, want, sketch_rows);
  EXPECT_MEMBER(got, want, warmup_fraction);
  EXPECT_MEMBER(got, want, id_drop_threshold);
  EXPECT_MEMBER(got, want, rank_fraction_max);
  EXPECT_MEMBER(got, want, plateau_epsilon);
  EXPECT_MEMBER(got, want, window_evals);
  EXPECT_MEMBER(got, want, loss_decrease_min);
  EXPECT_MEMBER(got, want, confirm_evals);
  EXPECT_MEMBER(got, want, hysteresis);
  EXPECT_MEMBER(got, want, min_dwell_steps);
  EXPECT_MEMBER(got, want, lr_cut);
  EXPECT_MEMBER(got, want, refine_loss_rate_min);
  EXPECT_MEMBER(got, want, refine_budget_fraction);
  EXPECT_MEMBER(got, want, lr_min);
  EXPECT_MEMBER(got, want, val_patience);
  EXPECT_MEMBER(got, want, val_min_delta);
  EXPECT_MEMBER(got, want, val_maximize);
  EXPECT_MEMBER(got, want, kfac_damping);
  EXPECT_MEMBER(got, want, kfac_factor_interval);
  EXPECT_MEMBER(got, want, kfac_inverse_interval);
  EXPECT_MEMBER(got, want, noise_std);

  const WindowOptions window = ToWindowOptions(c), window_want;
  EXPECT_MEMBER(window, window_want, kind);
  EXPECT_MEMBER(window, window_want, decay);
  EXPECT_MEMBER(window, window_want, window_steps);

  const SpectrumOptions spectrum = ToSpectrumOptions(c), spectrum_want;
  EXPECT_MEMBER(spectrum, spectrum_want, mass);
  EXPECT_MEMBER(spectrum, spectrum_want, sketch_rows);
  EXPECT_MEMBER(spectrum, spectrum_want, dim);
  EXPECT_MEMBER(spectrum, spectrum_want, projection);
  EXPECT_MEMBER(spectrum, spectrum_want, correct_projection);
  EXPECT_MEMBER(spectrum, spectrum_want, effective_samples);
  EXPECT_MEMBER(spectrum, spectrum_want, point_shift);
}

TEST(RunConfigFieldsTest, AnyRunKeepsTheCoreDefaultsItDoesNotDerive) {
  v1::RunConfig in = Minimal(5000, 0.3);
  in.set_sketch_dim(32);
  const ControllerConfig got = ToControllerConfig(Resolved(in)), want;
  // Derived from the run.
  EXPECT_EQ(got.total_steps, 5000u);
  EXPECT_EQ(got.steps_per_epoch, 500u);
  EXPECT_DOUBLE_EQ(got.peak_lr, 0.3);
  EXPECT_DOUBLE_EQ(got.base_lr, 0.03);
  EXPECT_DOUBLE_EQ(got.lr_min, 0.003);
  EXPECT_EQ(got.min_dwell_steps, 250u);
  EXPECT_EQ(got.sketch_rows, 32);
  // Everything else is the core default.
  EXPECT_MEMBER(got, want, warmup_fraction);
  EXPECT_MEMBER(got, want, id_drop_threshold);
  EXPECT_MEMBER(got, want, rank_fraction_max);
  EXPECT_MEMBER(got, want, plateau_epsilon);
  EXPECT_MEMBER(got, want, window_evals);
  EXPECT_MEMBER(got, want, loss_decrease_min);
  EXPECT_MEMBER(got, want, confirm_evals);
  EXPECT_MEMBER(got, want, hysteresis);
  EXPECT_MEMBER(got, want, lr_cut);
  EXPECT_MEMBER(got, want, refine_loss_rate_min);
  EXPECT_MEMBER(got, want, refine_budget_fraction);
  EXPECT_MEMBER(got, want, val_patience);
  EXPECT_MEMBER(got, want, val_min_delta);
  EXPECT_MEMBER(got, want, val_maximize);
  EXPECT_MEMBER(got, want, kfac_damping);
  EXPECT_MEMBER(got, want, kfac_factor_interval);
  EXPECT_MEMBER(got, want, kfac_inverse_interval);
  EXPECT_MEMBER(got, want, noise_std);
}

// ---------------------------------------------------------------------------
// Resolution.

TEST(ResolveRunConfigTest, EmptyConfigGetsEveryDefault) {
  const v1::RunConfig in = Minimal(5000, 0.3);
  const v1::RunConfig c = Resolved(in);
  for (const ConfigField& f : RunConfigFields()) {
    SCOPED_TRACE(std::string(f.path));
    if (f.default_value == nullptr) {
      EXPECT_EQ(GetConfigValue(c, f), GetConfigValue(in, f)) << "kept as sent";
    } else {
      EXPECT_EQ(GetConfigValue(c, f), f.default_value(c));
    }
  }
  // What clients see today (docs/API.md), derived defaults included.
  EXPECT_EQ(c.projection().kind(), v1::PROJECTION_KIND_COUNT_SKETCH);
  EXPECT_EQ(c.sketch_dim(), 256u);
  EXPECT_EQ(c.sketch_rows(), 64u);
  EXPECT_EQ(c.window(), v1::WINDOW_KIND_EXPONENTIAL);
  EXPECT_DOUBLE_EQ(c.decay(), 0.99);
  EXPECT_EQ(c.window_steps(), 200u);
  EXPECT_EQ(c.eval_every(), 10u);
  EXPECT_EQ(c.world_size(), 1u);
  EXPECT_EQ(c.steps_per_epoch(), 500u);
  EXPECT_DOUBLE_EQ(c.base_lr(), 0.03);
  EXPECT_EQ(c.mode(), v1::MODE_CONTROL);
  EXPECT_DOUBLE_EQ(c.phase().warmup_fraction(), 0.15);
  EXPECT_DOUBLE_EQ(c.phase().hysteresis(), 1.5);
  EXPECT_EQ(c.phase().min_dwell_steps(), 250u);
  EXPECT_DOUBLE_EQ(c.phase().lr_min(), 0.003);
  EXPECT_EQ(c.phase().val_metric(), "val_loss");
  EXPECT_EQ(c.phase().val_goal(), v1::METRIC_GOAL_MINIMIZE);
  EXPECT_DOUBLE_EQ(c.phase().delivery_budget_seconds(), 2.0);
  EXPECT_DOUBLE_EQ(c.phase().noise_std(), 0.0);
}

TEST(ResolveRunConfigTest, DerivedDefaultsFollowTheRun) {
  v1::RunConfig in = Minimal(15, 2.0);
  in.set_sketch_dim(8);
  const v1::RunConfig c = Resolved(in);
  EXPECT_EQ(c.sketch_rows(), 8u);              // min(64, sketch_dim)
  EXPECT_EQ(c.steps_per_epoch(), 1u);          // max(1, total_steps / 10)
  EXPECT_EQ(c.phase().min_dwell_steps(), 1u);  // max(1, total_steps / 20)
  EXPECT_DOUBLE_EQ(c.base_lr(), 0.2);
  EXPECT_DOUBLE_EQ(c.phase().lr_min(), 0.02);
}

TEST(ResolveRunConfigTest, ExplicitValuesAreKept) {
  v1::RunConfig in = Minimal(1000, 0.1);
  in.set_base_lr(0.0);  // optional: an explicit 0 is a value
  in.mutable_phase()->set_lr_min(0.0);
  in.mutable_projection()->set_seed(0);
  in.mutable_projection()->set_kind(v1::PROJECTION_KIND_GAUSSIAN);
  in.set_window(v1::WINDOW_KIND_FIXED);
  in.mutable_phase()->set_val_goal(v1::METRIC_GOAL_MAXIMIZE);
  in.mutable_phase()->set_val_metric("accuracy");
  in.mutable_phase()->set_lr_cut(0.25);
  in.mutable_phase()->set_noise_std(0.5);
  const v1::RunConfig c = Resolved(in);
  EXPECT_TRUE(c.has_base_lr());
  EXPECT_EQ(c.base_lr(), 0.0);
  EXPECT_EQ(c.phase().lr_min(), 0.0);
  EXPECT_EQ(c.projection().kind(), v1::PROJECTION_KIND_GAUSSIAN);
  EXPECT_EQ(c.window(), v1::WINDOW_KIND_FIXED);
  EXPECT_EQ(c.phase().val_goal(), v1::METRIC_GOAL_MAXIMIZE);
  EXPECT_EQ(c.phase().val_metric(), "accuracy");
  EXPECT_EQ(c.phase().lr_cut(), 0.25);
  EXPECT_EQ(c.phase().noise_std(), 0.5);
  const ControllerConfig core = ToControllerConfig(c);
  EXPECT_TRUE(core.val_maximize);
  EXPECT_EQ(core.base_lr, 0.0);
  EXPECT_EQ(ToWindowOptions(c).kind, WindowKind::kFixed);
  EXPECT_EQ(ToSpectrumOptions(c).projection, ProjectionKind::kGaussian);
}

TEST(ResolveRunConfigTest, ResolvedConfigResolvesToItself) {
  v1::RunConfig custom = Minimal(123456, 0.02);
  custom.set_sketch_dim(512);
  custom.set_sketch_rows(100);
  custom.set_base_lr(0.0);
  custom.set_window(v1::WINDOW_KIND_FIXED);
  custom.set_window_steps(1000);
  custom.set_mode(v1::MODE_ADVISE);
  custom.mutable_phase()->set_hysteresis(2.5);
  custom.mutable_phase()->set_lr_min(0.0);
  custom.mutable_phase()->set_val_goal(v1::METRIC_GOAL_MAXIMIZE);
  (*custom.mutable_labels())["team"] = "a";
  for (const v1::RunConfig& in : {Minimal(1, 1e-6), Minimal(5000, 0.3), CoreReference(), custom}) {
    const v1::RunConfig once = Resolved(in);
    const v1::RunConfig twice = Resolved(once);
    EXPECT_TRUE(MessageDifferencer::Equals(once, twice)) << once.DebugString();
    EXPECT_EQ(ConfigDifference(once, twice), "");
  }
}

struct BadValue {
  std::string name;             // what the case sets
  void (*set)(v1::RunConfig*);  // applied to Minimal(1000, 0.1)
  std::string field;            // the table path the case covers
  std::string message;          // the whole error message
};

std::vector<BadValue> BadValues() {
  return {
      {"total_steps 0", [](v1::RunConfig* c) { c->set_total_steps(0); }, "total_steps",
       "config.total_steps = 0 is out of range: expected > 0 (required)"},
      {"total_steps 2^40+1", [](v1::RunConfig* c) { c->set_total_steps((uint64_t{1} << 40) + 1); },
       "total_steps", "config.total_steps = 1.09951e+12 is out of range: expected <= 2^40"},
      {"peak_lr 0", [](v1::RunConfig* c) { c->set_peak_lr(0); }, "peak_lr",
       "config.peak_lr = 0 is out of range: expected a finite value > 0 (required)"},
      {"peak_lr inf",
       [](v1::RunConfig* c) { c->set_peak_lr(std::numeric_limits<double>::infinity()); }, "peak_lr",
       "config.peak_lr = inf is out of range: expected a finite value > 0 (required)"},
      {"projection.kind 99",
       [](v1::RunConfig* c) {
         c->mutable_projection()->set_kind(static_cast<v1::ProjectionKind>(99));
       },
       "projection.kind",
       "config.projection.kind = 99 is out of range: expected a ProjectionKind value"},
      {"window 7", [](v1::RunConfig* c) { c->set_window(static_cast<v1::WindowKind>(7)); },
       "window", "config.window = 7 is out of range: expected a WindowKind value"},
      {"mode -1", [](v1::RunConfig* c) { c->set_mode(static_cast<v1::Mode>(-1)); }, "mode",
       "config.mode = -1 is out of range: expected a Mode value"},
      {"phase.val_goal 5",
       [](v1::RunConfig* c) { c->mutable_phase()->set_val_goal(static_cast<v1::MetricGoal>(5)); },
       "phase.val_goal", "config.phase.val_goal = 5 is out of range: expected a MetricGoal value"},
      {"sketch_dim 1", [](v1::RunConfig* c) { c->set_sketch_dim(1); }, "sketch_dim",
       "config.sketch_dim = 1 is out of range: expected in [2, 16384] (server limit)"},
      {"sketch_dim 16385", [](v1::RunConfig* c) { c->set_sketch_dim(16385); }, "sketch_dim",
       "config.sketch_dim = 16385 is out of range: expected in [2, 16384] (server limit)"},
      {"sketch_rows 1", [](v1::RunConfig* c) { c->set_sketch_rows(1); }, "sketch_rows",
       "config.sketch_rows = 1 is out of range: expected in [2, min(sketch_dim = 256, 1024)]"},
      {"sketch_rows > sketch_dim",
       [](v1::RunConfig* c) {
         c->set_sketch_dim(32);
         c->set_sketch_rows(33);
       },
       "sketch_rows",
       "config.sketch_rows = 33 is out of range: expected in [2, min(sketch_dim = 32, 1024)]"},
      {"sketch_rows > limit",
       [](v1::RunConfig* c) {
         c->set_sketch_dim(4096);
         c->set_sketch_rows(1025);
       },
       "sketch_rows",
       "config.sketch_rows = 1025 is out of range: expected in [2, min(sketch_dim = 4096, "
       "1024)]"},
      {"decay 1.5", [](v1::RunConfig* c) { c->set_decay(1.5); }, "decay",
       "config.decay = 1.5 is out of range: expected in (0, 1]"},
      {"decay -0.5", [](v1::RunConfig* c) { c->set_decay(-0.5); }, "decay",
       "config.decay = -0.5 is out of range: expected in (0, 1]"},
      {"decay nan",
       [](v1::RunConfig* c) { c->set_decay(std::numeric_limits<double>::quiet_NaN()); }, "decay",
       "config.decay = nan is out of range: expected in (0, 1]"},
      {"window_steps 2^32+1",
       [](v1::RunConfig* c) { c->set_window_steps((uint64_t{1} << 32) + 1); }, "window_steps",
       "config.window_steps = 4.29497e+09 is out of range: expected in [1, 2^32]"},
      {"eval_every 1000001", [](v1::RunConfig* c) { c->set_eval_every(1000001); }, "eval_every",
       "config.eval_every = 1e+06 is out of range: expected in [1, 1000000]"},
      {"world_size 65537", [](v1::RunConfig* c) { c->set_world_size(65537); }, "world_size",
       "config.world_size = 65537 is out of range: expected in [1, 65536] (server limit)"},
      {"base_lr -1", [](v1::RunConfig* c) { c->set_base_lr(-1); }, "base_lr",
       "config.base_lr = -1 is out of range: expected a finite value >= 0"},
      {"phase.delivery_budget_seconds 3601",
       [](v1::RunConfig* c) { c->mutable_phase()->set_delivery_budget_seconds(3601); },
       "phase.delivery_budget_seconds",
       "config.phase.delivery_budget_seconds = 3601 is out of range: expected in (0, 3600]"},
      {"phase.delivery_budget_seconds -1",
       [](v1::RunConfig* c) { c->mutable_phase()->set_delivery_budget_seconds(-1); },
       "phase.delivery_budget_seconds",
       "config.phase.delivery_budget_seconds = -1 is out of range: expected in (0, 3600]"},
      // The ControllerConfig ranges (ControllerConfig::Validate names the core member).
      {"phase.warmup_fraction 1",
       [](v1::RunConfig* c) { c->mutable_phase()->set_warmup_fraction(1); },
       "phase.warmup_fraction", "config.warmup_fraction = 1 is out of range: expected in (0, 1)"},
      {"phase.id_drop_threshold 10",
       [](v1::RunConfig* c) { c->mutable_phase()->set_id_drop_threshold(10); },
       "phase.id_drop_threshold",
       "config.id_drop_threshold = 10 is out of range: expected in (0, 10)"},
      {"phase.rank_fraction_max 1.5",
       [](v1::RunConfig* c) { c->mutable_phase()->set_rank_fraction_max(1.5); },
       "phase.rank_fraction_max",
       "config.rank_fraction_max = 1.5 is out of range: expected in (0, 1]"},
      {"phase.plateau_epsilon 10",
       [](v1::RunConfig* c) { c->mutable_phase()->set_plateau_epsilon(10); },
       "phase.plateau_epsilon", "config.plateau_epsilon = 10 is out of range: expected in (0, 10)"},
      {"phase.window_evals 1001",
       [](v1::RunConfig* c) { c->mutable_phase()->set_window_evals(1001); }, "phase.window_evals",
       "config.window_evals = 1001 is out of range: expected in [1, 1000]"},
      {"phase.loss_decrease_min -1",
       [](v1::RunConfig* c) { c->mutable_phase()->set_loss_decrease_min(-1); },
       "phase.loss_decrease_min",
       "config.loss_decrease_min = -1 is out of range: expected in [0, 10)"},
      {"phase.confirm_evals 1001",
       [](v1::RunConfig* c) { c->mutable_phase()->set_confirm_evals(1001); }, "phase.confirm_evals",
       "config.confirm_evals = 1001 is out of range: expected in [1, 1000]"},
      {"phase.hysteresis 0.5", [](v1::RunConfig* c) { c->mutable_phase()->set_hysteresis(0.5); },
       "phase.hysteresis", "config.hysteresis = 0.5 is out of range: expected in [1, 100)"},
      {"phase.lr_cut 1.5", [](v1::RunConfig* c) { c->mutable_phase()->set_lr_cut(1.5); },
       "phase.lr_cut", "config.lr_cut = 1.5 is out of range: expected in (0, 1]"},
      {"phase.refine_loss_rate_min 10",
       [](v1::RunConfig* c) { c->mutable_phase()->set_refine_loss_rate_min(10); },
       "phase.refine_loss_rate_min",
       "config.refine_loss_rate_min = 10 is out of range: expected in [0, 10)"},
      {"phase.refine_budget_fraction 1.5",
       [](v1::RunConfig* c) { c->mutable_phase()->set_refine_budget_fraction(1.5); },
       "phase.refine_budget_fraction",
       "config.refine_budget_fraction = 1.5 is out of range: expected in (0, 1]"},
      {"phase.lr_min -1", [](v1::RunConfig* c) { c->mutable_phase()->set_lr_min(-1); },
       "phase.lr_min", "config.lr_min = -1 is out of range: expected a finite value >= 0"},
      {"phase.val_patience 100001",
       [](v1::RunConfig* c) { c->mutable_phase()->set_val_patience(100001); }, "phase.val_patience",
       "config.val_patience = 100001 is out of range: expected in [1, 100000]"},
      {"phase.val_min_delta -1",
       [](v1::RunConfig* c) { c->mutable_phase()->set_val_min_delta(-1); }, "phase.val_min_delta",
       "config.val_min_delta = -1 is out of range: expected a finite value >= 0"},
      {"phase.kfac_damping -1", [](v1::RunConfig* c) { c->mutable_phase()->set_kfac_damping(-1); },
       "phase.kfac_damping",
       "config.kfac_damping = -1 is out of range: expected a finite value > 0"},
      {"projection.input_dim above sketch_dim with the identity",
       [](v1::RunConfig* c) {
         c->mutable_projection()->set_kind(v1::PROJECTION_KIND_IDENTITY);
         c->mutable_projection()->set_input_dim(1000);
       },
       "projection.input_dim",
       "config.projection.input_dim = 1000 is out of range: expected at most sketch_dim (256) "
       "with PROJECTION_KIND_IDENTITY (unprojected rows)"},
      {"phase.noise_std 100", [](v1::RunConfig* c) { c->mutable_phase()->set_noise_std(100); },
       "phase.noise_std", "config.noise_std = 100 is out of range: expected in [0, 100)"},
      // The guarded switch (docs/PHASES.md).
      {"phase.divergence_loss_rate -1",
       [](v1::RunConfig* c) { c->mutable_phase()->set_divergence_loss_rate(-1); },
       "phase.divergence_loss_rate",
       "config.divergence_loss_rate = -1 is out of range: expected in (0, 10)"},
      {"phase.rollback_loss_margin 100",
       [](v1::RunConfig* c) { c->mutable_phase()->set_rollback_loss_margin(100); },
       "phase.rollback_loss_margin",
       "config.rollback_loss_margin = 100 is out of range: expected in (0, 100)"},
      {"phase.rollback_lr_factor 1.5",
       [](v1::RunConfig* c) { c->mutable_phase()->set_rollback_lr_factor(1.5); },
       "phase.rollback_lr_factor",
       "config.rollback_lr_factor = 1.5 is out of range: expected in (0, 1]"},
      {"phase.rollback_max_retries 101",
       [](v1::RunConfig* c) { c->mutable_phase()->set_rollback_max_retries(101); },
       "phase.rollback_max_retries",
       "config.rollback_max_retries = 101 is out of range: expected in [0, 100]"},
      {"phase.retry_plateau_factor 2",
       [](v1::RunConfig* c) { c->mutable_phase()->set_retry_plateau_factor(2); },
       "phase.retry_plateau_factor",
       "config.retry_plateau_factor = 2 is out of range: expected in (0, 1]"},
      {"phase.retry_damping_factor 0.5",
       [](v1::RunConfig* c) { c->mutable_phase()->set_retry_damping_factor(0.5); },
       "phase.retry_damping_factor",
       "config.retry_damping_factor = 0.5 is out of range: expected in [1, 1e6]"},
  };
}

TEST(ResolveRunConfigTest, EachOutOfRangeValueNamesItsField) {
  std::set<std::string> covered;
  for (const BadValue& bad : BadValues()) {
    SCOPED_TRACE(bad.name);
    ASSERT_NE(Find(bad.field), nullptr) << bad.field;
    covered.insert(bad.field);
    v1::RunConfig c = Minimal(1000, 0.1);
    bad.set(&c);
    const absl::StatusOr<v1::RunConfig> r = ResolveRunConfig(c, Limits{});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), bad.message) << r.status().message();
  }
  // Every range the server checks itself, and every enum, has a case.
  for (const ConfigField& f : RunConfigFields()) {
    const bool is_enum = f.descriptors.back()->cpp_type() == FieldDescriptor::CPPTYPE_ENUM;
    if (f.out_of_range != nullptr || is_enum) {
      EXPECT_EQ(covered.count(std::string(f.path)), 1u) << f.path << " has no bad-value case";
    }
  }
}

TEST(ResolveRunConfigTest, LimitsBoundTheSizes) {
  Limits limits;
  limits.max_sketch_dim = 64;
  limits.max_sketch_rows = 16;
  limits.max_world_size = 4;
  EXPECT_EQ(ResolveRunConfig(Minimal(1000, 0.1), limits).status().message(),
            "config.sketch_dim = 256 is out of range: expected in [2, 64] (server limit)");
  v1::RunConfig c = Minimal(1000, 0.1);
  c.set_sketch_dim(32);
  EXPECT_EQ(ResolveRunConfig(c, limits).status().message(),
            "config.sketch_rows = 32 is out of range: expected in [2, min(sketch_dim = 32, 16)]");
  c.set_sketch_rows(16);
  c.set_world_size(5);
  EXPECT_EQ(ResolveRunConfig(c, limits).status().message(),
            "config.world_size = 5 is out of range: expected in [1, 4] (server limit)");
  c.set_world_size(4);
  EXPECT_TRUE(ResolveRunConfig(c, limits).ok());
}

// Which error comes first when several fields are bad: enums, then the table
// order, then the ControllerConfig ranges in Validate()'s order.
TEST(ResolveRunConfigTest, FirstErrorFollowsTheResolutionOrder) {
  auto first = [](void (*set)(v1::RunConfig*)) {
    v1::RunConfig c = Minimal(1000, 0.1);
    set(&c);
    return std::string(ResolveRunConfig(c, Limits{}).status().message());
  };
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->set_total_steps(0);
                c->mutable_phase()->set_val_goal(static_cast<v1::MetricGoal>(9));
              }),
              HasSubstr("config.phase.val_goal = 9"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->set_mode(static_cast<v1::Mode>(9));
                c->set_window(static_cast<v1::WindowKind>(9));
              }),
              HasSubstr("config.window = 9"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->set_sketch_dim(1);
                c->set_total_steps(0);
                c->set_peak_lr(0);
              }),
              HasSubstr("config.total_steps = 0"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->set_sketch_dim(1);
                c->set_peak_lr(0);
              }),
              HasSubstr("config.peak_lr = 0"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->set_world_size(1u << 20);
                c->set_sketch_rows(1);
                c->set_decay(2);
              }),
              HasSubstr("config.sketch_rows = 1"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->mutable_phase()->set_delivery_budget_seconds(-1);
                c->mutable_phase()->set_warmup_fraction(2);
                c->set_base_lr(-1);
              }),
              HasSubstr("config.phase.delivery_budget_seconds = -1"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->mutable_phase()->set_warmup_fraction(2);
                c->set_base_lr(-1);
              }),
              HasSubstr("config.base_lr = -1"));
  EXPECT_THAT(first([](v1::RunConfig* c) {
                c->mutable_phase()->set_lr_cut(2);
                c->mutable_phase()->set_hysteresis(0.5);
              }),
              HasSubstr("config.hysteresis = 0.5"));
}

TEST(ResolveRunConfigTest, FieldsAddedLaterTakeTheirDefaultOnRestore) {
  v1::RunConfig stored = Resolved(Minimal(1000, 0.1));
  stored.mutable_phase()->clear_hysteresis();  // as written before the field existed
  stored.mutable_phase()->clear_lr_cut();      // not added later: left for Resolve to reject
  FillFieldsAddedLater(&stored);
  EXPECT_DOUBLE_EQ(stored.phase().hysteresis(), ControllerConfig{}.hysteresis);
  EXPECT_EQ(stored.phase().lr_cut(), 0.0);
  ASSERT_NE(Find("phase.hysteresis"), nullptr);
  EXPECT_TRUE(Find("phase.hysteresis")->added_later);

  // A field that is set is left alone.
  v1::RunConfig explicit_value = Resolved(Minimal(1000, 0.1));
  explicit_value.mutable_phase()->set_hysteresis(3.0);
  FillFieldsAddedLater(&explicit_value);
  EXPECT_DOUBLE_EQ(explicit_value.phase().hysteresis(), 3.0);
}

TEST(ConfigDifferenceTest, IgnoresLabelsAndNamesTheField) {
  v1::RunConfig a = Resolved(Minimal(1000, 0.1));
  v1::RunConfig b = a;
  (*b.mutable_labels())["team"] = "x";
  EXPECT_EQ(ConfigDifference(a, b), "");
  b.mutable_phase()->set_lr_cut(0.25);
  EXPECT_THAT(ConfigDifference(a, b), HasSubstr("phase.lr_cut"));
}

// The guard's window scales with the run (5% of total_steps) unless set; an
// explicit 0 turns the guard off, and an explicit 0 retries means none.
TEST(ResolveRunConfigTest, TheGuardDefaultsAndItsExplicitZeros) {
  const absl::StatusOr<v1::RunConfig> d = ResolveRunConfig(Minimal(4000, 0.1), Limits{});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->phase().rollback_window_steps(), 200u);
  EXPECT_EQ(d->phase().rollback_max_retries(), 1u);
  EXPECT_DOUBLE_EQ(d->phase().rollback_loss_margin(), 0.5);
  EXPECT_EQ(ToControllerConfig(*d).rollback_window_steps, 200u);
  v1::RunConfig off = Minimal(4000, 0.1);
  off.mutable_phase()->set_rollback_window_steps(0);
  off.mutable_phase()->set_rollback_max_retries(0);
  const absl::StatusOr<v1::RunConfig> r = ResolveRunConfig(off, Limits{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->phase().has_rollback_window_steps());
  EXPECT_EQ(r->phase().rollback_window_steps(), 0u);
  EXPECT_EQ(ToControllerConfig(*r).rollback_window_steps, 0u);
  EXPECT_EQ(ToControllerConfig(*r).rollback_max_retries, 0);
}

}  // namespace
}  // namespace spotter
