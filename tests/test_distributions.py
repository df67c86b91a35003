"""Base distributions (minflow/distributions.py): every formula in the docstrings, checked.

The learnable bases are checked at random parameters (never at their initial values, where
a wrong mean or scale could hide behind mu = 0, sigma = 1): against the density written out
literally in autograd.numpy, their gradients against HIPS autograd and central differences,
their normalisation by quadrature, their samples against their parameters. Each check is a
function that takes what it checks, so a test can hand it a planted error and see it fail.

Tolerances. Values: a few float64 operations per coordinate on both sides, agreeing to a few
hundred ulps: 1e-12 of the largest value. Gradients against autograd: 1e-10 of the largest
entry, as in test_ops.py. Central differences with step h = 1e-6: truncation h^2 |f'''| / 6
< 1e-10 here, rounding about ulp |f| / h = 2.2e-16 * 50 / 1e-6 ~ 1e-8 for |f| = |sum log p| <= 50;
we allow 1e-6 (a wrong gradient term is O(1)). Quadrature and Monte Carlo bounds are derived
where they are used.
"""

import math
from contextlib import contextmanager

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from helpers import assert_close, device, host
from hypothesis import given
from hypothesis import strategies as st

from minflow import backend, nn
from minflow.autodiff import Tensor, no_grad, ops
from minflow.distributions import DiagonalGaussian, GaussianMixture, StandardNormal
from minflow.flows.elementwise import ElementwiseAffine
from minflow.models import NormalizingFlow

seeds = st.integers(0, 2**32 - 1)
event_shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
RANGES = {"mean": 2.0, "means": 2.0, "logits": 1.5}  # U(-r, r); log-scales U(-1, 0.5): sigma in [0.37, 1.65]


def randomized(base, seed):
    """``base`` with every parameter set to seeded random values in the ranges above."""
    rng = np.random.default_rng(seed)
    for name, p in base.named_parameters():
        low, high = (-RANGES[name], RANGES[name]) if name in RANGES else (-1.0, 0.5)
        p.data = device(rng.uniform(low, high, p.shape))
    return base


def build(kind, seed):
    return randomized(DiagonalGaussian(3) if kind == "diagonal" else GaussianMixture(3, 4, seed=seed), seed)


def inputs(base, batch, seed):
    return np.random.default_rng(seed + 1).normal(0, 1.5, (batch, *base.event_shape))


@contextmanager
def replaced(tensor, value):
    """Give ``tensor`` the data ``value`` for the block (a planted error), then restore it."""
    saved, tensor.data = tensor.data, device(value)
    try:
        yield
    finally:
        tensor.data = saved


# --- the densities written out literally, in autograd.numpy --------------------------------------------
def reference_diagonal(z, mean, log_scale):
    """sum_i log[ exp(-(z_i - mu_i)^2 / (2 sigma_i^2)) / (sigma_i sqrt(2 pi)) ], per row."""
    sigma = anp.exp(log_scale)
    terms = -((z - mean) ** 2) / (2 * sigma**2) - anp.log(sigma * anp.sqrt(2 * anp.pi))
    return anp.sum(anp.reshape(terms, (z.shape[0], -1)), axis=1)


def reference_mixture(z, logits, means, log_scales):
    """log sum_k w_k prod_i N(z_i; mu_ki, sigma_ki^2), the sum taken literally (no logsumexp)."""
    weights = anp.exp(logits) / anp.sum(anp.exp(logits))
    sigma = anp.exp(log_scales)
    d = z[:, None, :] - means  # (B, K, dim)
    densities = anp.prod(anp.exp(-(d**2) / (2 * sigma**2)) / (sigma * anp.sqrt(2 * anp.pi)), axis=2)
    return anp.log(anp.sum(weights * densities, axis=1))


def reference(base):
    return reference_diagonal if isinstance(base, DiagonalGaussian) else reference_mixture


def check_values(base, z, values):
    expected = reference(base)(z, *[host(p) for p in base.parameters()])
    np.testing.assert_allclose(host(values), expected, rtol=0, atol=1e-12 * max(1, np.abs(expected).max()))


def engine_gradients(base, z, log_prob):
    """d sum(log_prob(z)) / d(z, every parameter), by minflow's engine."""
    z = Tensor(device(z), requires_grad=True)
    base.zero_grad()
    ops.sum(log_prob(z)).backward()
    return [z.grad] + [p.grad for p in base.parameters()]


def check_gradients_against_autograd(base, z, log_prob):
    arrays = [z] + [host(p) for p in base.parameters()]
    for i, got in enumerate(engine_gradients(base, z, log_prob)):
        expected = grad(lambda *a: anp.sum(reference(base)(*a)), i)(*arrays)
        np.testing.assert_allclose(host(got), expected, rtol=0, atol=1e-10 * max(1, np.abs(expected).max()))


