"""Telling a change from noise, on step times recorded on this project's shared machine."""

import pytest
from synthetic import AA

from bpbench.results import noise


@pytest.mark.parametrize("name", sorted(AA))
def test_aa_same_code_twice_is_no_change(name):
    """The same command twice (recorded): the medians moved by up to +36 % (a neighbour's burst
    in the second run), yet neither order is called a change."""
    first, second = AA[name]["runs"]
    for new, old in ((second, first), (first, second)):
        r = noise.ratio([new], [old])
        assert r is not None and not r.significant(), (name, r)
        assert not r.slower_beyond(noise.MIN_CHANGE)


def test_aa_medians_really_moved():
    """Why the median alone misleads: in the recorded bce pair the median moved +36 % while the
    fast end (10th percentile) moved +5 %; a run of 20 blocks saw 7 blocks 30x slower."""
    first, second = AA["bce_autograd"]["runs"]
    r = noise.ratio([second], [first])
    assert r.median.value == pytest.approx(1.359, abs=0.01)
    assert r.fast.value == pytest.approx(1.051, abs=0.01)


@pytest.mark.parametrize("name", sorted(AA))
def test_a_real_slowdown_is_called(name):
    """The second run of each pair made 30 % slower, every step: called, and a regression at 10 %."""
    first, second = AA[name]["runs"]
    r = noise.ratio([[s * 1.3 for s in second]], [first])
    assert r.significant() and r.slower_beyond(0.10) and r.change > 0.2


def test_small_real_changes_stay_below_the_threshold():
    """linreg's pair is quiet: a uniform 4 % slowdown is beyond the noise but not over 10 %."""
    first, second = AA["linreg_manual"]["runs"]
    r = noise.ratio([[s * 1.04 for s in first]], [first])
    assert r.median.beyond_noise() and not r.significant() and r.significant(threshold=0.02)


def test_too_few_steps_give_no_verdict_and_results_are_deterministic():
    assert noise.ratio([[1e-4] * 5], [[1e-4] * 50]) is None
    assert noise.relative_noise([[]]) is None
    first, second = AA["mnist01_autograd"]["runs"]
    assert noise.ratio([second], [first]) == noise.ratio([second], [first])


def test_repeats_widen_the_interval_with_the_spread_between_runs():
    """Two repeats that disagree by 20 % give a wider interval than either run alone."""
    one = [1e-4 * (1 + 0.01 * (i % 3)) for i in range(200)]
    other = [s * 1.2 for s in one]
    single = noise.relative_noise([one])
    both = noise.relative_noise([one, other])
    assert single < 0.02 and both > 0.05


def test_step_times_that_are_no_measurement_give_no_verdict():
    good = [1e-4] * 50
    for bad in (float("nan"), float("inf"), -1e-4, 0.0, "1e-4", True):
        assert not noise.valid([[*good[:-1], bad]]) and noise.ratio([[*good[:-1], bad]], [good]) is None
        assert noise.relative_noise([[bad] * 50]) is None
    assert noise.valid([good, [2e-4]])


def test_a_huge_step_is_slower_beyond_the_noise_not_within_it():
    """1e308 s against 1e-4 s: the ratio overflows float64; in logs it stays inf, and a quantile
    between infs is no longer NaN (which no interval test passes: "within the noise")."""
    r = noise.ratio([[1e308] * 50], [[1e-4] * 50])
    assert r.significant() and r.slower_beyond(0.10) and r.median.value == float("inf")
    assert noise.ratio([[1e-4] * 50], [[1e308] * 50]).significant()
