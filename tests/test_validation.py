"""The shared parameter checks (medclust.validation) and the torch estimator backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medclust.models.base import BASE_CONSTRAINTS, TorchEstimator
from medclust.validation import Int, Options, Real, check_int, check_number, validate


def test_check_int_accepts_integers_in_range():
    assert check_int("n", 3) == 3
    assert isinstance(check_int("n", np.int64(4)), int)
    assert check_int("n", 0, minimum=0) == 0
    assert check_int("n", None, allow_none=True) is None
    assert check_int("n", -5, minimum=None) == -5


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {}, "n must be an integer >= 1, got 0"),
        (True, {}, "n must be an integer >= 1, got True"),
        (2.0, {}, "n must be an integer >= 1, got 2.0"),
        ("3", {}, "n must be an integer >= 1, got '3'"),
        (5, {"maximum": 4}, "n must be an integer >= 1 and <= 4, got 5"),
        (None, {}, "n must be an integer >= 1, got None"),
        ("x", {"minimum": None, "allow_none": True}, "n must be an integer or None, got 'x'"),
    ],
)
def test_check_int_names_the_param_and_the_rule(value, kwargs, message):
    with pytest.raises(ValueError) as err:
        check_int("n", value, **kwargs)
    assert str(err.value) == message


def test_check_number_intervals():
    assert check_number("t", 1, 0, 1) == 1.0
    assert check_number("t", np.float32(0.5), 0, 1, low_open=True) == 0.5
    with pytest.raises(ValueError, match=r"t must be a finite number in \(0, 1\], got 0"):
        check_number("t", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match=r"t must be a finite number in \[0, 1\), got 1"):
        check_number("t", 1, 0, 1, high_open=True)
    for bad in (math.nan, math.inf, True, "0.1", None):
        with pytest.raises(ValueError, match="^t must be a finite number"):
            check_number("t", bad, 0, 1)
    assert check_number("t", None, allow_none=True) is None


def test_options_types_and_values():
    assert Options(str).check("device", "cpu") == "cpu"
    assert Options(int, "kmeans").check("init", "kmeans") == "kmeans"
    assert Options(int, "kmeans").check("init", 7) == 7
    assert Options(bool).check("verbose", False) is False
    with pytest.raises(ValueError, match="init must be int or 'kmeans', got True"):
        Options(int, "kmeans").check("init", True)  # a bool is not an int here
    with pytest.raises(ValueError, match="verbose must be bool, got 1"):
        Options(bool).check("verbose", 1)


class _Tiny(TorchEstimator):
    _constraints = {**BASE_CONSTRAINTS, "width": Int(2), "rate": Real(0, 1, low_open=True)}

    def __init__(self, *, width=4, rate=0.1, seed=0, device="cpu", verbose=False):
        self.width, self.rate, self.seed, self.device, self.verbose = (
            width,
            rate,
            seed,
            device,
            verbose,
        )


def test_validate_checks_every_declared_param():
    _Tiny()._validate_params()
    with pytest.raises(ValueError, match="width must be an integer >= 2, got 1"):
        _Tiny(width=1)._validate_params()
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        _Tiny(seed=-1)._validate_params()
    with pytest.raises(ValueError, match="rate must be a finite number"):
        validate(_Tiny(rate=0.0), _Tiny._constraints)


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        _Tiny(4)  # a positional hyper-parameter is refused


def test_seeded_forks_the_global_rng():
    est = _Tiny(seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with est._seeded():
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    with est._seeded():
        assert torch.equal(torch.rand(3), inside)  # same seed, same draws
    with est._seeded(offset=1):
        assert not torch.equal(torch.rand(3), inside)  # a second stream


def test_batched_matches_one_pass_and_refuses_empty_input():
    est = _Tiny()
    est._select_device()
    assert est.device_ == torch.device("cpu")
    X = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    out = est._batched(lambda t: t * 2 + 1, X, batch=4)
    np.testing.assert_array_equal(out, X * 2 + 1)
    with pytest.raises(ValueError, match="no samples"):
        est._batched(lambda t: t, X[:0])


def test_select_device_refuses_a_bad_device():
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        _Tiny(device="gpu")._select_device()
