"""Continuously indexed flows (minflow/cif.py): the bound, the estimator and the sampler,
checked against a CIF whose likelihood is known in closed form.

The known model (D = 2, d_u = 1; every network a single Linear layer with chosen weights)::

    z ~ N(0, diag(TAU^2))                       (a base passed in, not the default)
    u | z ~ N(A . z + A0, SIGMA_P^2)            p(u | z)
    x = f^{-1}(exp(S) * (z + W_T u + B_T))      F^{-1}(z; u), f(x) = x exp(FLOW_LOG_SCALE) + FLOW_SHIFT

Every step is linear in (z, u) with Gaussian noise, so (u, x) is jointly Gaussian: log p(x)
and the exact posterior p(u | x) have closed forms (``moments`` below), and the Gaussian KL
of any Gaussian q from that posterior is the exact gap of the ELBO.
"""

import math

import numpy as np
import pytest
from helpers import assert_close, device, host, on_cupy

from minflow import backend, data
from minflow.autodiff import Tensor, ops
from minflow.cif import CIFLayer, ContinuouslyIndexedFlow, cif_realnvp
from minflow.flows.base import Sequential
from minflow.flows.coupling import AffineCoupling, half_mask
from minflow.flows.elementwise import ElementwiseAffine
from minflow.models import NormalizingFlow
from minflow.train import fit

TAU = np.array([1.3, 0.7])
FLOW_SHIFT, FLOW_LOG_SCALE = np.array([0.3, -0.2]), np.array([0.2, -0.4])
S = np.array([0.25, -0.1])  # s(u), the same for every u, so that x stays Gaussian
W_T, B_T = np.array([1.5, -0.8]), np.array([0.1, 0.2])  # t(u) = W_T u + B_T
A, A0, SIGMA_P = np.array([0.7, -0.5]), 0.3, 0.6
# q(u | x) in the imperfect model: the exact posterior's mean moved by OFFSET of its standard
# deviation and its standard deviation multiplied by INFLATE (wider than the posterior, so the
# weights p/q are bounded and the IW estimate converges).
OFFSET, INFLATE = 0.5, 1.5


class DiagonalNormal:
    """N(0, diag(scale^2)) with the base interface: log_prob(z) -> (B,), sample(n, seed, dtype, xp)."""

    def __init__(self, scale):
        self.scale = np.asarray(scale, dtype=float)

    def log_prob(self, z):
        standardized = z * Tensor(device(1 / self.scale, dtype=z.dtype))
        constant = float(np.sum(np.log(self.scale)) + math.log(2 * math.pi))
        return ops.sum(-0.5 * standardized * standardized, axis=1) - constant

    def sample(self, n, seed=None, dtype=None, xp=None):
        xp = xp or backend.xp()
        return backend.rng(seed, xp).standard_normal((n, 2), dtype=dtype) * xp.asarray(self.scale, dtype=dtype)


def moments():
    """Mean and covariance of x, the posterior's gain (E[u | x] = A0 + (x - mean_x) . gain) and variance."""
    scale = np.diag(np.exp(S - FLOW_LOG_SCALE))  # x = scale (z + t(u)) - FLOW_SHIFT exp(-FLOW_LOG_SCALE)
    mixing = np.eye(2) + np.outer(W_T, A)  # z + W_T (A . z) = mixing z
    base_cov = np.diag(TAU**2)
    mean_x = scale @ (W_T * A0 + B_T) - FLOW_SHIFT * np.exp(-FLOW_LOG_SCALE)
    cov_x = scale @ (mixing @ base_cov @ mixing.T + SIGMA_P**2 * np.outer(W_T, W_T)) @ scale
    var_u = A @ base_cov @ A + SIGMA_P**2
    cov_ux = (A @ base_cov @ mixing.T + SIGMA_P**2 * W_T) @ scale
    gain = np.linalg.solve(cov_x, cov_ux)
    return mean_x, cov_x, gain, var_u - gain @ cov_ux


