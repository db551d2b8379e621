"""Measurements a run records besides accuracy: function evaluations, memory and FLOPs; and, for
the solve path's work, the host reads of tensor values and the solver steps of a solve."""

from __future__ import annotations

import math
import resource
import sys
import weakref
from collections import Counter
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from noderun.solvers import DIRECTIONS, StepCounts, solve_stats_of


class NFECounter:
    """Reads and resets the evaluation counts of a model's solves (noderun.solvers.SolveStats, which
    `integrate` fills). Taking right after the forward pass gives the forward NFE; taking again after
    loss.backward() gives the adjoint's backward NFE (zero when gradients come by backpropagation
    through the solver, which re-evaluates nothing)."""

    def __init__(self, model: nn.Module):
        self.stats = solve_stats_of(model)

    def take(self) -> int:
        """Return the evaluations since the last take, both directions, and count afresh."""
        return sum(sum(s.take_evaluations().values()) for s in self.stats)


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


# Indexing and index assignment read values only when an index is a boolean mask (on CUDA the mask
# becomes indices through nonzero, whose count the host must read); integer indices fix the size by
# their shape, so those calls read nothing.
_MASK_INDEXING = {torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_,
                  torch.ops.aten._index_put_impl_}


def _reads_host(func, args) -> bool:
    """Whether the operator call needs tensor values on the host (see HostReads)."""
    if torch.Tag.data_dependent_output in func.tags:
        return True
    if func._overloadpacket in _MASK_INDEXING:
        return any(index is not None and index.dtype in (torch.bool, torch.uint8) for index in args[1])
    return torch.Tag.dynamic_output_shape in func.tags


