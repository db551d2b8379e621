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

from noderun.models import dynamics_of
from noderun.models.ode_block import CountedDynamics
from noderun.solvers import SolverSpec


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


_STEP_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
# The device path (noderun.solve) cannot say on the host whether it accepted a step without reading
# the decision: it passes the decision on as a device tensor, to this callback, after callback_step.
_DECIDED = "callback_step_decided"


def _solved_dynamics(model: nn.Module) -> list[tuple[CountedDynamics, SolverSpec]]:
    """Return each ODE solve's dynamics with its solver: the modules holding both as `dynamics` and
    `solver` (noderun's ODEBlock and the latent ODE)."""
    return [(m.dynamics, m.solver) for m in model.modules()
            if isinstance(getattr(m, "dynamics", None), CountedDynamics)
            and isinstance(getattr(m, "solver", None), SolverSpec)]


def _supported_callbacks(spec: SolverSpec) -> tuple[str, ...]:
    # torchdiffeq warns about a callback its solver never calls: fixed-grid solvers call only
    # callback_step (every step is taken), the SciPy wrapper none, adaptive RK solvers all three.
    if spec.method == "scipy_solver":
        return ()
    if spec.fixed_grid:
        return _STEP_CALLBACKS[:1]
    return (_STEP_CALLBACKS[0], _DECIDED) if spec.path == "device" else _STEP_CALLBACKS


class SolverSteps:
    """Counts the steps torchdiffeq's solvers take with a model's dynamics inside the block, forward
    and in the adjoint's backward solve, through torchdiffeq's step callbacks.

    `steps` maps "forward" and "backward" to the steps attempted; `accepted` and `rejected` split
    them (a fixed-grid step is always accepted). torchdiffeq calls `callback_step` as each attempted
    step starts and `callback_accept_step` or `callback_reject_step` once it has decided, and the
    `_adjoint` forms of those in the adjoint's backward solve; this counter sets them on each
    dynamics module for the block and removes them after (putting back any the module had set on
    itself). The callbacks read no tensor values, so the computation is exactly the one without them
    (the same host reads, tested). The SciPy wrapper calls no callbacks: its steps
    count 0. On the device path (noderun.solve) an adaptive solver passes each decision as a device
    tensor to `callback_step_decided` instead; those are kept and summed, reading them, only when
    `accepted` or `rejected` is looked at (after the block, so HostReads inside it counts nothing of
    this).

    Given a HostReads, it also notes that counter's count as each step starts (`marks`), so that the
    reads of the solver's loop can be told from those before the first step and after the last:
    see `loop_reads_per_step`.
    """

    def __init__(self, model: nn.Module, reads: HostReads | None = None):
        self.solves = _solved_dynamics(model)
        self.reads = reads
        self.steps = {"forward": 0, "backward": 0}
        self._accepted = {"forward": 0, "backward": 0}
        self._rejected = {"forward": 0, "backward": 0}
        self._decisions: dict[str, list[torch.Tensor]] = {"forward": [], "backward": []}
        self.marks: dict[str, list[int]] = {"forward": [], "backward": []}
        self._previous: list[tuple[nn.Module, str, object]] = []

    def __enter__(self) -> "SolverSteps":
        # Callbacks a module set on itself are put back afterwards (ones its class defines are only
        # shadowed meanwhile).
        self._previous = []
        for dynamics, spec in self.solves:
            for name in _supported_callbacks(spec):
                for suffix, direction in (("", "forward"), ("_adjoint", "backward")):
                    self._previous.append((dynamics, name + suffix, vars(dynamics).get(name + suffix)))
                    setattr(dynamics, name + suffix, self._callback(name, direction, spec.fixed_grid))
        return self

    def __exit__(self, *exc) -> None:
        for dynamics, attribute, previous in self._previous:
            if previous is None:
                delattr(dynamics, attribute)
            else:
                setattr(dynamics, attribute, previous)
        self._previous = []

    @property
    def accepted(self) -> dict[str, int]:
        """Steps accepted, by direction."""
        return {d: self._accepted[d] + self._decided(d) for d in self._accepted}

    @property
    def rejected(self) -> dict[str, int]:
        """Steps rejected, by direction."""
        return {d: self._rejected[d] + len(self._decisions[d]) - self._decided(d) for d in self._rejected}

    def _decided(self, direction: str) -> int:
        decisions = self._decisions[direction]
        return int(torch.stack(decisions).sum()) if decisions else 0

    def loop_reads_per_step(self, direction: str) -> float | None:
        """Return the mean host reads from the start of one step to the start of the next: one pass
        of the solver's loop (the step, the loop's own test, the step-size update), without what the
        solve reads before its first step or after its last. Meaningful when the direction ran one
        solve; None without a HostReads or with fewer than 2 steps."""
        marks = self.marks[direction]
        return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) >= 2 else None

    def _callback(self, name: str, direction: str, fixed_grid: bool):
        def count(t0, y0, dt, accepted: torch.Tensor | None = None) -> None:
            if name == _DECIDED:
                self._decisions[direction].append(accepted.detach())
            elif name == "callback_step":
                self.steps[direction] += 1
                if fixed_grid:
                    self._accepted[direction] += 1
                if self.reads is not None:
                    self.marks[direction].append(self.reads.count)
            elif name == "callback_accept_step":
                self._accepted[direction] += 1
            else:
                self._rejected[direction] += 1

        return count


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
