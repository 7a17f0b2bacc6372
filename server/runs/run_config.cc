#include "server/runs/run_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/runs/run_config_fields.h"

namespace spotter {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status OutOfRange(std::string_view path, double value, std::string_view range) {
  return absl::InvalidArgumentError(
      absl::StrFormat("config.%s = %g is out of range: expected %s", path, value, range));
}

// The message that holds `field`: `config` itself or a message nested in it
// (its default instance when unset).
const Message& Holder(const v1::RunConfig& config, const ConfigField& field) {
  const Message* m = &config;
  for (size_t i = 0; i + 1 < field.descriptors.size(); ++i) {
    m = &m->GetReflection()->GetMessage(*m, field.descriptors[i]);
  }
  return *m;
}

Message* MutableHolder(v1::RunConfig* config, const ConfigField& field) {
  Message* m = config;
  for (size_t i = 0; i + 1 < field.descriptors.size(); ++i) {
    m = m->GetReflection()->MutableMessage(m, field.descriptors[i]);
  }
  return m;
}

// The numeric value of `field`; the field must not be a string.
double NumberOf(const v1::RunConfig& config, const ConfigField& field) {
  return std::get<double>(GetConfigValue(config, field));
}

// The descriptors along `path` below RunConfig. A path that names no field is
// a bug in the table: the server stops at its first use.
std::vector<const FieldDescriptor*> ResolvePath(std::string_view path) {
  std::vector<const FieldDescriptor*> out;
  const Descriptor* d = v1::RunConfig::descriptor();
  const std::vector<std::string> parts = absl::StrSplit(std::string(path), '.');
  for (const std::string& part : parts) {
    const FieldDescriptor* f = d == nullptr ? nullptr : d->FindFieldByName(part);
    if (f == nullptr) {
      std::fprintf(stderr, "RunConfigFields(): '%.*s' names no RunConfig field\n",
                   static_cast<int>(path.size()), path.data());
      std::abort();
    }
    out.push_back(f);
    d = f->message_type();
  }
  return out;
}

}  // namespace

const std::vector<ConfigField>& RunConfigFields() {
  static const std::vector<ConfigField>* const fields = [] {
    auto* v = new std::vector<ConfigField>(MakeRunConfigFields());
    for (ConfigField& f : *v) f.descriptors = ResolvePath(f.path);
    return v;
  }();
  return *fields;
}

