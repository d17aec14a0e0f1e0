"""Weight averaging (`--average`): an exponential moving average of the weights after every step (ema) or an
equal average of the weights at the end of each epoch from --swa-start on (swa), with torch.optim.swa_utils. The
average, not the last step's weights, is what each epoch is evaluated and validated with, and what is selected,
calibrated and saved: the raw weights keep training underneath it."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from edcli.config import TrainConfig


def swa_first_epoch(cfg: TrainConfig) -> int:
    """The first epoch (1-based) in the SWA average: --swa-start, else the middle epoch (the second half of the
    run is averaged: the weights of the first epochs are far from where training ends)."""
    return cfg.swa_start or cfg.epochs // 2 + 1


class Averager:
    """The averaged copy of a model under `cfg.average`; with "none" it is the model itself."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig):
        self.mode = cfg.average
        self.first = swa_first_epoch(cfg)
        self.avg: AveragedModel | None = None
        if self.mode == "ema":
            self.avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
        elif self.mode == "swa":
            self.avg = AveragedModel(model)  # the default: the running equal average
        if self.avg is not None:
            self.avg.requires_grad_(False)

    def after_step(self, model: torch.nn.Module) -> None:
        if self.mode == "ema":
            self.avg.update_parameters(model)

    def after_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """`epoch` 1-based, after its last step."""
        if self.mode == "swa" and epoch >= self.first:
            self.avg.update_parameters(model)

    @property
    def started(self) -> bool:
        return self.avg is not None and int(self.avg.n_averaged) > 0

    def scored(self, model: torch.nn.Module) -> torch.nn.Module:
        """The weights to evaluate and keep: the average once it holds a step or an epoch, else the model's own."""
        return self.avg.module if self.started else model

    def describe(self, cfg: TrainConfig) -> str:
        if self.mode == "ema":
            return f"ema (decay {cfg.ema_decay:g} per step)"
        if self.mode == "swa":
            return f"swa (equal average of epochs {self.first} to {cfg.epochs})"
        return "none"

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.avg is None else {k: v.detach().cpu().clone() for k, v in self.avg.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.avg is not None and state is not None:
            self.avg.load_state_dict(state)
