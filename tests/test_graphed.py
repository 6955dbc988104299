"""graphed on the CPU: its own logic, with the CUDA-only pieces replaced by a CPU stand-in.

The real check is tests/test_cuda.py::test_graphed_matches_autograd (marked cuda: it runs where a
GPU is lent). Here `torch.cuda.CUDAGraph` and `torch.cuda.graph` are replaced (monkeypatch) by
`CpuGraph`, a CPU model of what a CUDA graph does, and streams by no-ops, so that the learner's
bookkeeping runs for real on CPU tensors: a graph per batch shape, the static input buffers, the
loss copied out, the rewind after priming, and the arithmetic against the autograd variant's.

`CpuGraph` is faithful where graphed.py could go wrong:
- capture records every aten op the step dispatches (forward, backward, optimizer step) with the
  very tensors it read and wrote; a replay re-runs them in order, writing each result into the
  tensor recorded at capture: fixed addresses, as a CUDA graph's kernels have. A replay reads the
  static buffers (not the batch step() was handed) and rewrites the static loss in place.
- capturing runs nothing, as on a GPU: every tensor that existed before the capture and that the
  step wrote is put back as it was, and what the capture allocated holds NaN until a replay.
- a host sync inside the capture (`.item()`, `nonzero`) raises, as stream capture does.
"""

import contextlib
import copy
import dataclasses
import importlib

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bpbench import api, variants
from bpbench.experiments.base import Model
from bpbench.measure import run as runner
from bpbench.results import parity
from bpbench.variants import graphed
from bpbench.variants.base import TorchLearner, torch_learner

