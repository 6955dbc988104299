"""Divergence: the rules every run is held to (bpbench/harness/divergence.py), in the harness's
loop and end to end, where a saturated or exploded run used to be reported as a success."""

import json

import pytest
import torch

from bpbench.measure import divergence
from bpbench.measure.loop import LoopConfig, run_loop


def history(*losses):
    return [{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)]


def test_parameters_beyond_the_limit_or_not_finite_are_divergence():
    ok = {"w": torch.tensor([[2.0, -3.0]]), "b": torch.tensor([1e11]), "empty": torch.zeros(0)}
    assert divergence.blown_up(ok) is None
    assert divergence.blown_up({**ok, "b": torch.tensor([-2e12])}) == "parameter b reached 2e+12 (beyond 1e+12)"
    assert divergence.blown_up({"w": torch.tensor([1.0, float("nan")])}) == "parameter w became nan"
    assert divergence.blown_up({"w": torch.tensor([float("-inf")])}) == "parameter w became inf"


def test_a_loss_frozen_far_above_the_first_is_saturation_a_moving_one_is_not():
    # mnist01 at lr 1e6: BCELoss's clamp pins the loss at 53.2 from the second update on
    assert divergence.saturated(history(0.7081, 53.23, 53.23, 53.23, 53.23)) == (
        2, "the loss froze at 53.23, 75x its first epoch's 0.7081, from epoch 2 on (saturated: no gradient "
           "left to train with)")
    assert divergence.saturated(history(0.7, 9.0, 50.0, 50.0 * (1 + 1e-7), 50.0))[0] == 3   # a shuffled mean
    # width at H = 20,000 (recorded here): Adam's first steps raise the loss 600-fold, then it falls
    assert divergence.saturated(history(0.04926, 29.26, 3.1, 0.2, 9.09e-05)) is None
    assert divergence.saturated(history(0.0198, 1.75e5)) is None            # stopped inside that spike
    assert divergence.saturated(history(0.7, 40.0, 41.0, 42.0)) is None     # still moving
    assert divergence.saturated(history(0.5, 2.0, 2.0, 2.0)) is None        # 4x exactly: not beyond
    assert divergence.saturated(history(0.0, 1e-9, 1e-9, 1e-9)) is None     # nothing to rise from
    assert divergence.saturated(history(0.01, 0.001, 0.001, 0.001)) is None  # converged


class Steady:
    """A Trainable whose loss stays at 1: only `check` can end it."""
    steps_per_epoch, samples_per_epoch = 1, 1

    def begin_epoch(self, epoch):
        pass

    def step(self):
        return torch.tensor(1.0)


@pytest.mark.parametrize("epochs,at", [(120, 50), (30, 30)])
def test_the_loop_asks_check_every_check_every_epochs_and_after_the_last(epochs, at):
    asked = []

    def check():
        asked.append(len(asked))
        return "parameter w reached 3e+28 (beyond 1e+12)"
    r = run_loop(Steady(), LoopConfig(epochs=epochs, check_every=50), torch.device("cpu"), check=check)
    assert (r.diverged_at, r.diverged_loss, len(r.history), len(asked)) == (at, 1.0, at, 1)
    assert r.diverged_reason == f"parameter w reached 3e+28 (beyond 1e+12) at epoch {at}"


def one_line(r, code):
    assert r.exit_code == code, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    return r.stderr.strip()


@pytest.mark.parametrize("variant", ["manual", "autograd"])
def test_exploded_weights_are_exit_3_with_the_partial_result(cli, tmp_path, variant):
    """lr 1e30 on XOR: weights ~1e28 while the loss sits at 50 (two of four points at BCELoss's
    clamp): finite, and a success before."""
    out = tmp_path / "r.json"
    r = cli("run", "bce", f"--{variant}", "--data", "xor", "--lr", "1e30", "--output", out)
    line = one_line(r, 3)
    assert line.startswith("bpbench: error: parameter layer") and "(beyond 1e+12) at epoch 50: the run diverged" in line
    d = json.loads(out.read_text())
    assert d["status"] == "diverged" and len(d["history"]) == 50 and d["history"][-1]["loss"] == 50.0
    assert d["final"]["metrics"] == {} and d["error"] == line.removeprefix("bpbench: error: ")


def test_a_saturated_run_is_exit_3_with_the_partial_result(cli, tmp_path):
    """lr 1e6 on mnist01: weights ~5e5, loss pinned at 53.2 by BCELoss's clamp. (A short run
    stopped in Adam's passing spike is not one: width's tests run --epochs 2.)"""
    out = tmp_path / "r.json"
    r = cli("run", "mnist01", "--lr", "1e6", "--updates", "30", "--no-flops", "--output", out)
    assert one_line(r, 3) == ("bpbench: error: the loss froze at 53.23, 75x its first epoch's 0.7081, from epoch 2 "
                              "on (saturated: no gradient left to train with): the run diverged (try a smaller --lr)")
    d = json.loads(out.read_text())
    assert d["status"] == "diverged" and len(d["history"]) == 30 and d["flops"] is None


def test_every_rank_finds_the_divergence_at_the_same_epoch(cli, tmp_path):
    """The ranks hold the same weights and the same global loss, so they stop together (no rank
    is left waiting in a collective)."""
    out = tmp_path / "r.json"
    r = cli("run", "bce", "--variant", "allreduce", "--nproc", "2", "--data", "xor", "--lr", "1e30", "--output", out)
    assert "(beyond 1e+12) at epoch 50: the run diverged" in one_line(r, 3)
    assert json.loads(out.read_text())["distributed"]["world_size"] == 2
