"""PyTorch integration of spotter: Monitor (sketching hooks, directive
application, K-FAC), DirectiveLR (directives as a torch LR scheduler, for
loops that own the optimizer step), and the pieces they are made of.
Loaded on first use (PEP 562): `import spotter.torch.taps` needs no stubs."""
import importlib

_LAZY = {"KFAC": "spotter.torch.kfac", "DirectiveLR": "spotter.torch.lr",
         "Applied": "spotter.torch.monitor", "Monitor": "spotter.torch.monitor",
         "Taps": "spotter.torch.taps", "split_dim": "spotter.torch.taps"}

__all__ = ["Monitor", "Applied", "DirectiveLR", "KFAC", "Taps", "split_dim"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spotter.torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
