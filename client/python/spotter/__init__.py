"""Spotter: the Python client of spotterd, the training-monitor service.

  spotter.Client      unary RPCs (open/get/list runs, trajectories, overrides)
  spotter.RunSession  one rank's stream: background uploads, directive mailbox,
                      lr_at(step), reconnect and replay, fail-open
  spotter.torch       Monitor: sketching hooks, directive application, K-FAC
                      (imported on demand: `import spotter.torch`)

See docs/PYTHON.md in the repository.
"""
from spotter.client import Client, SpotterError, channel, run_config
from spotter.schedule import Directive, LrSchedule, Optimizer, directive_in_force
from spotter.session import RunSession, SessionStats

__version__ = "0.1.0"

__all__ = ["Client", "SpotterError", "RunSession", "SessionStats", "Directive",
           "LrSchedule", "Optimizer", "directive_in_force", "run_config", "channel"]
