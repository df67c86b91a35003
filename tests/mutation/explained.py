"""Why each surviving mutant survives: the record tests/MUTATION.md asks for, checked by `report.py --check`.

A survivor is either *equivalent* (the change cannot alter any result minflow computes, and the reason says
why) or *not killed* (a real change that no test catches yet, and the reason says what test would). A survivor
in neither table is "not explained" and fails `report.py --check`; so does a name here that no longer survives
(a test killed it: take it out). Keys are reasons, values the full mutmut names (`mutmut show NAME`).
"""

EQUIVALENT = {
    # minflow.optim
    "backend.array_module(None) is NumPy, and every call made through it here is given the arrays themselves: "
    "NumPy hands a ufunc or array function of CuPy arrays on to CuPy (__array_ufunc__, __array_function__), "
    "so the same arrays come back on every backend.": [
        "minflow.optim.x_clip_grad_norm__mutmut_6",
        "minflow.optim.xǁAdamǁ_flat_moments__mutmut_2",
        "minflow.optim.xǁAdamǁstep__mutmut_15",
        "minflow.optim.xǁAdamǁstep__mutmut_4",
        "minflow.optim.xǁAdamǁstep__mutmut_7",
    ],
    "reshape(-2) is reshape(-1): a negative size means 'infer this one' (NumPy 2.4; the strict CuPy stand-in "
    "is NumPy).": [
        "minflow.optim.x_clip_grad_norm__mutmut_12",
        "minflow.optim.xǁAdamǁ_flat_moments__mutmut_8",
        "minflow.optim.xǁFlatAdamǁ_flatten__mutmut_13",
        "minflow.optim.xǁFlatAdamǁstep__mutmut_19",
        "minflow.optim.xǁOptimizerǁ_state_array__mutmut_26",
    ],
    "zeros_like(None) is a 0-d array holding 0; b1 * 0 + (1 - b1) * g broadcasts to g's shape and values, "
    "so Adam's first m and v are the same.": [
        "minflow.optim.xǁAdamǁstep__mutmut_3",
        "minflow.optim.xǁAdamǁstep__mutmut_6",
    ],
    "FlatAdam's theta is only read after _flatten, which the first step always calls and which sets theta, "
    "so its initial value is never read.": [
        "minflow.optim.xǁFlatAdamǁ__init____mutmut_14",
    ],
    "Without a dtype the has-gradient mask is boolean; it is only used in xp.where and in update *= mask, "
    "where True / False act exactly as 1.0 / 0.0.": [
        "minflow.optim.xǁFlatAdamǁ_has_grad_mask__mutmut_4",
        "minflow.optim.xǁFlatAdamǁ_has_grad_mask__mutmut_7",
    ],
    "reshape(None) keeps the shape, and every state array is already flat (m, v) or reshaped to its "
    "parameter's shape by the caller (SGD's velocities).": [
        "minflow.optim.xǁOptimizerǁ_state_array__mutmut_17",
    ],
    # minflow.train
    "_data_seed sets index = -1 for a seed that is not an int only to reach the refusal below (index < 0); "
    "-2 reaches it too, and the message names the seed given, not index.": [
        "minflow.train.x__data_seed__mutmut_30",
    ],
    "array_module(None) is NumPy, which hands concatenate, isfinite and the other calls made here on to CuPy "
    "when given CuPy arrays (__array_function__, __array_ufunc__); no array is created from nothing, so the "
    "same arrays come back on every backend.": [
        "minflow.train.x__chunked_log_probs__mutmut_47",
        "minflow.train.x__non_finite_rows__mutmut_2",
        "minflow.train.x__read_step__mutmut_9",
        "minflow.train.x_non_finite_parameters__mutmut_4",
    ],
    "With a single chunk, concatenate returns a copy of the chunk instead of the chunk itself: equal values, "
    "and nothing writes to it.": [
        "minflow.train.x__chunked_log_probs__mutmut_41",
        "minflow.train.x__chunked_log_probs__mutmut_45",
    ],
    "array_module(chunks[1]) instead of chunks[0]: only two chunks or more reach it, and all chunks are on one "
    "backend.": [
        "minflow.train.x__chunked_log_probs__mutmut_48",
    ],
    "reshape(-2) and reshape(n, -2) are reshape(-1) and reshape(n, -1): a negative size means 'infer this one' "
    "(NumPy 2.4; the strict CuPy stand-in is NumPy).": [
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_13",
        "minflow.flows.coupling.xǁCouplingǁ_couple__mutmut_12",
        "minflow.train.x__non_finite_rows__mutmut_16",
        "minflow.train.x__read_step__mutmut_4",
    ],
    "_progress's default done=0 is never used: its one caller always passes done.": [
        "minflow.train.x__progress__mutmut_1",
    ],
    "interrupted starts True instead of False, but every path that reads it sets it first (after the loop, or in "
    "the KeyboardInterrupt handler); other exceptions propagate without reading it.": [
        "minflow.train.x__train_loop__mutmut_110",
    ],
    "The default FlatAdam gets lr 1e-3 instead of fit's lr, but the loop sets optimizer.lr from the schedule "
    "before every step, and a resume loads lr from its state.": [
        "minflow.train.x__train_loop__mutmut_8",
    ],
    "cause='step' dropped: NonFiniteLossError's default cause is 'step'.": [
        "minflow.train.x__train_loop__mutmut_86",
    ],
    "The chunk size (4096, 4097 or the default passed on) only decides which rows are computed together; each "
    "row's log p(x) does not depend on the other rows of its chunk.": [
        "minflow.train.x_evaluate_bits_per_dim__mutmut_1",
        "minflow.train.x_evaluate_bits_per_dim__mutmut_13",
        "minflow.train.x_evaluate_nll__mutmut_1",
        "minflow.train.x_log_probs__mutmut_1",
    ],
    "_check_options gets val_every 2 instead of 1: fit_to_density has no validation, and _check_options only "
    "refuses val_every < 1.": [
        "minflow.train.x_fit_to_density__mutmut_19",
    ],
    "NonFiniteLossError's default cause is never used: every raise in minflow passes cause.": [
        "minflow.train.xǁNonFiniteLossErrorǁ__init____mutmut_1",
        "minflow.train.xǁNonFiniteLossErrorǁ__init____mutmut_2",
    ],
    "rpartition('/') is partition('/') for keys with one '/': the part is parameters, optimizer or best, and the "
    "names (module paths, optimizer keys like velocity.0) contain no '/'.": [
        "minflow.train.xǁTrainingStateǁload__mutmut_45",
    ],
    "_CtrlC's previous handler is only read in __exit__ when installed is True, and installing sets it.": [
        "minflow.train.xǁ_CtrlCǁ__init____mutmut_3",
    ],
    # minflow.autodiff.ops
    "_expand_reduced(..., keepdims=None): None is falsy like False; where keepdims was True the cotangent already "
    "has the kept axes, and the reshape to (1 where reduced, n elsewhere) is that same shape, a no-op.": [
        "minflow.autodiff.ops.x__logsumexp_vjp__mutmut_5",
        "minflow.autodiff.ops.x__logsumexp_vjp__mutmut_14",
        "minflow.autodiff.ops.x__max_vjp__mutmut_5",
        "minflow.autodiff.ops.x__max_vjp__mutmut_14",
        "minflow.autodiff.ops.x__mean_vjp__mutmut_4",
        "minflow.autodiff.ops.x__sum_vjp__mutmut_9",
    ],
    "g.reshape(None) instead of g.reshape((1,) * ndim) after a full reduction: g is 0-d, reshape(None) keeps it "
    "0-d, and a 0-d array broadcasts against any shape exactly as one of shape (1, ..., 1) does.": [
        "minflow.autodiff.ops.x__expand_reduced__mutmut_2",
    ],
    "_xp(None) is NumPy, and every NumPy function these VJPs call through it (flip, cumsum, exp, swapaxes, "
    "linalg.inv, linalg.solve, broadcast_to, tril, triu, transpose, moveaxis, where) is given the arrays "
    "themselves: NumPy hands the call on to CuPy (__array_function__, __array_ufunc__); none creates an array "
    "from nothing. They survived the strict CuPy pass, where creating one (zeros) was caught.": [
        "minflow.autodiff.ops.x__cumsum_vjp__mutmut_2",
        "minflow.autodiff.ops.x__logsumexp_vjp__mutmut_21",
        "minflow.autodiff.ops.x__matmul_vjp__mutmut_9",
        "minflow.autodiff.ops.x__slogdet_vjp__mutmut_2",
        "minflow.autodiff.ops.x__solve_triangular_vjp__mutmut_2",
        "minflow.autodiff.ops.x__solve_vjp__mutmut_2",
        "minflow.autodiff.ops.x__stack_vjp__mutmut_8",
        "minflow.autodiff.ops.x__sum_vjp__mutmut_5",
        "minflow.autodiff.ops.x__transpose_vjp__mutmut_11",
        "minflow.autodiff.ops.x__where_vjp__mutmut_13",
        "minflow.autodiff.ops.x__where_vjp__mutmut_20",
    ],
    "_method drops keyword options: the ops it wraps as methods (add, sub, mul, div, neg, matmul, exp, log) "
    "take none, so there are none to pass on.": [
        "minflow.autodiff.ops.x__method__mutmut_5",
    ],
    # minflow.autodiff.tensor
    "A parent already visited is pushed again instead of skipped: the walk checks `visited` again when it pops "
    "the parent, so it is skipped there; the stack only grows.": [
        "minflow.autodiff.tensor.x_reverse_topological_order__mutmut_21",
    ],
    "Every input goes through _as_tensor, which returns a Tensor unchanged: the isinstance test in __call__ is "
    "only a fast path.": [
        "minflow.autodiff.tensor.xǁPrimitiveǁ__call____mutmut_2",
    ],
    "array_type = type(None) matches no array, so every op calls array_module(*arrays) (which raises only when "
    "NumPy and CuPy mix, as before) and asarray(out) (which returns an array of its own module unchanged): more "
    "work, the same results.": [
        "minflow.autodiff.tensor.xǁPrimitiveǁ__call____mutmut_10",
        "minflow.autodiff.tensor.xǁPrimitiveǁ__call____mutmut_14",
    ],
    "asarray(out) on every op's result instead of only where type(out) differs: asarray returns an array of "
    "its own module unchanged.": [
        "minflow.autodiff.tensor.xǁPrimitiveǁ__call____mutmut_21",
    ],
    "numpy.ones_like given a CuPy array hands the call on to CuPy (__array_function__): the same array on "
    "every backend (it survived the strict CuPy pass).": [
        "minflow.autodiff.tensor.xǁTensorǁbackward__mutmut_8",
    ],
    # minflow.flows.autoregressive
    "made_degrees' starting input degrees are all overwritten: the order was checked to be a permutation, so "
    "the loop writes every entry.": [
        "minflow.flows.autoregressive.x_made_degrees__mutmut_17",
    ],
    "The input degrees are a list of D >= 1 Python ints, which becomes int64 without a dtype (NumPy 2 on 64-bit "
    "platforms, CuPy, the stand-in), as with dtype=int64.": [
        "minflow.flows.autoregressive.xǁMADEǁ__init____mutmut_30",
        "minflow.flows.autoregressive.xǁMADEǁ__init____mutmut_32",
    ],
    "MADE's last layer starts at zero (zero=True: zero weight, uniform bias times 0) and is the last to draw "
    "from rng, so which generator it draws from changes no number.": [
        "minflow.flows.autoregressive.xǁMADEǁ__init____mutmut_58",
        "minflow.flows.autoregressive.xǁMADEǁ__init____mutmut_63",
    ],
    # minflow.flows.base
    "One log-det through stack and sum instead of returned as it is: the same numbers (a sum of one term is "
    "exact) and the same gradient.": [
        "minflow.flows.base.x__add_all__mutmut_1",
    ],
    "ops.stack's default axis is 0, the value dropped (pinned by test_ops).": [
        "minflow.flows.base.x__add_all__mutmut_13",
    ],
    "The module name of the array's class has no dot to split at: numpy.ndarray.__module__ is 'numpy' and "
    "cupy.ndarray.__module__ is 'cupy' (CuPy sets it; so does the stand-in), so split(None) and split('XX.XX') "
    "give the same first part.": [
        "minflow.flows.base.xǁFlowǁ_check_input__mutmut_16",
        "minflow.flows.base.xǁFlowǁ_check_input__mutmut_18",
    ],
    # minflow.flows.linear
    "A dtype's kind is one character and none is 'X', so 'XXiuXX' accepts the same kinds as 'iu'.": [
        "minflow.flows.linear.x__check_permutation__mutmut_11",
    ],
    "The LU factors are square (dim, dim), so shape[1] is shape[0].": [
        "minflow.flows.linear.x_unit_lower__mutmut_7",
        "minflow.flows.linear.x_upper_with_diagonal__mutmut_7",
    ],
    "r_jj <= 0 differs from r_jj < 0 only for r_jj exactly 0, an exactly singular Gaussian draw "
    "(probability zero; the seed is the only input).": [
        "minflow.flows.linear.xǁDenseLinearǁ__init____mutmut_27",
    ],
    "The signs are exactly +1 or -1, and q / s has the same bits as q * s for s = +-1.": [
        "minflow.flows.linear.xǁDenseLinearǁ__init____mutmut_34",
    ],
    "solve_triangular's default is lower=True, and its forward and VJP only test `if lower`, so None acts as False "
    "exactly where False was meant.": [
        "minflow.flows.linear.xǁLULinearǁinverse__mutmut_14",
        "minflow.flows.linear.xǁLULinearǁinverse__mutmut_22",
    ],
    "A list of Python ints becomes int64 without a dtype on NumPy 2, CuPy and the stand-in, as with dtype=int64.": [
        "minflow.flows.linear.xǁPermutationǁ__init____mutmut_13",
        "minflow.flows.linear.xǁPermutationǁ__init____mutmut_15",
        "minflow.flows.linear.xǁPermutationǁ__init____mutmut_19",
        "minflow.flows.linear.xǁPermutationǁ__init____mutmut_21",
    ],
    "The inverse permutation's starting values are all overwritten: the input was checked to be a permutation, "
    "so the loop writes every entry.": [
        "minflow.flows.linear.xǁPermutationǁ__init____mutmut_6",
    ],
    # minflow.flows.planar
    "The fallback inside a where() is discarded by the outer where() on the same condition, and its gradient is "
    "multiplied by 0 (finite either way).": [
        "minflow.flows.planar.x__norm__mutmut_24",
        "minflow.flows.planar.xǁRadialǁforward__mutmut_38",
        "minflow.flows.splines.x_rational_quadratic_spline_inverse__mutmut_89",
        "minflow.flows.splines.x_rational_quadratic_spline_inverse__mutmut_99",
        "minflow.flows.splines.x_rational_quadratic_spline_inverse__mutmut_100",
    ],
    "array_module(None) is NumPy, which hands tanh, abs, where and the other calls made here on CuPy arrays on to "
    "CuPy (__array_ufunc__, __array_function__); nothing is created from nothing.": [
        "minflow.flows.planar.x__solve_planar__mutmut_2",
        "minflow.flows.planar.xǁPlanarǁforward__mutmut_26",
    ],
    "At step == max_iterations the loop always returns or breaks, so range(max_iterations + 2) never reaches its "
    "extra value.": [
        "minflow.flows.planar.x__solve_planar__mutmut_28",
    ],
    "step > 1 and step > 0 select the same steps: the other condition is step % CHECK_EVERY == 0, CHECK_EVERY > 1.": [
        "minflow.flows.planar.x__solve_planar__mutmut_42",
    ],
    "A zero residual means the sample has converged; a converged sample stays where it is, so its lo / hi are never "
    "read again.": [
        "minflow.flows.planar.x__solve_planar__mutmut_58",
        "minflow.flows.planar.x__solve_planar__mutmut_67",
    ],
    "The error is only reported as the maximum over samples; a converged sample's relative residual is at most the "
    "tolerance and every unconverged one is above it (or NaN), so the maximum is the same.": [
        "minflow.flows.planar.x__solve_planar__mutmut_109",
    ],
    # minflow.flows.residual
    "array_module(None) is NumPy, whose linalg.norm, svd, sqrt, abs and finfo hand CuPy arrays on to CuPy or read "
    "only the dtype; nothing is created from nothing (checked on the stand-in).": [
        "minflow.flows.residual.x__normalize__mutmut_3",
        "minflow.flows.residual.xǁContractiveResidualǁlipschitz_bound__mutmut_10",
        "minflow.flows.residual.xǁSpectralNormLinearǁsingular_vectors__mutmut_12",
        "minflow.flows.residual.xǁContractiveResidualǁ_stopping_tolerance__mutmut_4",
        "minflow.flows.residual.xǁContractiveResidualǁ_stopping_tolerance__mutmut_10",
    ],
    "compute_uv / full_matrices are only tested for truth, so None acts as False, the value passed.": [
        "minflow.flows.residual.xǁContractiveResidualǁlipschitz_bound__mutmut_7",
        "minflow.flows.residual.xǁSpectralNormLinearǁsingular_vectors__mutmut_9",
    ],
    "(-1) ** (k - 1) is the same integer as (-1) ** (k + 1).": [
        "minflow.flows.residual.xǁContractiveResidualǁ_hutchinson__mutmut_39",
        "minflow.flows.residual.xǁContractiveResidualǁ_log_det__mutmut_45",
    ],
    "The reduced array is always 2-D here, so axis=+1 is axis=-1.": [
        "minflow.flows.residual.xǁContractiveResidualǁ_hutchinson__mutmut_30",
        "minflow.flows.residual.xǁContractiveResidualǁ_log_det__mutmut_52",
    ],
    "reshape(..., -2) is reshape(..., -1): any negative size means 'infer this one' (NumPy 2.4, the stand-in).": [
        "minflow.flows.residual.xǁSpectralNormLinearǁnormalized_weight__mutmut_22",
    ],
    "The tolerance of an empty batch is only compared with its residual 0.0, so 1.0 and 0.0 give the same answer.": [
        "minflow.flows.residual.xǁContractiveResidualǁ_stopping_tolerance__mutmut_11",
    ],
    "array_module(None) is NumPy, whose sqrt given a CuPy array hands it on to CuPy; the sum and max are the "
    "array's own methods (it survived the strict CuPy pass).": [
        "minflow.flows.residual.xǁContractiveResidualǁ_fixed_point__mutmut_17",
    ],
    "integers(2**62) is integers(0, 2**62): with one bound, Generator.integers draws from [0, bound).": [
        "minflow.flows.residual.xǁContractiveResidualǁ__init____mutmut_99",
    ],
    # minflow.flows.multiscale
    "_plu is only given the square (C, C) rotation, so shape[1] is shape[0].": [
        "minflow.flows.multiscale.x__plu__mutmut_4",
    ],
    "diagonal <= 0 differs from diagonal < 0 only for an exactly zero pivot of U, which the orthogonal (so "
    "invertible) rotation's P L U never has.": [
        "minflow.flows.multiscale.xǁInvertibleConv1x1ǁ__init____mutmut_33",
    ],
    "solve_triangular's default is lower=True, the value dropped, and its forward and VJP only test `if lower`, "
    "so lower=None acts as the False it replaced.": [
        "minflow.flows.multiscale.xǁInvertibleConv1x1ǁinverse__mutmut_20",
        "minflow.flows.multiscale.xǁInvertibleConv1x1ǁinverse__mutmut_26",
    ],
    "reshape(n, -2) is reshape(n, -1): a negative size means 'infer this one' (NumPy 2.4; the strict CuPy "
    "stand-in is NumPy).": [
        "minflow.flows.multiscale.xǁMultiScaleǁforward__mutmut_38",
        "minflow.flows.multiscale.xǁMultiScaleǁlatent_parts__mutmut_15",
    ],
    # minflow.flows.coupling
    "i - j and i + j always have the same parity (Python's % keeps it for negatives), so the checkerboard is the "
    "same.": [
        "minflow.flows.coupling.x_checkerboard_mask__mutmut_3",
    ],
    "A non-empty list of Python ints becomes an int64 array without a dtype (NumPy 2 on 64-bit platforms, CuPy, "
    "the stand-in), as with dtype=int64; the mask has at least one coordinate on each side.": [
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_33",
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_35",
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_39",
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_41",
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_47",
        "minflow.flows.coupling.xǁCouplingǁ__init____mutmut_49",
    ],
    "A (B, D) batch reshaped to (B, -1) or to its own shape anyway: a no-op reshape, the same numbers and gradients.": [
        "minflow.flows.coupling.xǁCouplingǁ_couple__mutmut_2",
        "minflow.flows.coupling.xǁCouplingǁ_couple__mutmut_44",
    ],
    # minflow.flows.transformers
    "closed is only tested for truth, so None acts as False, the value passed.": [
        "minflow.flows.transformers.x_logit__mutmut_6",
    ],
    "array_module(None) is NumPy, whose isnan, all, any, min and max given a CuPy array hand it on to CuPy "
    "(__array_ufunc__, __array_function__); the message is built from the same numbers (it survived the strict "
    "CuPy pass).": [
        "minflow.flows.transformers.x__value_range__mutmut_2",
    ],
    "broadcast_to a log-scale that already has y's shape is a no-op: the same values, and its VJP sums over no axis.": [
        "minflow.flows.transformers.x_affine__mutmut_12",
    ],
    # minflow.flows.splines
    "clip(floor(x K), None, K - 1) without the lower bound 0: x was checked to lie in [0, 1], so floor(x K) >= 0 "
    "already (floor(-0.0) is -0.0, which becomes the integer 0).": [
        "minflow.flows.splines.x_piecewise_linear__mutmut_69",
    ],
    "ndim one too small when the bin masses have more leading axes than y: every reshape that uses it only "
    "prepends axes of length 1, which broadcasting adds back, and the one table (the knots) keeps all its axes, so "
    "take_along_axis sees the same shapes.": [
        "minflow.flows.splines.x_piecewise_linear_inverse__mutmut_45",
    ],
    "ops.softmax's and ops.cumsum's default axis is -1, the value dropped.": [
        "minflow.flows.splines.xǁPiecewiseLinearTransformerǁbin_masses__mutmut_4",
        "minflow.flows.splines.x_rational_quadratic_parameters__mutmut_78",
        "minflow.flows.splines.x__knots__mutmut_7",
    ],
    "_Spline's early mixing check without x: a NumPy x with CuPy knots (or the reverse) is refused a few lines later "
    "by the bin search's own check (_search_bins), with the same message (tests/test_spline_details.py shows it on "
    "the stand-in); the parameters are checked against each other here.": [
        "minflow.flows.splines.xǁ_Splineǁ__init____mutmut_65",
        "minflow.flows.splines.xǁ_Splineǁ__init____mutmut_69",
    ],
    "array_module(None) is NumPy, whose sum, abs and finfo given a CuPy array hand it on to CuPy or read only the "
    "dtype (it survived the strict CuPy pass).": [
        "minflow.flows.splines.x__check_sizes__mutmut_17",
    ],
    "_align reshapes a tensor that already has ndim axes to its own shape: a no-op.": [
        "minflow.flows.splines.x__align__mutmut_3",
    ],
    "A 0-d unnormalized_widths gets K = 1 instead of 0, but the same condition refuses it first (widths.ndim == 0), "
    "with a message that names shapes, not K.": [
        "minflow.flows.splines.x_rational_quadratic_parameters__mutmut_21",
    ],
    # minflow.flows.sinh_arcsinh
    "h >= 0 -> h > 0 differs at h = 0 only, where the result is -0.0 instead of 0.0 (equal) and the gradient, "
    "sign * f'(sign * h) * sign = f'(0) = 1, is the same.": [
        "minflow.flows.sinh_arcsinh.x__asinh__mutmut_12",
    ],
    "|u| < 1 -> |u| <= 1 moves only the points u = 1 and u = -1 to the tanh formula, where both formulas round to "
    "the same double (NumPy's tanh and exp; tests/test_transformers.py compares the bits around 1).": [
        "minflow.flows.sinh_arcsinh.x__sinh__mutmut_4",
    ],
    "The tanh branch's value is discarded where |u| >= 1, and its gradient there is multiplied by the where's "
    "zero; tanh(1/2) keeps it finite, as 0 did.": [
        "minflow.flows.sinh_arcsinh.x__sinh__mutmut_15",
    ],
    "array_module(None) is NumPy, whose where and abs given a CuPy array hand it to CuPy; they survived the "
    "strict CuPy pass too.": [
        "minflow.flows.sinh_arcsinh.x__asinh__mutmut_2",
        "minflow.flows.sinh_arcsinh.x__sinh__mutmut_3",
    ],
    # minflow.testing (flow_checks, transformer_checks, examples)
    "reshape(-2) is reshape(-1) and reshape(None) keeps the shape (NumPy 2.4; the strict CuPy stand-in is "
    "NumPy); argmax / argmin without an axis flatten anyway.": [
        "minflow.testing.flow_checks.x__check_close__mutmut_27",
        "minflow.testing.flow_checks.x_check_flow__mutmut_177",
        "minflow.testing.flow_checks.x_numerical_jacobian__mutmut_32",
        "minflow.testing.flow_checks.x_numerical_jacobian__mutmut_42",
        "minflow.testing.transformer_checks.x__expect_close__mutmut_23",
        "minflow.testing.transformer_checks.x__worst__mutmut_20",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_249",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_251",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_263",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_267",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_271",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_309",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_311",
    ],
    "array_module(None) is NumPy, and slogdet, zeros_like, stack and _worst's call are given the arrays "
    "themselves, which NumPy hands on to CuPy; all four survived the strict CuPy pass too.": [
        "minflow.testing.flow_checks.x_check_flow__mutmut_105",
        "minflow.testing.flow_checks.x_numerical_jacobian__mutmut_21",
        "minflow.testing.flow_checks.x_numerical_jacobian__mutmut_52",
        "minflow.testing.transformer_checks.x__worst__mutmut_2",
    ],
    "A dead branch: _check_close is only given per-sample arrays whose shape (B, ...) was checked first, so "
    "got.ndim is never 0.": [
        "minflow.testing.flow_checks.x__check_close__mutmut_11",
        "minflow.testing.flow_checks.x__check_close__mutmut_13",
    ],
    "dim > 1 -> dim >= 1: for dim 1 the rotation order[1:] + order[:1] of [0] is [0], the same permutation.": [
        "minflow.testing.examples.x__moving_permutation__mutmut_9",
    ],
    "sweep[i + 1, 0] -> sweep[i + 1, 1]: the sweep repeats one column for every coordinate, so columns 0 and 1 "
    "hold the same numbers.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_323",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_325",
    ],
    "forward(h[0], ) without theta: the local forward's default theta is theta.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_102",
    ],
    "h[1] for h[0]: the check only reads the shape, and every row of h has the same one.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_103",
    ],
    "0 * h -> 0 / h: equal wherever h != 0, and h is drawn from a continuous law inside the domain, never 0.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_365",
    ],
    "z >= low -> z > low and z <= high -> z < high differ only for a value exactly on the edge; the round trip "
    "or the check that the inverse maps the edge to itself fails first, so the verdict cannot change (at most "
    "which domain message is shown).": [
        "minflow.testing.transformer_checks.x__check_domain__mutmut_7",
        "minflow.testing.transformer_checks.x__check_domain__mutmut_8",
    ],
}

