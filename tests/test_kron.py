"""K-FAC curvature and the Kronecker-factored posterior against exact and dense references."""

import itertools

import keras
import numpy as np
import pytest
import scipy.linalg
from conftest import (
    N_CLASSES,
    assert_posterior_matches_dense,
    kron_and_full_curvature,
    make_mlp,
    naive_jacobians,
    subclassed_copy,
)

import laplace_tf as lt
from laplace_tf.networks.curvature.kron import DiagBlock


def _dense_blocks(curvature):
    """Each block as a dense matrix (A kron G, or diag)."""
    out = []
    for block in curvature.blocks:
        if isinstance(block, DiagBlock):
            out.append(np.diag(block.diagonal.numpy()))
            continue
        a = block.input_factor.numpy()
        a = np.diag(a) if a.ndim == 1 else a
        out.append(np.kron(a, block.output_factor.numpy()))
    return out


def _block_slices(model):
    starts = np.cumsum([0] + [int(np.prod(v.shape)) for v in model.trainable_variables])
    return [slice(a, b) for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("likelihood", ["classification", "regression", "binary", "multilabel"])
def test_one_example_gives_the_exact_ggn_blocks(likelihood):
    outputs = {"classification": N_CLASSES, "regression": 2, "binary": 1, "multilabel": 3}[likelihood]
    model = make_mlp(4, outputs, hidden=(5,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4))
    y = {"classification": [1], "regression": rng.normal(size=(1, 2)), "binary": [1], "multilabel": [[1, 0, 1]]}[
        likelihood
    ]
    kron = lt.Laplace(model, likelihood, hessian_structure="kron", subset_of_weights="all").fit(
        (x, np.asarray(y)), verbose=False
    )
    full = (
        lt.Laplace(model, likelihood, subset_of_weights="all", hessian_structure="full")
        .fit((x, np.asarray(y)), verbose=False)
        .curvature.numpy()
    )
    for dense, block in zip(_dense_blocks(kron.curvature), _block_slices(model), strict=True):
        np.testing.assert_allclose(dense, full[block, block], rtol=1e-9, atol=1e-12)


def test_batches_sum_and_repeated_examples_scale(classification_data):
    model = make_mlp(4, N_CLASSES)
    x, y = classification_data
    whole = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), batch_size=100, verbose=False
    )
    halves = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), batch_size=12, verbose=False
    )
    for a, b in zip(_dense_blocks(whole.curvature), _dense_blocks(halves.curvature), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    once = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x[:1], y[:1]), verbose=False
    )
    seven = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all")
    seven.fit((np.repeat(x[:1], 7, axis=0), np.repeat(y[:1], 7)), batch_size=3, verbose=False)
    for a, b in zip(_dense_blocks(once.curvature), _dense_blocks(seven.curvature), strict=True):
        np.testing.assert_allclose(b, 7 * a, rtol=1e-10, atol=1e-12)


def test_linear_model_with_one_output_is_exact(regression_data):
    x, y = regression_data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")])
    kron = lt.Laplace(model, "regression", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y[:, 0]), batch_size=7, verbose=False
    )
    full = (
        lt.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
        .fit((x, y[:, 0]), verbose=False)
        .curvature.numpy()
    )
    for dense, block in zip(_dense_blocks(kron.curvature), _block_slices(model), strict=True):
        np.testing.assert_allclose(dense, full[block, block], rtol=1e-10)


@pytest.fixture
def kron_laplace(classification_data):
    model = make_mlp(4, N_CLASSES, hidden=(5,))
    prior = np.array([0.5, 1.0, 2.0, 3.0])  # layerwise: one per variable
    la = lt.Laplace(model, "classification", hessian_structure="kron", prior_precision=prior, subset_of_weights="all")
    la.fit(classification_data, verbose=False)
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    precision = scipy.linalg.block_diag(*_dense_blocks(la.curvature)) + np.diag(np.repeat(prior, sizes))
    return la, model, precision


def test_posterior_quantities_equal_the_dense_kronecker_product(kron_laplace, classification_data):
    la, model, precision = kron_laplace
    assert_posterior_matches_dense(la, model, precision, classification_data[0][:5])