def true_log_prob(x):
    mean_x, cov_x, _, _ = moments()
    d = x - mean_x
    return -0.5 * np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov_x), d) - 0.5 * np.linalg.slogdet(2 * np.pi * cov_x)[1]


def gaussian_kl(offset, inflate):
    """KL(N(m + offset sd, (inflate sd)^2) || N(m, sd^2)), the same for every x."""
    return -math.log(inflate) + (inflate**2 + offset**2) / 2 - 0.5


def known_model(offset=0.0, inflate=1.0):
    """The known CIF; q is the exact posterior for offset 0, inflate 1."""
    flow = ElementwiseAffine(2)
    flow.theta.data = device(np.stack([FLOW_SHIFT, FLOW_LOG_SCALE], axis=1))
    layer = CIFLayer(flow, index_dim=1, hidden=(), scale_bound=None)
    net = layer.scale_shift_net.layers[0]  # u -> (s, t)
    net.weight.data, net.bias.data = device([[0.0, 0.0, *W_T]]), device([*S, *B_T])
    prior = layer.prior_net.layers[0]  # z -> (mean, log_scale)
    prior.weight.data, prior.bias.data = device(np.stack([A, np.zeros(2)], 1)), device([A0, math.log(SIGMA_P)])
    mean_x, _, gain, variance = moments()
    sd = math.sqrt(variance)
    posterior = layer.posterior_net.layers[0]  # x -> (mean, log_scale)
    posterior.weight.data = device(np.stack([gain, np.zeros(2)], 1))
    posterior.bias.data = device([A0 - mean_x @ gain + offset * sd, math.log(inflate * sd)])
    return ContinuouslyIndexedFlow([layer], base=DiagonalNormal(TAU), seed=0)


def points(n=16, seed=1):
    mean_x, cov_x, _, _ = moments()
    return np.random.default_rng(seed).multivariate_normal(mean_x, cov_x, size=n)


