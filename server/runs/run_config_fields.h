// The table behind server/runs/run_config.h, in a file of its own so that
// adding a RunConfig field is adding one entry here (and its test finds the
// fields that have none). Internal to run_config.cc: use RunConfigFields().
#ifndef SPOTTER_SERVER_RUNS_RUN_CONFIG_FIELDS_H_
#define SPOTTER_SERVER_RUNS_RUN_CONFIG_FIELDS_H_

#include <vector>

#include "server/runs/run_config.h"

namespace spotter {

// Every entry of RunConfigFields() in resolution order, without its
// descriptors (RunConfigFields() resolves them once).
std::vector<ConfigField> MakeRunConfigFields();

}  // namespace spotter

#endif  // SPOTTER_SERVER_RUNS_RUN_CONFIG_FIELDS_H_
