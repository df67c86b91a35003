"""A model lives where its parameters live: once built, nothing consults the default backend.

The default backend only decides where *new* things are created. A flow built on CuPy must keep
working, forward, inverse, sampling, training and checking, after ``set_backend("numpy")`` (a
notebook that compares backends, a test's ``finally:``), and a NumPy flow after
``set_backend("cupy")``. Both directions need a ``cupy`` module, so these tests run in the
stand-in pass (``make test-cupy``) and wherever real CuPy is installed.
"""

import pytest
from helpers import host

from minflow import backend, models, testing, train
from minflow.autodiff import Tensor

NAMES = testing.example_flow_names()
OTHER = {"numpy": "cupy", "cupy": "numpy"}


def _needs_cupy():
    if backend.backend_name() != "cupy":
        pytest.skip("needs a cupy module: runs in the CuPy stand-in pass (make test-cupy)")


@pytest.fixture(params=["built on cupy, default numpy", "built on numpy, default cupy"])
def switched(request):
    """(where the flow is built, the default backend while it is used); restores the default."""
    _needs_cupy()
    built, used = ("cupy", "numpy") if request.param.startswith("built on cupy") else ("numpy", "cupy")
    yield built, used
    backend.set_backend("cupy")


def _module_name(array):
    return backend.array_module(array).__name__


@pytest.mark.parametrize("name", NAMES)
def test_every_flow_works_where_its_parameters_live(name, switched):
    built, used = switched
    backend.set_backend(built)
    flow = testing.example_flows(3, seed=0).get(name) or testing.example_flows(4, seed=0)[name]
    x = testing.sample_inputs(flow, 5)
    backend.set_backend(used)
    z, log_det = flow.forward(x)
    back, _ = flow.inverse(z)
    assert _module_name(z.data) == _module_name(log_det.data) == _module_name(back.data) == built
    testing.check_flow(flow, n=4)


def test_sampling_training_and_reverse_kl_follow_the_model(switched):
    built, used = switched
    backend.set_backend(built)
    model = models.realnvp(2, layers=2, hidden=8, seed=0)
    data = backend.rng(0).standard_normal((64, 2), dtype=backend.get_default_dtype())
    backend.set_backend(used)
    assert _module_name(model.sample(5, seed=1)) == built
    kl = train.reverse_kl(model, lambda x: -0.5 * (x * x).sum(axis=1), 8, seed=2)
    assert _module_name(kl.data) == built
    history = train.fit(model, data, steps=3, batch_size=16, progress=False)
    assert len(history["loss"]) == 3
    assert _module_name(model.log_prob(Tensor(data)).data) == built
    assert host(train.evaluate_nll(model, data)).shape == ()


def test_a_generator_of_the_other_backend_is_refused():
    _needs_cupy()
    numpy_generator = backend.rng(0, xp=__import__("numpy"))
    with pytest.raises(ValueError, match="numpy random Generator where a cupy one is needed"):
        backend.rng(numpy_generator)
    model = models.realnvp(2, layers=1, hidden=4, seed=0)
    with pytest.raises(ValueError, match="random Generator"):
        model.sample(3, seed=numpy_generator)


def test_a_numpy_model_trains_the_same_whatever_the_default_backend():
    """The seeds of fit and fit_to_density draw from the model's backend: the same seed gives the same data
    order and the same samples whether CuPy or NumPy is the default. (On the stand-in CuPy's generator is
    NumPy's, so only a run on real CuPy, whose streams differ, can catch a draw from the default backend.)"""
    _needs_cupy()

    def losses(default):
        backend.set_backend("numpy")
        model = models.realnvp(2, layers=1, hidden=4, seed=0)
        data = backend.rng(0).standard_normal((64, 2))
        backend.set_backend(default)
        try:
            fitted = train.fit(model, data, steps=4, batch_size=16, seed=5, progress=False)["loss"]
            density = train.fit_to_density(model, lambda x: -0.5 * (x * x).sum(axis=1), 2, 8, seed=6, progress=False)
        finally:
            backend.set_backend("cupy")
        return fitted + density["loss"]

    assert losses("cupy") == losses("numpy")
