// A run's configuration: resolution of the defaults, validation against the
// documented ranges and the server's limits, comparison of two effective
// configs, and the core structs an effective config stands for. Stateless
// functions; thread-safe.
//
// Every field of RunConfig and of the messages nested in it (PhaseConfig,
// ProjectionSpec), `labels` excepted, has one entry in RunConfigFields(): its
// default, its range and the core struct member it stands for. Resolution,
// validation and the conversions to the core structs all read that table, and
// run_config_test checks it against the proto (every field has an entry, the
// `[default]` of each proto comment is the table's) and against the core
// structs (a default of a field the core holds is the core's default member).
#ifndef SPOTTER_SERVER_RUNS_RUN_CONFIG_H_
#define SPOTTER_SERVER_RUNS_RUN_CONFIG_H_

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/phase/controller.h"
#include "core/phase/directive.h"
#include "core/spectrum/moments.h"
#include "core/spectrum/summary.h"
#include "core/types.h"
#include "google/protobuf/descriptor.h"
#include "proto/convert/directive.h"
#include "server/runs/limits.h"
#include "spotter/v1/spotter.pb.h"

namespace spotter {

// The value of one config field: every number (integers and enum values
// included) as a double, a string as itself. Defaults and range bounds are
// small enough for a double to hold them exactly.
using ConfigValue = std::variant<double, std::string>;

// The core structs an effective config stands for.
struct RunCoreConfig {
  ControllerConfig controller;
  WindowOptions window;
  SpectrumOptions spectrum;
};

// What resolution does with a field the client leaves at its zero value (0,
// empty, UNSPECIFIED) or, for a proto3 `optional` field, leaves unset.
enum class DefaultRule {
  kRequired,  // nothing: the client must set it, and its range rejects 0
  kIfZero,    // the zero value takes the default
  kIfUnset,   // `optional` field: only an unset field takes the default; 0 is a value
  kNone,      // the zero value means something of its own; it is kept
};

// One field of RunConfig, or of a message nested in it, and everything the
// server knows about it.
struct ConfigField {
  // Dotted path below RunConfig, as errors name it: "sketch_dim",
  // "phase.warmup_fraction".
  std::string_view path;
  DefaultRule rule = DefaultRule::kIfZero;
  // The default for `config`. `config` has every field listed before this one
  // resolved: a derived default (min_dwell_steps = max(1, total_steps / 20))
  // reads them. A field a core struct holds defaults to that struct's default
  // member, e.g. ControllerConfig{}.warmup_fraction. Null for kRequired and
  // kNone.
  ConfigValue (*default_value)(const v1::RunConfig& config) = nullptr;
  // For a derived default: its formula as the proto comment states it
  // ("peak_lr / 100"); empty for a constant default.
  std::string_view formula;
  // The range the server itself enforces: for a `value` outside it, the text
  // of the accepted range ("in (0, 1]"), which the error quotes; nullopt for
  // a value in range. Null when the server enforces none of its own. Enum
  // fields are always checked against their enum, and every field a
  // ControllerConfig member holds against ControllerConfig::Validate().
  std::optional<std::string> (*out_of_range)(double value, const v1::RunConfig& config,
                                             const Limits& limits) = nullptr;
  // Copies the field of `config` into the core member(s) that hold it. Null
  // when no core struct does.
  void (*to_core)(const v1::RunConfig& config, RunCoreConfig* core) = nullptr;
  // That core member as a number (an enum as its v1 enum value); null exactly
  // when to_core is.
  double (*from_core)(const RunCoreConfig& core) = nullptr;
  // The field is newer than some stored state: state written before it
  // existed holds the zero value, and its server ran with the default.
  bool added_later = false;
  // The descriptors from RunConfig down to the field, filled in by
  // RunConfigFields(): {phase, warmup_fraction} for "phase.warmup_fraction".
  std::vector<const google::protobuf::FieldDescriptor*> descriptors;
};

// Every field of RunConfig, ProjectionSpec and PhaseConfig but `labels`, in
// resolution order (see ResolveRunConfig). Built once; never changes.
const std::vector<ConfigField>& RunConfigFields();

// The value of `field` in `config` (the zero value when a message on its
// path is unset).
ConfigValue GetConfigValue(const v1::RunConfig& config, const ConfigField& field);

// Sets `field` of `config` (creating the messages on its path) to `value`,
// converted to the field's type; `value` must be exact in that type (every
// default is) and a string exactly for a string field.
void SetConfigValue(v1::RunConfig* config, const ConfigField& field, const ConfigValue& value);

// Whether `field` of `config` takes its default under field.rule: false for
// kRequired and kNone.
bool TakesDefault(const v1::RunConfig& config, const ConfigField& field);

// OK when `name` is 1-128 characters of [A-Za-z0-9._-]; else INVALID_ARGUMENT.
absl::Status ValidateRunName(const std::string& name);

// Fills every defaulted field of `config` and validates every value against
// its documented range and the server limits. In order:
//   1. every enum field (table order) must hold a value of its enum;
//   2. field by field in table order, a field that takes its default gets it,
//      then its server range (ConfigField::out_of_range) is checked;
//   3. the ControllerConfig the config stands for must pass Validate(); its
//      errors name the core member ("config.warmup_fraction = ...").
// INVALID_ARGUMENT names the first bad field, its value and the accepted
// range: "config.<field> = <value> is out of range: expected <range>".
// Resolving an effective config gives it back unchanged.
absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig& config, const Limits& limits);

// For a config stored by an older server: every field marked added_later
// that holds its zero value gets its default (the value that server ran
// with). Other fields are left alone; resolve the result as usual.
void FillFieldsAddedLater(v1::RunConfig* stored);

// Empty when two effective configs are the same run (labels are ignored);
// otherwise a description of the first differing field.
std::string ConfigDifference(const v1::RunConfig& a, const v1::RunConfig& b);

// Core views of an effective config: the default core structs with every
// field the table maps to them copied from `config`.
RunCoreConfig ToCoreConfig(const v1::RunConfig& config);
ControllerConfig ToControllerConfig(const v1::RunConfig& config);
WindowOptions ToWindowOptions(const v1::RunConfig& config);
ProjectionKind ToProjectionKind(v1::ProjectionKind kind);
SpectrumOptions ToSpectrumOptions(const v1::RunConfig& config);

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_RUN_CONFIG_H_
