"""PyTorch integration of spotter: Monitor (sketching hooks, directive
application, K-FAC), DirectiveLR (directives as a torch LR scheduler, for
loops that own the optimizer step), and the pieces they are made of."""
from spotter.torch.kfac import KFAC
from spotter.torch.lr import DirectiveLR
from spotter.torch.monitor import Applied, Monitor
from spotter.torch.taps import Taps, split_dim

__all__ = ["Monitor", "Applied", "DirectiveLR", "KFAC", "Taps", "split_dim"]
