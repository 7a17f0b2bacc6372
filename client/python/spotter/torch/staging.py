"""CUDA sketches on their way to the host (the Monitor's "GPU" notes): no
synchronous device-to-host copy on the step path."""
from __future__ import annotations

import torch


class _Staged:
    """One CUDA sketch in flight to the host (see "GPU" in the module notes):
    rows (and a tensor loss) copied into pinned buffers with non_blocking=True
    on a side stream, then an event recorded there. ``pinned`` is reused:
    a staged sketch is drained before the next one is staged."""

    def __init__(self, t: int, rows: torch.Tensor, spr: int, loss, lr: float,
                 pinned: torch.Tensor):
        self.t, self.spr, self.lr = t, spr, lr
        stream = torch.cuda.Stream(rows.device) if _Staged.side is None or \
            _Staged.side.device != rows.device else _Staged.side
        _Staged.side = stream
        stream.wait_stream(torch.cuda.current_stream(rows.device))
        self.event = torch.cuda.Event()
        self.device_rows = rows  # kept alive until the copy is done
        with torch.cuda.stream(stream):
            self.rows = pinned[:rows.numel()].view(rows.shape)
            self.rows.copy_(rows, non_blocking=True)
            rows.record_stream(stream)
            self.loss = loss
            if torch.is_tensor(loss) and loss.is_cuda:
                loss = loss.detach().reshape(1)
                self.loss = torch.empty(1, dtype=loss.dtype, pin_memory=True)
                self.loss.copy_(loss, non_blocking=True)
                loss.record_stream(stream)
            self.event.record(stream)

    side = None  # the copy stream, made on first use

    def read(self):
        """(t, host rows, samples_per_row, loss, lr), after the copy is done."""
        self.event.synchronize()
        self.device_rows = None
        return self.t, self.rows, self.spr, self.loss, self.lr