_HOST_SYNCS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class CpuGraph:
    """What torch.cuda.CUDAGraph does, on CPU tensors (see the module's docstring)."""

    def __init__(self):
        self.ops: list[tuple] = []      # (op, args, kwargs, outputs), in capture order
        self.replays = 0
        self.captured = False
        self._born: set[int] = set()    # storages the capture allocated
        self._saved: dict[tuple, tuple] = {}   # pre-existing tensors the capture wrote: their values before

    def _record(self, func, args, kwargs):
        if func in _HOST_SYNCS:
            raise RuntimeError(f"{func}: a host sync is not permitted while a stream is capturing")
        given = list(args) + [kwargs.get(a.name) for a in func._schema.arguments[len(args):]]
        for arg, value in zip(func._schema.arguments, given):
            if arg.alias_info is not None and arg.alias_info.is_write:
                for t in _tensors(value):
                    key = (_storage(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
                    if _storage(t) not in self._born and key not in self._saved:
                        self._saved[key] = (t, t.detach().clone())
        out = func(*args, **kwargs)
        inputs = {_storage(t) for t in _tensors((args, kwargs))}
        self._born |= {_storage(t) for t in _tensors(out) if _storage(t) not in inputs}
        self.ops.append((func, args, kwargs, out))
        return out

    def _end_capture(self):
        with torch.no_grad():
            for t, before in reversed(list(self._saved.values())):
                t.copy_(before)                         # the capture ran nothing
            for *_, out in self.ops:
                for t in _tensors(out):
                    if _storage(t) in self._born and t.is_floating_point():
                        t.fill_(float("nan"))           # undefined until the first replay
        self.captured = True

    def replay(self):
        assert self.captured, "replay() before capture"
        self.replays += 1
        with torch.no_grad():
            for func, args, kwargs, out in self.ops:
                new = func(*args, **kwargs)
                for old, value in zip(_tensors(out), _tensors(new)):
                    if _storage(old) != _storage(value):   # in place and views write where they read
                        old.copy_(value)


class _Recording(TorchDispatchMode):
    def __init__(self, graph: CpuGraph):
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.graph._record(func, args, kwargs or {})


@contextlib.contextmanager
def _capture(graph: CpuGraph, pool=None, stream=None, capture_error_mode="global"):
    assert not graph.captured, "a graph is captured once"
    with _Recording(graph):
        yield
    graph._end_capture()


class _Stream:
    def wait_stream(self, other):
        pass


@pytest.fixture
def cpu_graphs(monkeypatch) -> list[CpuGraph]:
    """Installs the stand-in; returns every graph made, in order. The graphed variant then runs on
    the CPU (its learner still checks that it was asked for a CUDA device, handed one here)."""
    made: list[CpuGraph] = []

    class Graph(CpuGraph):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", _capture)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    # Adam(capturable=True) refuses CPU parameters; its arithmetic is the same on any device.
    adam = importlib.import_module("torch.optim.adam")      # torch.optim hides its submodules
    supported = adam._get_capturable_supported_devices
    monkeypatch.setattr(adam, "_get_capturable_supported_devices",
                        lambda supports_xla=True: [*supported(supports_xla), "cpu"])
    monkeypatch.setitem(variants.REGISTRY, "graphed", dataclasses.replace(variants.REGISTRY["graphed"], device=None))
    learner = graphed.Graphed.learner
    monkeypatch.setattr(graphed.Graphed, "learner",
                        lambda self, model, cfg, device: learner(self, model, cfg, torch.device("cuda")))
    return made


def train(experiment, **flags):
    info, cfg = runner.resolve(experiment, None, flags)
    return api.execute(info, cfg)


def session(experiment, **flags):
    info, cfg = runner.resolve(experiment, None, {"variant": "graphed", **flags})
    return runner.build_session(info, cfg, torch.device("cpu"))


def state(learner) -> list[torch.Tensor]:
    """Parameters, then every optimizer state tensor: what a rewind must restore."""
    opt = learner.optimizer.state
    return [p.detach().clone() for p in learner.params().values()] + \
        [v.clone() for p in opt for v in opt[p].values() if isinstance(v, torch.Tensor)]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- a small model, two batch shapes

def small_model(optimizer=("Adam", {"lr": 0.05})) -> Model:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    return Model(module=module, loss_fn=nn.MSELoss(), optimizer=optimizer,
                 params=lambda m: dict(m.named_parameters()), manual=None)


def pair(model: Model, extra: dict):
    """The graphed learner and an eager twin with the same weights and optimizer options
    (capturable Adam's arithmetic is graphed's own: the twin then matches it bit for bit)."""
    twin = torch_learner(TorchLearner, copy.deepcopy(model.module), model, {}, **extra)
    return graphed.VARIANT.learner(model, {}, torch.device("cpu")), twin


def batches(shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 5, generator=g), torch.randn(n, 1, generator=g)) for n in shapes]


@pytest.mark.parametrize("optimizer,extra", [(("Adam", {"lr": 0.05}), {"capturable": True}),
                                             (("SGD", {"lr": 0.1}), {})])
def test_replays_train_on_each_new_batch_like_the_eager_step(cpu_graphs, optimizer, extra):
    learner, twin = pair(small_model(optimizer), extra)
    before = state(learner)
    learner.prepare(batches([8, 3], seed=0), sync=lambda: None)
    # One graph per shape, each replayed once by prime, and everything rewound exactly: the
    # parameters, the optimizer's state, and the static gradients (zeroed, kept: the graphs own them).
    assert sorted(learner.graphs) == [(3, 5), (8, 5)] and len(cpu_graphs) == 2
    assert [g.replays for g in cpu_graphs] == [1, 1]
    after = state(learner)
    adam_state = 3 * len(before) if optimizer[0] == "Adam" else 0         # step, exp_avg, exp_avg_sq
    assert same(after[:len(before)], before) and len(after) == len(before) + adam_state
    assert all(not v.any() for v in after[len(before):])     # Adam's step and moments: fresh zeros
    grads = [p.grad for p in learner.module.parameters()]
    assert all(g is not None and not g.any() for g in grads)

    steps = batches([8, 3, 8, 8, 3, 8, 3], seed=2)     # new data every step, both shapes interleaved
    losses, expected = [], []
    for i, (x, y) in enumerate(steps):
        losses.append(learner.step(x, y))
        expected.append(twin.step(x, y))
        assert same(state(learner)[:4], state(twin)[:4]), f"parameters differ after step {i + 1}"
    # read after all steps: each loss is its own step's, not a view of a buffer later replays rewrite
    assert same(losses, expected)
    assert same(state(learner), state(twin))
    assert [p.grad for p in learner.module.parameters()] == grads       # the same static tensors
    assert len(cpu_graphs) == 2 and [g.replays for g in cpu_graphs] == [1 + 4, 1 + 3]