def check_central_differences(base, z, log_prob, step=1e-6):
    """Engine gradients against (f(theta + h) - f(theta - h)) / 2h at three entries of z and of each parameter."""
    z_tensor = Tensor(device(z))
    targets = [z_tensor] + base.parameters()
    gradients = [host(g) for g in engine_gradients(base, z, log_prob)]
    rng = np.random.default_rng(0)
    for tensor, gradient in zip(targets, gradients):
        value = host(tensor.data)
        for flat in rng.choice(value.size, size=min(3, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            sums = []
            for sign in (1, -1):
                moved = value.copy()
                moved[index] += sign * step
                with replaced(tensor, moved), no_grad():
                    sums.append(float(host(ops.sum(log_prob(z_tensor)))))
            difference = (sums[0] - sums[1]) / (2 * step)
            assert abs(difference - gradient[index]) < 1e-6 * max(1, abs(difference)), (index, difference, gradient)


def planted_gradient(base, name):
    """log_prob with the right values but an extra gradient 0.5 per sample on every entry of ``name``."""
    p = dict(base.named_parameters())[name]
    return lambda z: base.log_prob(z) + 0.5 * ops.sum(p - p.detach())


# --- values and gradients ------------------------------------------------------------------------------
@given(event_shape=event_shapes, batch=st.integers(1, 4), seed=seeds)
def test_diagonal_gaussian_log_prob_and_gradients_are_the_formula(event_shape, batch, seed):
    base = randomized(DiagonalGaussian(event_shape), seed)
    z = inputs(base, batch, seed)
    check_values(base, z, base.log_prob(device(z)))
    check_gradients_against_autograd(base, z, base.log_prob)


@given(dim=st.integers(1, 3), components=st.integers(1, 4), batch=st.integers(1, 4), seed=seeds)
def test_mixture_log_prob_and_gradients_are_the_formula(dim, components, batch, seed):
    base = randomized(GaussianMixture(dim, components, seed=seed), seed)
    z = inputs(base, batch, seed)
    check_values(base, z, base.log_prob(device(z)))
    check_gradients_against_autograd(base, z, base.log_prob)


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_gradients_match_central_differences(kind):
    base = build(kind, seed=3)
    check_central_differences(base, inputs(base, 4, seed=3), base.log_prob)


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_each_check_fails_on_a_planted_error(kind):
    base = build(kind, seed=3)
    z = inputs(base, 4, seed=3)
    name = "log_scale" if kind == "diagonal" else "log_scales"
    constant_twice = base.log_prob(device(z)) - 0.5 * base.size * math.log(2 * math.pi)  # n log(2 pi), not n/2
    with pytest.raises(AssertionError):
        check_values(base, z, constant_twice)
    with pytest.raises(AssertionError):
        check_gradients_against_autograd(base, z, planted_gradient(base, name))
    with pytest.raises(AssertionError):
        check_central_differences(base, z, planted_gradient(base, name))


def test_mixture_log_prob_is_stable_far_from_every_component():
    """The literal sum underflows to log 0 = -inf at z = 100; logsumexp keeps the dominant term."""
    base = build("mixture", seed=0)
    z = np.full((1, 3), 100.0)
    with np.errstate(divide="ignore"):
        assert reference_mixture(z, *[host(p) for p in base.parameters()])[0] == -np.inf
    terms = host(base.log_weights() + base.component_log_probs(device(z)))
    assert_close(base.log_prob(device(z)), [terms.max()], rtol=1e-9)  # the other terms are e^-100 smaller or less


def test_a_mixture_of_one_component_is_a_diagonal_gaussian():
    mixture, gaussian = randomized(GaussianMixture(3, 1), seed=5), DiagonalGaussian(3)
    gaussian.mean.data, gaussian.log_scale.data = mixture.means.data[0], mixture.log_scales.data[0]
    z = device(inputs(gaussian, 6, seed=5))
    assert_close(mixture.log_prob(z), gaussian.log_prob(z), rtol=1e-13)


# --- normalisation -----------------------------------------------------------------------------------------
def integral(log_density, dim, half_width=16.0, step=0.05):
    """Riemann sum of exp(log_density) over a grid of [-16, 16]^dim.

    Why 1e-9 is a safe tolerance: by Poisson summation, the sum over a step-h grid of a Gaussian
    with sigma >= e^-1 misses its integral by at most 2 exp(-2 pi^2 sigma^2 / h^2) ~ e^-1000; every
    mean lies in [-2, 2] and every sigma <= e^0.5, so the grid reaches 8.5 sigma past each mean
    and the mass outside is below 1e-16; the sum of <= 4e5 positive terms rounds by < 1e-11.
    """
    axis = np.arange(-half_width, half_width + step / 2, step)
    points = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), axis=-1).reshape(-1, dim)
    return np.exp(host(log_density(device(points)))).sum() * step**dim


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_density_integrates_to_one(kind, dim):
    base = randomized(DiagonalGaussian(dim) if kind == "diagonal" else GaussianMixture(dim, 3), seed=dim)
    assert abs(integral(base.log_prob, dim) - 1) < 1e-9
    # Planted: a normaliser without the sum of log sigma, or log-weights that are the raw logits.
    if kind == "diagonal":
        planted = lambda z: base.log_prob(z) + ops.sum(base.log_scale)  # noqa: E731
    else:
        planted = lambda z: base.log_prob(z) + ops.logsumexp(base.logits, axis=0)  # noqa: E731
    assert abs(integral(planted, dim) - 1) > 1e-3


