"""The optimisation side of a recipe: learning-rate schedule, adjustable gradient clipping, loss, optimiser."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from vdsr.train.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, total_steps: int, *, per_epoch: int) -> float:
    """The learning rate at `step`, a pure function of the config (nothing to save for resuming)."""
    if config.schedule == "step":
        return config.lr * 0.1 ** (step // max(1, round(config.lr_step_epochs * per_epoch)))
    if config.schedule == "cosine":
        warmup = max(1, min(round(config.warmup_epochs * per_epoch), total_steps // 10))  # a short fine-tune too
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"Unknown schedule {config.schedule!r}; expected 'step' or 'cosine'")


def clip_gradients(parameters: Iterator[torch.nn.Parameter], theta: float, lr: float) -> None:
    """Adjustable gradient clipping (Kim et al. 2016): each gradient element into [-theta / lr, theta / lr]."""
    bound = theta / lr
    for p in parameters:
        if p.grad is not None:
            p.grad.clamp_(-bound, bound)


def clip(config: TrainConfig, model: torch.nn.Module, lr: float) -> None:
    """The recipe's clipping of the step's gradients: element-wise (the paper's), and/or by their global norm."""
    if config.clip_theta is not None:
        clip_gradients(model.parameters(), config.clip_theta, lr)
    if config.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)


def compute_loss(
    config: TrainConfig, out: torch.Tensor, target: torch.Tensor, *, progress: float = 0.0
) -> torch.Tensor:
    """The recipe's loss; `progress` (the fraction of the schedule done) decides l1_mse's: L1, then MSE for the last
    fifth."""
    if config.loss == "mse" or (config.loss == "l1_mse" and progress > 0.8):
        return torch.nn.functional.mse_loss(out, target)
    if config.loss in ("l1", "l1_mse"):
        return torch.nn.functional.l1_loss(out, target)
    if config.loss == "half_sse":
        return 0.5 * (out - target).square().sum(dim=(1, 2, 3)).mean()
    raise ValueError(f"Unknown loss {config.loss!r}; expected 'mse', 'l1', 'l1_mse' or 'half_sse'")


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, config.beta2)
        )
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; expected 'sgd' or 'adamw'")