ConfigValue GetConfigValue(const v1::RunConfig& config, const ConfigField& field) {
  const Message& m = Holder(config, field);
  const Reflection* r = m.GetReflection();
  const FieldDescriptor* f = field.descriptors.back();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return static_cast<double>(r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_INT32:
      return static_cast<double>(r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64:
      return static_cast<double>(r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return static_cast<double>(r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT64:
      return static_cast<double>(r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return r->GetBool(m, f) ? 1.0 : 0.0;
    case FieldDescriptor::CPPTYPE_ENUM:
      return static_cast<double>(r->GetEnumValue(m, f));
    case FieldDescriptor::CPPTYPE_STRING:
      return r->GetString(m, f);
    default:
      return 0.0;  // a message field is never a table entry
  }
}

void SetConfigValue(v1::RunConfig* config, const ConfigField& field, const ConfigValue& value) {
  Message* m = MutableHolder(config, field);
  const Reflection* r = m->GetReflection();
  const FieldDescriptor* f = field.descriptors.back();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    r->SetString(m, f, std::get<std::string>(value));
    return;
  }
  const double v = std::get<double>(value);
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      r->SetDouble(m, f, v);
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      r->SetFloat(m, f, static_cast<float>(v));
      break;
    case FieldDescriptor::CPPTYPE_INT32:
      r->SetInt32(m, f, static_cast<int32_t>(v));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      r->SetInt64(m, f, static_cast<int64_t>(v));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      r->SetUInt32(m, f, static_cast<uint32_t>(v));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      r->SetUInt64(m, f, static_cast<uint64_t>(v));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      r->SetBool(m, f, v != 0.0);
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      r->SetEnumValue(m, f, static_cast<int>(v));
      break;
    default:
      break;  // a message field is never a table entry
  }
}

bool TakesDefault(const v1::RunConfig& config, const ConfigField& field) {
  switch (field.rule) {
    case DefaultRule::kRequired:
    case DefaultRule::kNone:
      return false;
    case DefaultRule::kIfUnset: {
      const Message& m = Holder(config, field);
      return !m.GetReflection()->HasField(m, field.descriptors.back());
    }
    case DefaultRule::kIfZero: {
      const ConfigValue v = GetConfigValue(config, field);
      // -0.0 == 0.0: a negative zero is a zero too.
      return std::holds_alternative<double>(v) ? std::get<double>(v) == 0.0
                                               : std::get<std::string>(v).empty();
    }
  }
  return false;
}

absl::Status ValidateRunName(const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("run name must have 1 to 128 characters, got %d", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrFormat("run name %s has a character outside [A-Za-z0-9._-]", name));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RunConfig> ResolveRunConfig(const v1::RunConfig& in, const Limits& limits) {
  const std::vector<ConfigField>& fields = RunConfigFields();
  // Enums first: unknown values are rejected, not defaulted.
  for (const ConfigField& f : fields) {
    const FieldDescriptor* leaf = f.descriptors.back();
    if (leaf->cpp_type() != FieldDescriptor::CPPTYPE_ENUM) continue;
    const double v = NumberOf(in, f);
    if (leaf->enum_type()->FindValueByNumber(static_cast<int>(v)) == nullptr) {
      return OutOfRange(f.path, v, absl::StrCat("a ", leaf->enum_type()->name(), " value"));
    }
  }
  v1::RunConfig c = in;
  for (const ConfigField& f : fields) {
    if (TakesDefault(c, f)) SetConfigValue(&c, f, f.default_value(c));
    if (f.out_of_range == nullptr) continue;
    const double v = NumberOf(c, f);
    if (const std::optional<std::string> range = f.out_of_range(v, c, limits)) {
      return OutOfRange(f.path, v, *range);
    }
  }
  const absl::Status s = ToControllerConfig(c).Validate();
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.", s.message()));
  }
  return c;
}

void FillFieldsAddedLater(v1::RunConfig* stored) {
  for (const ConfigField& f : RunConfigFields()) {
    if (f.added_later && TakesDefault(*stored, f)) {
      SetConfigValue(stored, f, f.default_value(*stored));
    }
  }
}

std::string ConfigDifference(const v1::RunConfig& a, const v1::RunConfig& b) {
  // Every field but labels is a table entry (run_config_test): the comparison
  // covers exactly the table.
  v1::RunConfig x = a, y = b;
  x.clear_labels();
  y.clear_labels();
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  if (d.Compare(x, y)) return "";
  return diff.empty() ? "configs differ" : diff;
}

RunCoreConfig ToCoreConfig(const v1::RunConfig& config) {
  RunCoreConfig core;
  for (const ConfigField& f : RunConfigFields()) {
    if (f.to_core != nullptr) f.to_core(config, &core);
  }
  // Not a field of its own: a plateau must outlast the sketch window's lag.
  const WindowOptions& w = core.window;
  core.controller.window_memory_steps =
      w.kind == WindowKind::kFixed
          ? w.window_steps
          : (w.decay < 1.0 ? static_cast<uint64_t>(std::ceil(1.0 / (1.0 - w.decay))) : 0);
  return core;
}

ControllerConfig ToControllerConfig(const v1::RunConfig& config) {
  return ToCoreConfig(config).controller;
}

WindowOptions ToWindowOptions(const v1::RunConfig& config) { return ToCoreConfig(config).window; }

ProjectionKind ToProjectionKind(v1::ProjectionKind kind) {
  switch (kind) {
    case v1::PROJECTION_KIND_GAUSSIAN:
      return ProjectionKind::kGaussian;
    case v1::PROJECTION_KIND_IDENTITY:
      return ProjectionKind::kIdentity;
    default:  // COUNT_SKETCH, and SRHT, which the core does not have
      return ProjectionKind::kCountSketch;
  }
}

SpectrumOptions ToSpectrumOptions(const v1::RunConfig& config) {
  return ToCoreConfig(config).spectrum;
}

}  // namespace spotter
