"""Measurements a run records besides accuracy: function evaluations, memory and FLOPs."""

from __future__ import annotations

import math
import resource
import sys
import weakref
from typing import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from noderun.models import dynamics_of


class NFECounter:
    """Reads and resets the evaluation counters of a model's ODE dynamics.

    The dynamics count every call of their forward. Reading right after the forward pass gives
    the forward NFE; reading again after loss.backward() gives the adjoint's backward NFE (zero
    when gradients come by backpropagation through the solver, which re-evaluates nothing).
    """

    def __init__(self, model: nn.Module):
        self.dynamics = dynamics_of(model)

    def take(self) -> int:
        """Return the evaluations since the last take and reset the counters."""
        total = sum(d.nfe for d in self.dynamics)
        for d in self.dynamics:
            d.nfe = 0
        return total


def wait_for(device: torch.device) -> None:
    """Block until the device has finished the work queued on it, so that a host clock read next
    covers that work (CUDA runs asynchronously; on the CPU there is nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on CUDA (the CPU's resident-set peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Return peak memory in MiB: on CUDA the allocator's peak of allocated tensor memory since the
    last reset; on the CPU the process's peak resident set size since it started."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def relative_error(estimate: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """Return ||estimate - reference|| / ||reference||, 2-norms over all the tensors together, in float64."""
    diff = math.sqrt(sum(float((e.double() - r.double()).pow(2).sum()) for e, r in zip(estimate, reference)))
    norm = math.sqrt(sum(float(r.double().pow(2).sum()) for r in reference))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


class SavedTensorBytes:
    """Counts the bytes autograd holds for the backward pass in tensors saved while the block runs.

    Every tensor autograd saves for the backward pass inside the block (an operation's inputs or
    outputs, a custom Function's save_for_backward, such as the adjoint's solution and parameters)
    passes through torch.autograd.graph.saved_tensors_hooks. When the block ends, `bytes` is the size
    of the distinct storages behind the saved tensors still held then: a storage shared by several
    saved tensors (a view and its base, an output that the next operation saves as its input, a
    parameter saved by many operations) counts once and whole. Saved parameters count; parameters
    no operation saved do not. Tensors saved by parts of the graph already freed when the block ends
    (say, a step an adaptive solver rejected) do not count, nor does what autograd keeps besides
    tensors (shapes, scalars) or what the backward pass allocates while it runs. It depends on
    shapes and dtypes only, so it is the same on every device. The hooks hand every tensor back as an
    alias of the same storage, so the computation is exactly the one without them.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self._saved: list[weakref.ref] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    @property
    def mib(self) -> float:
        """Return the count in MiB (2^20 bytes)."""
        return self.bytes / 2**20

    def __enter__(self) -> "SavedTensorBytes":
        self._saved = []
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        storages = {}
        for ref in self._saved:
            tensor = ref()
            if tensor is not None:
                storage = tensor.untyped_storage()
                # Live storages never share an address, so (device, address) names each one.
                storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
        self.bytes = sum(storages.values())
        self._saved = []

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # Keep a detached alias (same storage and version counter, no grad_fn): handing back an output
        # itself would tie it to its own grad_fn in a cycle that no collector frees. The weak reference
        # lives exactly as long as autograd keeps what it saved.
        alias = tensor.detach()
        self._saved.append(weakref.ref(alias))
        return alias


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class FlopCount(TorchDispatchMode):
    """Counts the floating-point operations of every operator run in the block, forward and backward,
    by torch.utils.flop_counter's formulas; `total` holds the sum.

    Those formulas cover convolutions and matrix products (a multiply-add counts 2); element-wise
    operations, normalisation and the solver's vector arithmetic count nothing. torch's
    FlopCounterMode applies the same formulas (the counts agree, tested) but also tracks modules
    with backward hooks, and those hooks make the adjoint's own torch.autograd.grad inside the
    backward pass fail ("A leaf node was passed to _will_engine_execute_node ..."); this mode
    applies the formulas alone. Every operator runs unchanged, so the numbers computed are the same.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out