def test_evidence_uses_the_kronecker_log_det(kron_laplace, classification_data):
    la, model, precision = kron_laplace
    x, y = classification_data
    logits = np.asarray(model(x))
    log_lik = np.sum(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1)))
    prior = np.diag(precision - scipy.linalg.block_diag(*_dense_blocks(la.curvature)))
    theta = la.mean.numpy()
    expected = log_lik - 0.5 * (np.linalg.slogdet(precision)[1] - np.log(prior).sum() + prior @ theta**2)
    np.testing.assert_allclose(la.log_marginal_likelihood(), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="per-parameter prior has no Kronecker eigen-structure"):
        la.log_marginal_likelihood(np.linspace(1, 2, la.n_params))
    with pytest.raises(ValueError, match="per-parameter prior has no Kronecker eigen-structure"):
        la.optimize_prior_precision(prior_structure="diag")
    layerwise = float(la.log_marginal_likelihood(la.optimize_prior_precision(prior_structure="layerwise")))
    assert layerwise >= float(la.log_marginal_likelihood(la.optimize_prior_precision())) - 1e-9


def test_monte_carlo_fisher_approaches_the_exact_factors(classification_data):
    model = make_mlp(4, N_CLASSES)
    exact = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    mc = lt.Laplace(
        model,
        "classification",
        hessian_structure="kron",
        stochastic=True,
        num_samples=4000,
        seed=1,
        subset_of_weights="all",
    )
    mc.fit(classification_data, verbose=False)
    for a, b in zip(exact.curvature.blocks, mc.curvature.blocks, strict=True):
        scale = np.abs(a.output_factor.numpy()).max()
        np.testing.assert_allclose(b.output_factor, a.output_factor, atol=0.05 * scale)
        np.testing.assert_allclose(b.input_factor, a.input_factor, rtol=1e-12)


