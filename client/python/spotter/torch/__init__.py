"""PyTorch integration of spotter: Monitor (sketching hooks, directive
application, K-FAC), and the pieces it is made of."""
from spotter.torch.kfac import KFAC
from spotter.torch.monitor import Applied, Monitor
from spotter.torch.taps import Taps, split_dim

__all__ = ["Monitor", "Applied", "KFAC", "Taps", "split_dim"]
