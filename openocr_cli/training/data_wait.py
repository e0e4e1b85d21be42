"""How much of a run's wall time went to waiting for the data loader: the share the progress line and
metrics.jsonl report (`data_wait`), so a slow loader is seen as such rather than as a slow model."""

from __future__ import annotations


class DataWait:
    """Seconds spent waiting for the data loader, against wall time: per logging window and per epoch."""

    def __init__(self) -> None:
        self.window = [0.0, 0.0]
        self.epoch = [0.0, 0.0]

    def add(self, waited: float, elapsed: float) -> None:
        for totals in (self.window, self.epoch):
            totals[0] += waited
            totals[1] += elapsed

    def window_share(self) -> float:
        share = self.window[0] / max(self.window[1], 1e-9)
        self.window = [0.0, 0.0]
        return share

    def epoch_share(self) -> float:
        return self.epoch[0] / max(self.epoch[1], 1e-9)