# --- sampling ---------------------------------------------------------------------------------------------
def check_gaussian_samples(mean, sigma, samples):
    """Sample mean and std per coordinate within 5 standard errors: sigma / sqrt(n) for the mean,
    about sigma / sqrt(2 n) for the std (a false alarm per comparison: 6e-7)."""
    n = len(samples)
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * sigma / math.sqrt(n)), (samples.mean(0), mean)
    assert np.all(np.abs(samples.std(0) - sigma) < 5 * sigma / math.sqrt(2 * n)), (samples.std(0), sigma)


def check_diagonal_samples(base, samples):
    mean, sigma = host(base.mean).ravel(), np.exp(host(base.log_scale)).ravel()
    check_gaussian_samples(mean, sigma, host(samples).reshape(len(samples), -1))


def check_mixture_samples(base, samples):
    """Components 20 apart along axis 0 and sigma <= e^0.5 (set below): the nearest mean names a
    sample's component (a misnamed one needs a 6-sigma draw). Each component's frequency is
    within 5 binomial standard errors sqrt(w (1 - w) / n) of its weight, its samples pass
    check_gaussian_samples."""
    samples, means = host(samples), host(base.means)
    weights, sigmas = host(ops.softmax(base.logits)), np.exp(host(base.log_scales))
    nearest = np.abs(samples[:, None, 0] - means[None, :, 0]).argmin(axis=1)
    n = len(samples)
    for k, w in enumerate(weights):
        assert abs(np.mean(nearest == k) - w) < 5 * math.sqrt(w * (1 - w) / n), (k, np.mean(nearest == k), w)
        check_gaussian_samples(means[k], sigmas[k], samples[nearest == k])


def separated_mixture():
    base = randomized(GaussianMixture(2, 3), seed=7)
    means = host(base.means)
    means[:, 0] = [-20.0, 0.0, 20.0]
    base.means.data = device(means)
    base.logits.data = device([0.8, -0.6, 0.2])  # weights 0.56, 0.14, 0.31
    return base


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_samples_match_the_parameters(kind):
    base = randomized(DiagonalGaussian((2, 3)), seed=7) if kind == "diagonal" else separated_mixture()
    check = check_diagonal_samples if kind == "diagonal" else check_mixture_samples
    samples = base.sample(20_000, seed=1)
    assert samples.shape == (20_000, *base.event_shape) and not isinstance(samples, Tensor)
    assert backend.array_module(samples) is base.array_module() and samples.dtype == base.float_dtype()
    check(base, samples)
    # Planted: the scale squared instead of the scale; for the mixture, also the weights forgotten.
    name = "log_scale" if kind == "diagonal" else "log_scales"
    scale = dict(base.named_parameters())[name]
    with replaced(scale, 2 * host(scale)):
        wrong = base.sample(20_000, seed=1)
    with pytest.raises(AssertionError):
        check(base, wrong)
    if kind == "mixture":
        with replaced(base.logits, np.zeros(3)):
            wrong = base.sample(20_000, seed=1)
        with pytest.raises(AssertionError):
            check(base, wrong)


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_same_seed_same_samples(kind):
    base = build(kind, seed=2)
    a, b, c = (host(base.sample(50, seed=s)) for s in (4, 4, 5))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    generator = backend.rng(4, base.array_module())
    assert np.array_equal(host(base.sample(50, seed=generator)), a)  # a Generator is used as given


def test_samples_are_made_where_the_parameters_live():
    if backend.backend_name() != "cupy":
        pytest.skip("needs a cupy module: runs in the CuPy stand-in pass (make test-cupy)")
    for built, used in (("cupy", "numpy"), ("numpy", "cupy")):
        backend.set_backend(built)
        bases = [build("diagonal", 0), build("mixture", 0)]
        backend.set_backend(used)
        try:
            for base in bases:
                assert backend.array_module(base.sample(5, seed=0)).__name__ == built
                with pytest.raises(ValueError, match=f"xp must be {built}"):
                    base.sample(5, xp=backend.xp())
        finally:
            backend.set_backend("cupy")