def perturb(model, scale, seed):
    """Add N(0, scale^2) to every parameter, so that nothing is at its (identity) initialisation."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + device(scale * rng.standard_normal(p.shape), dtype=p.dtype)
    return model


# --- the known model: exact weights, the bias of the ELBO, the IW estimate ------------------------
def test_exact_posterior_makes_every_weight_the_likelihood():
    # With q(u | x) = p(u | x), w = p(x, u) / p(u | x) = p(x) for every draw: each term of the
    # weight (base, log-det, log p(u | z), log q) must be right, or the weights vary or shift.
    # Tolerance: float64 rounding of a few dozen operations on O(1) numbers.
    x = points()
    log_w = host(known_model().log_weights(device(x), 5, seed=0))
    assert log_w.shape == (5, len(x))
    np.testing.assert_allclose(log_w, np.broadcast_to(true_log_prob(x), log_w.shape), atol=1e-10)


def test_log_weights_in_several_passes_keep_each_draw_with_its_point():
    # rows_per_pass 2B + 1: two draws per pass, four passes for k = 7; row j of the result must
    # still hold draw j of every point (the weights are exact, so any mix-up shows).
    x = points()
    log_w = host(known_model().log_weights(device(x), 7, seed=0, rows_per_pass=2 * len(x) + 1))
    np.testing.assert_allclose(log_w, np.broadcast_to(true_log_prob(x), (7, len(x))), atol=1e-10)


def mean_gap(model, x, k, repeats, seed):
    """The IW estimate minus log p(x), averaged over the points, and its standard error."""
    estimate, standard_error = model.log_prob_estimate(device(x), k=k, repeats=repeats, seed=seed)
    gap = np.mean(host(estimate) - true_log_prob(x))
    return gap, math.sqrt(np.sum(host(standard_error) ** 2)) / len(x)  # independent points: errors add in squares


def test_elbo_falls_short_of_the_likelihood_by_the_kl_of_q():
    # E[ELBO] = log p(x) - KL(q || p(u | x)), here KL = 0.3445 nats at every x. 400 draws at 16
    # points give a standard error of about 0.015; 4 standard errors is a false alarm once in
    # 16,000 runs. The gap is 23 standard errors from 0: a missing bias would not pass.
    x = points()
    gap, standard_error = mean_gap(known_model(OFFSET, INFLATE), x, k=1, repeats=400, seed=1)
    kl = gaussian_kl(OFFSET, INFLATE)
    assert abs(gap + kl) < 4 * standard_error, f"ELBO gap {gap:.4f} +- {standard_error:.4f}, expected {-kl:.4f}"
    assert kl > 10 * standard_error


def test_importance_weighted_estimate_converges_to_the_likelihood():
    # Burda et al.: L_1 <= L_10 <= L_100 <= L_1000 <= log p(x). The delta method puts the gap at
    # about -Var[w / p] / 2k, with Var[w / p] = 0.29 for this q: -0.015 at k = 10, -0.0015 at
    # k = 100, -0.00015 at k = 1000. Measured (seeded): -0.339, -0.0176, -0.0014, +0.0012
    # nats, standard errors 0.015, 0.0014, 0.0010, 0.0009 (repeats chosen so that each step of
    # the tightening is 5 standard errors clear of the 2-standard-error margin asked for, whatever
    # the random stream). At k = 1000 the bias is far below the standard error, so the estimate
    # must lie within 4 standard errors of log p(x): a tolerance of about 0.0036 nats.
    x, model = points(), known_model(OFFSET, INFLATE)
    runs = [(1, 400), (10, 1000), (100, 200), (1000, 20)]  # (k, repeats)
    gaps = {k: mean_gap(model, x, k, repeats, seed=k) for k, repeats in runs}
    for k, (gap, standard_error) in gaps.items():
        assert gap < 4 * standard_error, f"k={k}: the estimate is above log p(x) by {gap:.4f} +- {standard_error:.4f}"
    for small, large in [(1, 10), (10, 100)]:  # the bound tightens
        assert gaps[small][0] < gaps[large][0] - 2 * math.hypot(gaps[small][1], gaps[large][1]), gaps
    gap, standard_error = gaps[1000]
    assert abs(gap) < 4 * standard_error, f"k=1000: {gap:.4f} +- {standard_error:.4f} from log p(x)"


def test_samples_have_the_known_mean_and_covariance():
    # 100,000 samples: each mean within 5 standard errors (sqrt(var / n)), each covariance entry
    # within 5 standard errors (sqrt((S_ii S_jj + S_ij^2) / n) for Gaussian data): a false alarm
    # once in about 10^6 per entry. Getting the sign of s in F^{-1} wrong changes var(x_1) by 60%.
    n = 100_000
    samples = host(known_model().sample(n, seed=0))
    mean_x, cov_x, _, _ = moments()
    assert samples.shape == (n, 2)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean_x), 5 * np.sqrt(np.diag(cov_x) / n))
    entry_error = np.sqrt((np.outer(np.diag(cov_x), np.diag(cov_x)) + cov_x**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - cov_x), 5 * entry_error)


# --- planted errors: every check above can fail ---------------------------------------------------
def _drop_index_log_det(monkeypatch):  # log|det dF/dx| without the - sum_i s_i(u) term (0.15 nats here)
    forward = CIFLayer.forward

    def mutant(self, x, u):
        z, log_det = forward(self, x, u)
        return z, log_det + ops.sum(self.scale_and_shift(u)[0], axis=1)

    monkeypatch.setattr(CIFLayer, "forward", mutant)


def _drop_log_q(monkeypatch):
    infer = CIFLayer.infer_index
    monkeypatch.setattr(CIFLayer, "infer_index", lambda self, x, rng: (infer(self, x, rng)[0], 0.0))


def _drop_log_p(monkeypatch):
    monkeypatch.setattr(CIFLayer, "index_log_prob", lambda self, u, z: 0.0)


def _log_det_off_by_a_hundredth(monkeypatch):  # 0.01 nats: about 3 times the k = 1000 tolerance
    forward = CIFLayer.forward

    def mutant(self, x, u):
        z, log_det = forward(self, x, u)
        return z, log_det + 0.01

    monkeypatch.setattr(CIFLayer, "forward", mutant)


MUTANTS = [_drop_index_log_det, _drop_log_q, _drop_log_p, _log_det_off_by_a_hundredth]


@pytest.mark.parametrize("plant", MUTANTS, ids=lambda f: f.__name__.strip("_"))
def test_planted_errors_fail_the_checks(plant, monkeypatch):
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        test_exact_posterior_makes_every_weight_the_likelihood()
    with pytest.raises(AssertionError):
        test_importance_weighted_estimate_converges_to_the_likelihood()


def test_a_wrong_inverse_fails_the_sample_check(monkeypatch):
    def mutant(self, z, u):  # exp(-s) where F^{-1} has exp(s)
        s, t = self.scale_and_shift(u)
        return self.flow.inverse((z + t) * ops.exp(-s))

    monkeypatch.setattr(CIFLayer, "inverse", mutant)
    with pytest.raises(AssertionError):
        test_samples_have_the_known_mean_and_covariance()


# --- a trained-size model: identity start, gradients, sampling, training --------------------------
def small_cif(seed=0, activation="relu", layers=3):
    rng = backend.rng(seed)
    cif_layers = [
        CIFLayer(
            AffineCoupling(half_mask(2, first=i % 2 == 0), hidden=(8,), activation=activation, seed=rng),
            index_dim=2,
            hidden=(8,),
            activation=activation,
            seed=rng,
        )
        for i in range(layers)
    ]
    return ContinuouslyIndexedFlow(cif_layers, seed=rng)


def test_untrained_index_networks_give_the_flow_itself():
    # Zero last layers: s = t = 0 and p = q = N(0, I), so every weight is the flow's exact density,
    # whatever u is drawn. The couplings are perturbed, so this is not the identity.
    model = small_cif()
    for layer in model.layers:
        perturb(layer.flow, 0.3, seed=1)
    x = device(np.random.default_rng(2).standard_normal((20, 2)))
    flow_log_prob = NormalizingFlow(Sequential([layer.flow for layer in model.layers])).log_prob(x)
    assert_close(model.log_weights(x, 4, seed=0), np.broadcast_to(host(flow_log_prob), (4, 20)), atol=1e-12)
    assert_close(model.log_prob(x, k=4, seed=0), flow_log_prob, atol=1e-12)


def test_layer_inverse_undoes_forward():
    # Tolerance: float64 rounding through a few exp / tanh layers.
    model = perturb(small_cif(), 0.3, seed=3)
    x = device(np.random.default_rng(4).standard_normal((10, 2)))
    u = Tensor(device(np.random.default_rng(5).standard_normal((10, 2))))
    for layer in model.layers:
        z, log_det = layer.forward(x, u)
        x_back, inverse_log_det = layer.inverse(z, u)
        assert_close(x_back, x, atol=1e-12)
        assert_close(inverse_log_det, -host(log_det), atol=1e-12)


def test_elbo_gradient_matches_finite_differences():
    # With the seed fixed, the noise eps is fixed and the ELBO is a smooth function of the
    # parameters (tanh networks: no kinks). Central differences with h = 1e-5 have truncation
    # error O(h^2 f''') ~ 1e-10 and rounding error ~ 1e-16 / h ~ 1e-11.
    model = perturb(small_cif(activation="tanh"), 0.3, seed=6)
    x = device(np.random.default_rng(7).standard_normal((8, 2)))

    def loss():
        return -ops.mean(model.elbo(x, seed=11))

    model.zero_grad()
    loss().backward()
    rng, h, checked = np.random.default_rng(8), 1e-5, 0
    for name, p in model.named_parameters():
        flat = host(p.data).reshape(-1)
        for i in rng.choice(flat.size, size=min(2, flat.size), replace=False):
            values = []
            for step in (h, -h):
                moved = flat.copy()
                moved[i] += step
                p.data = device(moved.reshape(p.shape))
                values.append(host(loss().data))
            p.data = device(flat.reshape(p.shape))
            numerical = (values[0] - values[1]) / (2 * h)
            analytic = host(p.grad).reshape(-1)[i]
            assert abs(analytic - numerical) < 1e-7 + 1e-6 * abs(numerical), f"{name}[{i}]: {analytic} vs {numerical}"
            checked += 1
    assert checked == 2 * len(model.parameters())  # two entries of every weight and bias


def test_sample_shapes_seeds_and_densities():
    model = perturb(small_cif(), 0.1, seed=9)
    samples = model.sample(50, seed=3)
    assert samples.shape == (50, 2) and samples.dtype == model.float_dtype()
    assert backend.array_module(samples) is model.array_module()
    np.testing.assert_array_equal(host(samples), host(model.sample(50, seed=3)))
    assert not np.array_equal(host(samples), host(model.sample(50, seed=4)))
    for values in (model.elbo(samples), model.log_prob(samples, k=8), *model.log_prob_estimate(samples, k=4)):
        assert values.shape == (50,) and np.all(np.isfinite(host(values)))


def test_same_seed_same_numbers():
    x = device(np.random.default_rng(10).standard_normal((6, 2)))
    one, two = perturb(small_cif(seed=1), 0.2, seed=2), perturb(small_cif(seed=1), 0.2, seed=2)
    np.testing.assert_array_equal(host(one.elbo(x, seed=5)), host(one.elbo(x, seed=5)))
    # seed=None draws from the model's own Generator: two models built alike draw alike
    np.testing.assert_array_equal(host(one.nll(x)), host(two.nll(x)))
    np.testing.assert_array_equal(host(one.log_prob(x, k=3)), host(two.log_prob(x, k=3)))
    assert not np.array_equal(host(one.elbo(x)), host(one.elbo(x)))  # ...and moves on between calls


def test_float32_model_runs_in_float32():
    # float32 draws are other numbers than float64 draws with the same seed, so the check uses
    # the exact posterior, where every weight is log p(x) whatever is drawn. Tolerance: float32
    # rounding (6e-8 relative) of O(10) numbers through a dozen operations, with room.
    model = known_model().astype(np.float32)
    x = points()
    log_w = model.log_weights(device(x, dtype=np.float32), 3, seed=0)
    assert log_w.dtype == np.float32
    np.testing.assert_allclose(host(log_w), np.broadcast_to(true_log_prob(x), (3, len(x))), atol=1e-4)
    assert model.log_prob(device(x, dtype=np.float32), k=3).dtype == np.float32
    assert model.sample(5, seed=0).dtype == np.float32


def test_fit_lowers_the_negative_log_likelihood():
    # Untrained, the model is N(0, I): 2.89 nats on these standardised moons. 300 steps of Adam
    # get a small CIF-RealNVP to 2.01 (measured, k = 20); asking for 0.3 nats of progress leaves
    # room for seeds and backends, and fails if nothing is learned.
    splits = data.toy_data("moons", n_train=1000, n_val=200, n_test=0, seed=0)
    model = cif_realnvp(2, layers=4, hidden=16, depth=1, index_hidden=16, seed=0)
    val = device(splits.val)
    before = float(np.mean(host(model.log_prob(val, k=20, seed=0))))
    history = fit(model, splits.train, steps=300, batch_size=128, lr=5e-3, val_data=splits.val, progress=False)
    after = float(np.mean(host(model.log_prob(val, k=20, seed=0))))
    assert after > before + 0.3, f"validation log-likelihood {before:.3f} -> {after:.3f}"
    assert history["val_nll"] and all(np.isfinite(history["val_nll"]))


def test_builder_starts_as_the_identity_and_counts_parameters():
    model = cif_realnvp(2, layers=2, hidden=8, depth=1, index_dim=1, index_hidden=4, seed=0)
    x = device(np.random.default_rng(14).standard_normal((5, 2)))
    assert_close(model.elbo(x), -0.5 * np.sum(host(x) ** 2, axis=1) - math.log(2 * math.pi), atol=1e-12)
    coupling = (1 * 8 + 8) + (8 * 2 + 2)  # [1, 8, 2]: conditioner of one coupling
    index = (1 * 4 + 4) + (4 * 4 + 4) + 2 * ((2 * 4 + 4) + (4 * 2 + 2))  # [1, 4, 4], then [2, 4, 2] twice
    assert model.num_parameters() == 2 * (coupling + index)


# --- errors ---------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    model = small_cif()
    x = device(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\), got \(4, 3\)"):
        model.elbo(device(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\), got \(2,\)"):
        model.log_prob(device(np.zeros(2)))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        model.log_prob(x, k=0)
    with pytest.raises(ValueError, match="repeats must be an integer >= 2, got 1"):
        model.log_prob_estimate(x, k=5, repeats=1)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        model.sample(0)
    with pytest.raises(ValueError, match="index_dim must be a positive integer, got 0"):
        CIFLayer(ElementwiseAffine(2), index_dim=0)
    with pytest.raises(ValueError, match="flow must be a Flow, got int"):
        CIFLayer(3)
    with pytest.raises(ValueError, match="same dimension, got \\[2, 3\\]"):
        ContinuouslyIndexedFlow([CIFLayer(ElementwiseAffine(2)), CIFLayer(ElementwiseAffine(3))])
    with pytest.raises(ValueError, match="non-empty list of CIFLayer"):
        ContinuouslyIndexedFlow([ElementwiseAffine(2)])
    with pytest.raises(ValueError, match="dim must be an integer >= 2, got 1"):
        cif_realnvp(1)
    with pytest.raises(ValueError, match="not conditional: context must be None, got a int"):
        model.log_prob(x, 10)
    with pytest.raises(TypeError, match="model.elbo"):
        model(x)


@pytest.mark.skipif(not on_cupy(), reason="needs CuPy as the default backend, to have data off it (NumPy)")
def test_data_on_the_wrong_backend_is_refused():
    with pytest.raises(ValueError, match="x is a numpy array but the model's parameters are cupy arrays"):
        small_cif().elbo(np.zeros((3, 2)))


@pytest.mark.skipif(not on_cupy(), reason="counts device synchronisations: runs on the strict CuPy stand-in")
def test_training_and_evaluation_do_not_synchronise_inside_the_layers():
    # DESIGN.md's budget (tests/test_syncs.py): at most 2 synchronisations per train step, none in
    # a layer. The draws, the bound and the estimates stay on the device until the caller reads them.
    import cupy

    if not getattr(cupy, "_strict_stand_in", False):
        pytest.skip("real CuPy does not count synchronisations; the strict stand-in does")
    from cupy import _strict

    model = cif_realnvp(2, layers=2, hidden=8, index_hidden=8, seed=0)
    x = backend.rng(1).standard_normal((64, 2), dtype=backend.get_default_dtype())
    fit(model, x, steps=1, batch_size=16, progress=False)  # warm-up, as in test_syncs
    with _strict.counting() as syncs:
        fit(model, x, steps=4, batch_size=16, progress=False)
    assert syncs.count / 4 <= 2, syncs
    with _strict.counting() as syncs:
        model.log_prob(x, k=10)
        model.log_prob_estimate(x, k=3, repeats=2)
        model.sample(10)
    assert syncs.count == 0, syncs