class HostReads(TorchDispatchMode):
    """Counts the host reads of tensor values in the block: `count` in all, `by_op` by operator name.

    Python code that branches on a tensor's value must first bring it to the host: `.item()`,
    `bool(t)` (an `if` or `assert` on a tensor, a comparison of 0-d tensors in `max`), `int(t)` and
    `float(t)` all dispatch `aten._local_scalar_dense` (in torch 2.14 `bool(t)` reaches no separate
    `aten.is_nonzero`: tested). On a GPU each such read waits for all the work queued before it, a
    host-device synchronisation that leaves the GPU idle while Python decides the next step; on the
    CPU it costs little, but it is counted the same, so the count can be taken here and holds there.

    Counted is every operator call tagged `torch.Tag.data_dependent_output` (a Python value computed
    from tensor data: `_local_scalar_dense`, `equal`, `allclose`) and every call whose output's size
    depends on tensor values (tagged `dynamic_output_shape`: `nonzero`, `unique`, `masked_select`),
    which on a GPU must be read back to size the output, and every indexing or index assignment by a
    boolean mask (on a GPU the mask becomes indices by `nonzero`); indexing by integer tensors counts
    nothing. Not counted are reads that dispatch no operator on the CPU: `.tolist()`, `.numpy()` and
    `.cpu()` of a CPU tensor (each a copy to the host on a GPU). Counts accumulate over every block
    the same object is entered for. Every operator runs unchanged, so the numbers computed are the
    same.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _reads_host(func, args):
            self.count += 1
            self.by_op[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class SolverSteps:
    """Counts the steps a model's solves take inside the block, forward and in the adjoint's backward
    solve, from their SolveStats (noderun.solvers; filled through the solvers' step callbacks, which
    read no tensor value, so the computation is exactly the one without them: tested).

    `steps` maps "forward" and "backward" to the steps attempted; `accepted` and `rejected` split them
    (a fixed-grid step is always accepted; the SciPy wrapper reports no steps: 0). On the device path an
    adaptive solver's decisions stay on the device until `accepted` or `rejected` is looked at (after
    the block, so HostReads inside it counts nothing of this).

    Given a HostReads, it also notes that counter's count as each step starts (`marks`), so that the
    reads of the solver's loop can be told from those before the first step and after the last:
    see `loop_reads_per_step`.
    """

    def __init__(self, model: nn.Module, reads: HostReads | None = None):
        self.stats = solve_stats_of(model)
        self.reads = reads
        self.marks: dict[str, list[int]] = {"forward": [], "backward": []}
        self._before: list[StepCounts] = []
        self._after: list[StepCounts] | None = None

    def __enter__(self) -> "SolverSteps":
        self._before, self._after = [s.counts() for s in self.stats], None
        for s in self.stats:
            s.step_listeners.append(self._mark)
        return self

    def __exit__(self, *exc) -> None:
        for s in self.stats:
            s.step_listeners.remove(self._mark)
        self._after = [s.counts() for s in self.stats]

    def _mark(self, direction: str) -> None:
        if self.reads is not None:
            self.marks[direction].append(self.reads.count)

    def _counts(self) -> list[tuple[StepCounts, StepCounts]]:
        after = self._after if self._after is not None else [s.counts() for s in self.stats]
        return list(zip(self._before, after))

    @property
    def steps(self) -> dict[str, int]:
        """Steps attempted, by direction."""
        return {d: sum(a.started[d] - b.started[d] for b, a in self._counts()) for d in DIRECTIONS}

    @property
    def accepted(self) -> dict[str, int]:
        """Steps accepted, by direction."""
        taken = [a.accepted(since=b) for b, a in self._counts()]
        return {d: sum(t[d] for t in taken) for d in DIRECTIONS}

    @property
    def rejected(self) -> dict[str, int]:
        """Steps rejected, by direction."""
        taken = [a.rejected(since=b) for b, a in self._counts()]
        return {d: sum(t[d] for t in taken) for d in DIRECTIONS}

    def loop_reads_per_step(self, direction: str) -> float | None:
        """Return the mean host reads from the start of one step to the start of the next: one pass
        of the solver's loop (the step, the loop's own test, the step-size update), without what the
        solve reads before its first step or after its last. Meaningful when the direction ran one
        solve; None without a HostReads or with fewer than 2 steps."""
        marks = self.marks[direction]
        return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) >= 2 else None


def host_reads_per_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Run one forward and one backward pass of the model on a batch and return what its solves did.

    The forward pass is `model(images)`, the backward pass `loss.backward()` of the cross-entropy
    against `labels` (class 0 if None); the loss itself is computed between the two and counted in
    neither. For each direction, "forward" and "backward" (for the adjoint, its backward solve; for
    backpropagation through the solver, its operations' backward), the dict holds:

    - `reads_*`: host reads (HostReads.count), `reads_by_op_*` the same by operator name;
    - `nfe_*`: evaluations of the dynamics (NFECounter);
    - `steps_*`, `accepted_*`, `rejected_*`: solver steps attempted, accepted, rejected (SolverSteps);
    - `reads_per_step_*`, `reads_per_nfe_*`: reads over steps or over evaluations (None for none);
    - `loop_reads_per_step_*`: reads per pass of the solver's loop (SolverSteps.loop_reads_per_step).

    Leaves the gradients in the parameters' `.grad`.
    """
    if labels is None:
        labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
    nfe = NFECounter(model)
    nfe.take()
    # One counter for both passes, so that the step marks of both share its count.
    reads = HostReads()
    result = {}
    with SolverSteps(model, reads) as steps:
        with reads:
            logits = model(images)
        result.update(reads_forward=reads.count, reads_by_op_forward=dict(reads.by_op), nfe_forward=nfe.take())
        loss = F.cross_entropy(logits, labels)
        before, by_op_before = reads.count, Counter(reads.by_op)
        with reads:
            loss.backward()
        result.update(reads_backward=reads.count - before, reads_by_op_backward=dict(reads.by_op - by_op_before),
                      nfe_backward=nfe.take())
    for direction in ("forward", "backward"):
        result[f"steps_{direction}"] = steps.steps[direction]
        result[f"accepted_{direction}"] = steps.accepted[direction]
        result[f"rejected_{direction}"] = steps.rejected[direction]
        total = result[f"reads_{direction}"]
        taken, evaluations = steps.steps[direction], result[f"nfe_{direction}"]
        result[f"reads_per_step_{direction}"] = total / taken if taken else None
        result[f"reads_per_nfe_{direction}"] = total / evaluations if evaluations else None
        result[f"loop_reads_per_step_{direction}"] = steps.loop_reads_per_step(direction)
    return result