def test_empirical_fisher_kron_on_one_example_is_exact():
    model = make_mlp(4, N_CLASSES)
    x, y = np.random.default_rng(3).normal(size=(1, 4)), np.array([2])
    kron = lt.Laplace(model, "classification", hessian_structure="kron", curvature="ef", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    full = (
        lt.Laplace(model, "classification", curvature="ef", subset_of_weights="all", hessian_structure="full")
        .fit((x, y), verbose=False)
        .curvature.numpy()
    )
    for dense, block in zip(_dense_blocks(kron.curvature), _block_slices(model), strict=True):
        np.testing.assert_allclose(dense, full[block, block], rtol=1e-9, atol=1e-12)


def test_conv2d_and_embedding_single_position_blocks_are_exact():
    keras.utils.set_random_seed(2)
    conv = keras.Sequential(
        [
            keras.Input((3, 3, 2), dtype="float64"),
            keras.layers.Conv2D(4, 3, activation="tanh", dtype="float64"),  # one output position
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    embed = keras.Sequential(
        [
            keras.Input((1,), dtype="int32"),
            keras.layers.Embedding(7, 3, dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    rng = np.random.default_rng(4)
    for model, x in ((conv, rng.normal(size=(1, 3, 3, 2))), (embed, np.array([[5]], dtype="int32"))):
        kron = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
            (x, np.array([1])), verbose=False
        )
        full = (
            lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
            .fit((x, np.array([1])), verbose=False)
            .curvature.numpy()
        )
        assert set(kron._estimator.treatment.values()) <= {
            "kron (conv2d)",
            "kron (conv2d bias)",
            "kron (dense)",
            "kron (dense bias)",
            "kron (embedding)",
        }
        for dense, block in zip(_dense_blocks(kron.curvature), _block_slices(model), strict=True):
            np.testing.assert_allclose(dense, full[block, block], rtol=1e-9, atol=1e-12)


def test_conv2d_factors_over_patches_match_a_hand_computation():
    keras.utils.set_random_seed(3)
    layer = keras.layers.Conv2D(2, (2, 2), strides=1, padding="same", dtype="float64")
    model = keras.Sequential([keras.Input((3, 3, 1), dtype="float64"), layer, keras.layers.Flatten(dtype="float64")])
    x = np.random.default_rng(5).normal(size=(2, 3, 3, 1))
    kron = lt.Laplace(model, "regression", hessian_structure="kron", subset_of_weights="all").fit(
        (x, np.zeros((2, 18))), verbose=False
    )
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # 'same' with a 2x2 kernel pads bottom/right
    patches = np.stack(
        [padded[n, i : i + 2, j : j + 2, :].ravel() for n in range(2) for i in range(3) for j in range(3)]
    )
    np.testing.assert_allclose(kron.curvature.blocks[0].input_factor, patches.T @ patches / 18, rtol=1e-10)
    # regression on the flattened output: each position's gradient is one-hot per channel, so G = 18 I / 2 per channel
    np.testing.assert_allclose(kron.curvature.blocks[0].output_factor, 18 * np.eye(2), rtol=1e-10)


def test_layers_without_a_rule_get_exact_diagonal_blocks(classification_data):
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.LayerNormalization(dtype="float64"),
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    kron = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    diag = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    treatment = kron._estimator.treatment
    norm_paths = [v.path for v in model.layers[1].trainable_variables]
    assert [treatment[p] for p in norm_paths] == ["diag", "diag"]
    slices = _block_slices(model)
    for index in (2, 3):  # gamma and beta
        np.testing.assert_allclose(
            kron.curvature.blocks[index].diagonal, diag.curvature.numpy()[slices[index]], rtol=1e-10
        )


def test_kron_needs_whole_variables_and_no_exact_hessian(classification_data):
    model = make_mlp(4, N_CLASSES)
    with pytest.raises(ValueError, match="'ggn' or 'ef'"):
        lt.Laplace(model, "classification", hessian_structure="kron", curvature="hessian", subset_of_weights="all")
    masks = [np.ones(v.shape, dtype=bool) for v in model.trainable_variables]
    masks[0][0, 0] = False
    with pytest.raises(ValueError, match="whole variables"):
        lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights=masks)
    with pytest.raises(ValueError, match="hessian_structure='kron'"):
        lt.Laplace(model, "classification", stochastic=True, subset_of_weights="all", hessian_structure="full")
    with pytest.raises(ValueError, match="kfac_approx='mean' is not valid; choose one of 'expand', 'reduce'"):
        lt.Laplace(model, "classification", hessian_structure="kron", kfac_approx="mean", subset_of_weights="all")
    with pytest.raises(ValueError, match="kfac_approx='reduce' applies to hessian_structure='kron' only"):
        lt.Laplace(model, "classification", hessian_structure="diag", kfac_approx="reduce", subset_of_weights="all")


def _self_attention(inputs):
    attended = keras.layers.MultiHeadAttention(2, 3, dtype="float64")(inputs, inputs)
    return keras.layers.Dense(3, activation="tanh", dtype="float64")(
        keras.layers.Add(dtype="float64")([inputs, attended])
    )


@pytest.mark.parametrize("shared", ["dense", "conv1d", "einsum", "attention"])
def test_reduce_is_exact_where_an_examples_positions_feed_a_layer_the_same_input(shared, capsys):
    """One example whose four positions give the shared layer (a Dense on sequences, a Conv1D, an
    EinsumDense, self-attention's four projections and a Dense after it) the same input a: its
    kernel's gradient sum_t a g_t^T is a (sum_t g_t)^T, so K-FAC reduce gives the exact GGN block of
    every weight (the attention's query and key blocks are zero: equal scores); expand does not."""
    keras.utils.set_random_seed(3)
    options = {"activation": "tanh", "dtype": "float64"}
    layer = {
        "dense": lambda: keras.layers.Dense(3, **options),
        "conv1d": lambda: keras.layers.Conv1D(3, 2, **options),
        "einsum": lambda: keras.layers.EinsumDense("abc,cd->abd", (None, 3), bias_axes="d", **options),
        "attention": lambda: _self_attention,
    }[shared]()
    inputs = keras.Input((4, 2), dtype="float64")
    pooled = keras.layers.GlobalAveragePooling1D(dtype="float64")(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(N_CLASSES, dtype="float64")(pooled))
    x, y = np.repeat(np.random.default_rng(4).normal(size=(1, 1, 2)), 4, axis=1), np.array([1])
    full = (
        lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all")
        .fit((x, y), verbose=False)
        .curvature.numpy()
    )
    fitted = {
        approx: lt.Laplace(
            model, "classification", hessian_structure="kron", kfac_approx=approx, subset_of_weights="all"
        ).fit((x, y), verbose=approx == "reduce")
        for approx in ("expand", "reduce")
    }
    assert "parameters, kron ggn (K-FAC reduce), curvature" in capsys.readouterr().out  # the summary says which
    exact = [full[s, s] for s in _block_slices(model)]
    for block, expected in zip(_dense_blocks(fitted["reduce"].curvature), exact, strict=True):
        np.testing.assert_allclose(block, expected, rtol=1e-9, atol=1e-13)
    expand = _dense_blocks(fitted["expand"].curvature)
    assert not all(np.allclose(block, expected, rtol=1e-3) for block, expected in zip(expand, exact, strict=True))


def test_kron_glm_from_layer_factors_equals_the_jacobian_one(classification_data):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.LayerNormalization(dtype="float64"),  # a diagonal block in the mix
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    la = lt.Laplace(model, "classification", hessian_structure="kron", prior_precision=0.8, subset_of_weights="all")
    la.fit(classification_data, verbose=False)
    assert la._fitted_view.layer_factors is not None  # the path under test is the one taken
    x = classification_data[0][:6]
    expected = la.posterior.functional_variance(naive_jacobians(model, x))
    f_mean, f_var = la.glm_output_distribution(x)
    np.testing.assert_allclose(f_var, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f_mean, model(x), rtol=1e-12)


def test_dense_on_sequences_uses_the_expand_convention():
    keras.utils.set_random_seed(8)
    steps, width = 3, 4
    model = keras.Sequential(
        [
            keras.Input((steps, width), dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(6, steps, width)), rng.integers(0, N_CLASSES, size=6)
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    rows = x.reshape(-1, width)
    np.testing.assert_allclose(la.curvature.blocks[0].input_factor, rows.T @ rows / (6 * steps), rtol=1e-12)
    # G sums the per-step outer products of the pre-activation gradients: check it against the
    # exact GGN of the bias with one step per example, where the two coincide
    one_step = x[:, :1, :]
    single = keras.Sequential(
        [
            keras.Input((1, width), dtype="float64"),
            *[
                keras.layers.Dense(5, activation="tanh", dtype="float64"),
                keras.layers.Flatten(dtype="float64"),
                keras.layers.Dense(N_CLASSES, dtype="float64"),
            ],
        ]
    )
    for target, source in zip(single.trainable_variables, model.trainable_variables, strict=True):
        target.assign(source.value if source.shape == target.shape else source.value[:5])
    kron, full = kron_and_full_curvature(single, (one_step, y))
    bias = _block_slices(single)[1]
    np.testing.assert_allclose(kron.curvature.blocks[1].output_factor, full[bias, bias], rtol=1e-10, atol=1e-12)


def test_subclassed_model_gets_the_same_kron_curvature(classification_data):
    reference = make_mlp(4, N_CLASSES)
    net = subclassed_copy(reference)
    ours = lt.Laplace(net, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    expected = lt.Laplace(reference, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    for a, b in zip(_dense_blocks(ours.curvature), _dense_blocks(expected.curvature), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    x = classification_data[0][:4]
    np.testing.assert_allclose(ours.predict(x), expected.predict(x), rtol=1e-10)


@pytest.mark.parametrize("nested", [False, True], ids=["layer", "nested_model"])
def test_a_shared_layer_counts_each_call_as_positions(nested):
    """A Dense layer called on two inputs (shared weights; alone or inside a nested model) gets the
    K-FAC factors of one Dense layer on a length-2 sequence of them (the "expand" convention), with
    the same weights; the GLM predictive is exact either way."""
    keras.utils.set_random_seed(0)
    left, right = keras.Input((3,), dtype="float64"), keras.Input((3,), dtype="float64")
    shared = keras.layers.Dense(4, activation="tanh", dtype="float64")
    if nested:
        shared = keras.Sequential([keras.Input((3,), dtype="float64"), shared])
    head = keras.layers.Dense(2, dtype="float64")
    siamese = keras.Model([left, right], head(keras.layers.Concatenate()([shared(left), shared(right)])))
    sequence = keras.Input((2, 3), dtype="float64")
    twin_head = keras.layers.Dense(2, dtype="float64")
    twin = keras.Model(
        sequence, twin_head(keras.layers.Flatten()(keras.layers.Dense(4, activation="tanh", dtype="float64")(sequence)))
    )
    twin.set_weights(siamese.get_weights())
    rng = np.random.default_rng(0)
    pair, y = [rng.normal(size=(9, 3)), rng.normal(size=(9, 3))], rng.integers(0, 2, 9)
    stacked = np.stack(pair, axis=1)
    la = lt.Laplace(siamese, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (pair, y), batch_size=4, verbose=False
    )
    reference = lt.Laplace(twin, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (stacked, y), verbose=False
    )
    for ours, expected in zip(_dense_blocks(la.curvature), _dense_blocks(reference.curvature), strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(la.predict(pair), reference.predict(stacked), rtol=1e-10)