NOT_KILLED = {
    # minflow.train
    "A random generator made on the default backend instead of the model's: on the stand-in CuPy's generator is "
    "NumPy's, so the same seed draws the same numbers and nothing differs. Real CuPy draws another stream; "
    "tests/test_follow_data.py::test_a_numpy_model_trains_the_same_whatever_the_default_backend kills these on a "
    "GPU (make gpu-check runs the suite on CuPy).": [
        "minflow.train.x__data_seed__mutmut_16",
        "minflow.train.x__data_seed__mutmut_18",
        "minflow.train.x_fit__mutmut_68",
        "minflow.train.x_fit__mutmut_76",
        "minflow.train.x_fit_to_density__mutmut_23",
        "minflow.train.x_fit_to_density__mutmut_25",
    ],
    "A resume's best parameters copied to the default backend instead of the parameter's: every resume test "
    "runs its model on the default backend. Resuming a NumPy model while CuPy is the default (with validation, "
    "so that best parameters exist) would kill them.": [
        "minflow.train.x__train_loop__mutmut_28",
        "minflow.train.x__train_loop__mutmut_31",
        "minflow.train.x__train_loop__mutmut_32",
    ],
    # minflow.flows.splines
    "b <= 0 instead of b < 0 picks the textbook root formula at b = 0 exactly, where both formulas give the same "
    "root (root / 2a = -2c / root since root^2 = -4ac) up to the last bit; b is exactly 0 on a set of measure zero.": [
        "minflow.flows.splines.x_rational_quadratic_spline_inverse__mutmut_70",
    ],
    # minflow.flows.planar
    "Radial at q == 0 exactly: both formulas give sqrt(alpha R) to within an ulp (equivalent up to rounding).": [
        "minflow.flows.planar.xǁRadialǁforward__mutmut_18",
    ],
    "The halving rule with < instead of <=: differs only when 2|step| equals the previous step exactly with the "
    "Newton point strictly inside the bracket; none in 3,000 random problems, and the root meets the same tolerance.": [
        "minflow.flows.planar.x__solve_planar__mutmut_87",
    ],
    "Accepting a Newton point on the bracket's end (>= lo, <= hi) is an improvement, not a bug: in saturated tanh "
    "the first Newton point is the exact root and equals the bracket's end, which the strict test rejects, so such "
    "samples fall back to bisection (a median of 36 iterations in float64 where 1 would do). A test that killed "
    "these would pin the slow behaviour; the fix (accept a point a few ulps outside and clip) is left open.": [
        "minflow.flows.planar.x__solve_planar__mutmut_82",
        "minflow.flows.planar.x__solve_planar__mutmut_83",
    ],
    # minflow.flows.residual
    "A full SVD instead of the reduced one: the top singular value and vectors differ by at most 4e-16 relative over "
    "2,000 random matrices, no sign flips (equivalent up to rounding, too small to test robustly).": [
        "minflow.flows.residual.xǁSpectralNormLinearǁsingular_vectors__mutmut_11",
        "minflow.flows.residual.xǁSpectralNormLinearǁsingular_vectors__mutmut_13",
    ],
    "Rademacher probes from u <= 0.5 instead of u < 0.5: differ only when a uniform draw is exactly 0.5 "
    "(probability 2**-53 an entry) and are Rademacher either way; which sign goes with 0.5 is not documented.": [
        "minflow.flows.residual.xǁContractiveResidualǁ_log_det__mutmut_69",
    ],
    "Another valid seed for Hutchinson's probe stream: drawn from [1, 2^62), [0, 2^63) or [0, 124) instead of "
    "[0, 2^62). The probes are still Rademacher and reproducible for a given seed, which is the contract; the "
    "last would make two blocks share a stream with probability 1/124, which only a statistical test over many "
    "seeds could see.": [
        "minflow.flows.residual.xǁContractiveResidualǁ__init____mutmut_101",
        "minflow.flows.residual.xǁContractiveResidualǁ__init____mutmut_102",
        "minflow.flows.residual.xǁContractiveResidualǁ__init____mutmut_104",
    ],
    # minflow.testing (flow_checks, transformer_checks)
    "Another valid random draw: check_flow's other latent points drawn with seed None, 0 or seed + 2 instead of "
    "seed + 1 are other points of the same law; which seeds is not part of the contract.": [
        "minflow.testing.flow_checks.x_check_flow__mutmut_66",
        "minflow.testing.flow_checks.x_check_flow__mutmut_69",
        "minflow.testing.flow_checks.x_check_flow__mutmut_71",
    ],
    "The random generator is made on the default backend instead of the tensor's or flow's; every test runs on "
    "the default backend, and a test with a NumPy model while CuPy is the default would kill them.": [
        "minflow.testing.flow_checks.x_check_gradients__mutmut_9",
        "minflow.testing.flow_checks.x_check_gradients__mutmut_13",
        "minflow.testing.flow_checks.x_check_gradients__mutmut_15",
        "minflow.testing.flow_checks.x_sample_inputs__mutmut_8",
        "minflow.testing.flow_checks.x_sample_inputs__mutmut_10",
    ],
    "sample_inputs(flow, seed + 1) gives one other point instead of a batch: a flow whose inverse is wrong at "
    "some but not all generic points would see it.": [
        "minflow.testing.flow_checks.x_check_flow__mutmut_68",
    ],
    "and -> or differs only for a half-line input domain, which no flow has and sample_inputs does not support; "
    "supporting half lines like check_transformer's _inside would make it testable.": [
        "minflow.testing.flow_checks.x_sample_inputs__mutmut_16",
    ],
    "The wrong-length theta made in float64 instead of the dtype checked, or with params + 2 values instead of "
    "+ 1, is still a theta of the wrong length; only a transformer that accepts exactly params + 1 values, or "
    "refuses a theta for its dtype, would tell.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_59",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_61",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_63",
    ],
    "The finite-difference bracket takes log g' at h + e twice instead of at h - e: it matters only where the "
    "stencil straddles a knot, so a test needs a piecewise-linear transformer with a knot within 2e-6 left of a "
    "sampled input.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_228",
    ],
    ">= -> > at the bracket's ends: differs only on a tie between log|secant| and the bracket's end, a "
    "measure-zero event under rounding; planting one needs chosen inputs.": [
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_243",
        "minflow.testing.transformer_checks.x_check_transformer__mutmut_244",
    ],
}
