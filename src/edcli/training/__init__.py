"""Training: one category's steps (category.py) over the epoch loop (loop.py)."""

from edcli.training.category import train_category
from edcli.training.loop import LOSS_KEYS, epoch_generator, lr_factor, make_optimizers, train_epoch

__all__ = ["LOSS_KEYS", "epoch_generator", "lr_factor", "make_optimizers", "train_category", "train_epoch"]
