"""Spotter: the Python client of spotterd, the training-monitor service.

  spotter.Client      unary RPCs (open/get/list runs, trajectories, overrides)
  spotter.RunSession  one rank's stream: background uploads, directive mailbox,
                      lr_at(step), reconnect and replay, fail-open
  spotter.torch       Monitor: sketching hooks, directive application, K-FAC
                      (imported on demand: `import spotter.torch`)

The names below are loaded on first use (PEP 562): `import spotter.projection`
or `import spotter.torch.taps` imports neither grpc nor the generated stubs.

See docs/PYTHON.md in the repository.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "Client": "spotter.client", "SpotterError": "spotter.client",
    "channel": "spotter.client", "run_config": "spotter.client",
    "Directive": "spotter.schedule", "LrSchedule": "spotter.schedule",
    "Optimizer": "spotter.schedule", "directive_in_force": "spotter.schedule",
    "RunSession": "spotter.session", "SessionStats": "spotter.session",
}

__all__ = ["Client", "SpotterError", "RunSession", "SessionStats", "Directive",
           "LrSchedule", "Optimizer", "directive_in_force", "run_config", "channel"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spotter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
