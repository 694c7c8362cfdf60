"""Run-time fixes for RecBole 1.2.1 on today's PyTorch (measured in ../shared/RECBOLE.md).

Applied by our run function to every model it runs, RecBole's built-in models included, so a
comparison between them is made on one code path.
"""
import contextlib
import ctypes
import ctypes.util
import os

import torch
import torch.nn.functional as F
from torch import nn

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_allocator():
    """Stop glibc from handing large activation buffers back to the OS after every op.

    Without this, each training step re-faults its buffers (a page-fault storm that costs ~75 s of
    system time per SASRec epoch on ml-100k). Returns False where glibc is not the allocator.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_MAX, 0)
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 256 << 20)
    return bool(ok)


def _exact_gelu(self, x):
    return F.gelu(x)


def patch_recbole_layers():
    """RecBole's FeedForward GELU is five Python-level ops; `F.gelu` computes the same exact GELU."""
    from recbole.model.layers import FeedForward

    FeedForward.gelu = _exact_gelu


def disable_anomaly_detection():
    """`recbole.model.sequential_recommender.sine` switches anomaly detection on when imported."""
    torch.autograd.set_detect_anomaly(False)


def apply_speed_fixes():
    """All process-wide fixes; call after RecBole's models are imported and before training."""
    tune_allocator()
    patch_recbole_layers()
    disable_anomaly_detection()


class FastDropout(nn.Module):
    """Inverted dropout with a `rand_like` mask: the same distribution as `nn.Dropout`, faster on CPU.

    It draws from a different random stream than `nn.Dropout`, so it is an option (`fast_dropout`).
    """

    def __init__(self, p):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


def use_fast_dropout(module):
    """Replace every `nn.Dropout` inside `module` by `FastDropout` with the same probability."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
    return module


@contextlib.contextmanager
def trusted_checkpoint_load():
    """Let `torch.load` read checkpoints that RecBole pickles (config, numpy objects).

    torch >= 2.6 defaults to `weights_only=True`, which rejects RecBole's own checkpoints. Use only
    around loads of files this package wrote.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
