"""Batch norms that share their statistics across ranks, on GPUs *and* CPUs.

``torch.nn.SyncBatchNorm`` only runs on GPUs; on CPU (gloo) it raises.  Without
synchronisation each rank would normalise with the statistics of its own few samples, and
two ranks with batch ``b`` would not train like one process with batch ``2 b``.
:class:`CpuSyncBatchNorm2d` computes the batch mean and variance over the global batch
with differentiable all-reduces (two passes: mean, then centred second moment), so the
forward pass, the gradients and the running statistics match a single process that sees
the whole global batch.

:func:`convert_sync_batchnorm` swaps every ``BatchNorm2d`` of a model for the right
synchronised kind (native on CUDA, this one elsewhere), sharing the parameters and
buffers; :func:`revert_sync_batchnorm` swaps them back so the trained model is a plain
:class:`~iris_nb.model.Reverter` again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .distributed import is_distributed

__all__ = ["CpuSyncBatchNorm2d", "convert_sync_batchnorm", "revert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics come from every rank's batch.

    Input and output ``(B, C, H, W)``, dimensionless features.  Outside training mode, or
    without a process group of more than one rank, it is exactly ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C, H, W)`` with the global batch statistics (training mode)."""
        if not (self.training and is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        xf = x.float()
        dims = (0, 2, 3)
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=xf.dtype, device=xf.device)
        totals = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = xf - mean[None, :, None, None]
        variance = _AllReduceSum.apply(centred.square().sum(dims)) / n
        out = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), variance.detach(), float(n.item()))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, variance: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked.item())) if self.momentum is None else self.momentum
        unbiased = variance * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(factor * mean.to(self.running_mean.dtype))
        self.running_var.mul_(1.0 - factor).add_(factor * unbiased.to(self.running_var.dtype))


def _swap(module: nn.Module, cls: type, should_swap) -> nn.Module:
    for name, child in list(module.named_children()):
        if should_swap(child):
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap(child, cls, should_swap)
    return module


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``model`` (in place) by a synchronised batch norm that
    shares its parameters and buffers: ``torch.nn.SyncBatchNorm`` on CUDA, else
    :class:`CpuSyncBatchNorm2d`.  Returns ``model``."""
    if torch.device(device).type == "cuda":
        return _swap(model, nn.SyncBatchNorm,
                     lambda m: isinstance(m, nn.BatchNorm2d) and type(m) is not CpuSyncBatchNorm2d)
    return _swap(model, CpuSyncBatchNorm2d, lambda m: type(m) is nn.BatchNorm2d)


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` in place: plain ``BatchNorm2d`` layers sharing the
    same parameters and buffers.  Returns ``model``."""
    return _swap(model, nn.BatchNorm2d, lambda m: isinstance(m, (nn.SyncBatchNorm, CpuSyncBatchNorm2d)))