# --- initialisation, state, dtype, errors ---------------------------------------------------------------
def test_initial_values():
    z = device(np.random.default_rng(0).normal(size=(5, 2, 2)))
    assert_close(DiagonalGaussian((2, 2)).log_prob(z), StandardNormal((2, 2)).log_prob(z), rtol=1e-13)
    a, b, c = (GaussianMixture(3, 4, seed=s) for s in (1, 1, 2))
    assert np.array_equal(host(a.means), host(b.means)) and not np.allclose(host(a.means), host(c.means))
    assert len({tuple(m) for m in host(a.means)}) == 4, "the components must start distinct"
    assert np.all(host(a.logits) == 0) and np.all(host(a.log_scales) == 0)
    assert 0.2 < np.std(host(GaussianMixture(2, 50, seed=0, spread=0.5).means)) < 0.8


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_state_dict_round_trip(kind, tmp_path):
    base, fresh = build(kind, seed=1), build(kind, seed=2)
    z = device(inputs(base, 5, seed=1))
    assert not np.allclose(host(fresh.log_prob(z)), host(base.log_prob(z)))  # so the load has work to do
    fresh.load_state_dict(base.state_dict())
    assert_close(fresh.log_prob(z), base.log_prob(z), rtol=0)
    base.save(tmp_path / "base.npz")
    assert_close(build(kind, seed=3).load(tmp_path / "base.npz").log_prob(z), base.log_prob(z), rtol=0)


def test_a_model_trains_and_saves_its_base():
    model = NormalizingFlow(ElementwiseAffine(2), base=GaussianMixture(2, 3, seed=0))
    names = [name for name, _ in model.named_parameters()]
    assert {"base.logits", "base.means", "base.log_scales"} <= set(names)
    model.nll(device(np.ones((4, 2)))).backward()
    assert all(np.any(host(p.grad) != 0) for p in model.base.parameters())
    assert model.sample(3, seed=0).shape == (3, 2)


def test_standard_normal_is_a_module_without_parameters():
    base = StandardNormal((1, 2))
    assert isinstance(base, nn.Module) and base.parameters() == [] and base.state_dict() == {}
    assert (base.event_shape, base.size) == ((1, 2), 2)


@pytest.mark.parametrize("kind", ["diagonal", "mixture"])
def test_float32(kind):
    base = build(kind, seed=4)
    z = inputs(base, 5, seed=4)
    expected = host(base.log_prob(device(z)))
    base.astype("float32")
    got = base.log_prob(device(z, dtype="float32"))
    assert got.dtype == np.float32 and base.sample(3, seed=0).dtype == np.float32
    # float32 rounding (6e-8) through a few dozen operations on values up to ~50: 1e-5 of the largest
    np.testing.assert_allclose(host(got), expected, rtol=0, atol=1e-5 * max(1, np.abs(expected).max()))
    with pytest.raises(ValueError, match="dtype must be float32, the parameters' dtype, got float64"):
        base.sample(3, dtype=np.float64)
    with pytest.raises(TypeError, match="cannot mix"):
        base.log_prob(device(z))


def test_bad_arguments_are_named():
    for bad in (0, (), (2, 0), (2.0,), "a"):
        with pytest.raises(ValueError, match=r"DiagonalGaussian: event_shape must be positive ints, got"):
            DiagonalGaussian(bad)
    for kwargs, message in [
        ({"dim": 0}, "dim must be a positive int, got 0"),
        ({"dim": 2, "components": 0}, "components must be a positive int, got 0"),
        ({"dim": 2, "spread": 0.0}, "spread must be a positive finite number, got 0.0"),
        ({"dim": 2, "spread": math.inf}, "spread must be a positive finite number, got inf"),
    ]:
        with pytest.raises(ValueError, match=f"GaussianMixture: {message}"):
            GaussianMixture(**kwargs)
    with pytest.raises(ValueError, match=r"^DiagonalGaussian: z must have shape \(B, 2, 3\), got \(4, 6\)$"):
        DiagonalGaussian((2, 3)).log_prob(device(np.zeros((4, 6))))
    with pytest.raises(ValueError, match=r"^GaussianMixture: z must have shape \(B, 2\), got \(4, 3\)$"):
        GaussianMixture(2).log_prob(device(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 2\), got \(2,\)"):
        GaussianMixture(2).log_prob(device(np.zeros(2)))


def test_repr():
    assert repr(StandardNormal(2)) == "StandardNormal(event_shape=(2,))"
    assert repr(DiagonalGaussian((1, 4))) == "DiagonalGaussian(event_shape=(1, 4))"
    assert repr(GaussianMixture(2, components=5)) == "GaussianMixture(dim=2, components=5)"