def test_a_shape_prepare_did_not_see_is_captured_on_first_use(cpu_graphs):
    learner, twin = pair(small_model(), {"capturable": True})
    learner.prepare(batches([8]), sync=lambda: None)
    assert len(cpu_graphs) == 1
    for x, y in batches([8, 5, 5, 8], seed=3):
        assert torch.equal(learner.step(x, y), twin.step(x, y))
        assert same(state(learner), state(twin))
    assert sorted(learner.graphs) == [(5, 5), (8, 5)] and [g.replays for g in cpu_graphs] == [1 + 2, 2]
    assert learner.details() == {"cuda_graphs": 2}


def test_the_capture_is_checked_by_the_stand_in(cpu_graphs):
    """The stand-in itself: a capture changes nothing it found, and a host sync inside one raises."""
    w = torch.ones(3)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w.add_(1)
        out = w * 2
    assert torch.equal(w, torch.ones(3)) and out.isnan().all()
    g.replay()
    assert torch.equal(w, torch.full((3,), 2.0)) and torch.equal(out, torch.full((3,), 4.0))
    with pytest.raises(RuntimeError, match="capturing"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            w.sum().item()


# ---------------------------------------------------------------- the experiments, through the harness

@pytest.mark.parametrize("experiment,flags,shapes", [
    ("mnist01", dict(epochs=2, batch_size=1000), [(1000, 784), (665, 784)]),  # 12 + a ragged 13th
    ("width", dict(width=64, epochs=30), [(100, 1)]),                                 # Adam, capturable
])
def test_prepare_captures_each_shape_once_and_rewinds_exactly(cpu_graphs, experiment, flags, shapes):
    _, learner, s = session(experiment, **flags)
    before = state(learner)
    assert learner.prepare(s.sample_batches(), sync=lambda: None) > 0
    assert sorted(learner.graphs) == sorted(shapes) and len(cpu_graphs) == len(shapes)
    assert [g.replays for g in cpu_graphs] == [1] * len(shapes)
    after = state(learner)
    assert same(after[:len(before)], before)          # parameters (and any state that existed)
    assert all(not v.any() for v in after[len(before):])   # Adam's step and moments: fresh zeros
    assert all(p.grad is not None and not p.grad.any() for p in learner.module.parameters())
    s.begin_epoch(1)
    s.step()
    if experiment == "width":
        assert all(float(st["step"]) == 1 for st in learner.optimizer.state.values())


@pytest.mark.parametrize("experiment,flags,graphs", [
    ("linreg", dict(epochs=100), 1),
    ("bce", dict(data="xor", epochs=60), 1),
    ("mnist01", dict(epochs=2, batch_size=1000), 2),
    ("width", dict(width=64, epochs=30), 1),
])
def test_graphed_on_the_stand_in_matches_autograd(cpu_graphs, experiment, flags, graphs):
    ref = train(experiment, variant="autograd", **flags)
    fast = train(experiment, variant="graphed", **flags)
    assert fast["reference_variant"] == "autograd"
    assert parity.check(fast, ref) == [], parity.check(fast, ref)
    assert fast["variant_details"] == {"cuda_graphs": graphs} and len(cpu_graphs) == graphs
    assert fast["timing"]["compile_s"] > 0 and fast["timing"]["first_step_s"] is None
    if experiment == "mnist01":     # every update's loss, not only each epoch's mean
        got, want = ([v for h in r["history"] for v in h["batch_losses"]] for r in (fast, ref))
        assert len(got) == 26 and got == pytest.approx(want, rel=1e-6)
