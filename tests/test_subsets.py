"""Last-layer and subnetwork Laplace equal the full Laplace restricted to their weights."""

import numpy as np
import pytest
from conftest import N_CLASSES, make_mlp, naive_jacobians, output_hessians_np

import laplace_tf as lt


def _indices(model, chosen_paths=None, masks=None):
    """Flat indices (in the all-weights vector) of the chosen variables or mask entries."""
    out, start = [], 0
    for i, v in enumerate(model.trainable_variables):
        size = int(np.prod(v.shape))
        if masks is not None and masks[i] is not None:
            out.extend(start + np.flatnonzero(np.ravel(masks[i])))
        elif chosen_paths is not None and v.path in chosen_paths:
            out.extend(range(start, start + size))
        start += size
    return np.array(out)


@pytest.fixture
def model():
    return make_mlp(4, N_CLASSES, hidden=(5, 4))


@pytest.mark.parametrize("curvature", ["ggn", "ef", "hessian"])
@pytest.mark.parametrize("structure", ["full", "diag"])
def test_last_layer_equals_the_restricted_full_curvature(model, classification_data, curvature, structure):
    full = lt.Laplace(
        model, "classification", curvature=curvature, subset_of_weights="all", hessian_structure="full"
    ).fit(classification_data, verbose=False)
    last = lt.Laplace(
        model, "classification", subset_of_weights="last_layer", hessian_structure=structure, curvature=curvature
    ).fit(classification_data, verbose=False)
    index = _indices(model, chosen_paths={v.path for v in model.layers[-1].trainable_variables})
    assert last.n_params == 4 * N_CLASSES + N_CLASSES == len(index)
    expected = full.curvature.numpy()[np.ix_(index, index)]
    expected = expected if structure == "full" else np.diag(expected)
    np.testing.assert_allclose(last.curvature, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last.mean, full.mean.numpy()[index])


def test_the_defaults_are_laplace_torchs_last_layer_kron(model, classification_data):
    la = lt.Laplace(model, "classification").fit(classification_data, verbose=False)
    assert la.hessian_structure.value == "kron"
    assert sorted(la.params.names) == sorted(v.path for v in model.layers[-1].trainable_variables)


@pytest.mark.parametrize("inputs", ["array", "dict"])
def test_the_last_layer_of_a_subclassed_model_is_the_one_it_calls_last(classification_data, inputs):
    """A subclassed model creating its output layer first lists that layer's variables first; the
    last layer is still the output layer (the one laplace-torch's forward hooks would find), also
    for lt.subnetwork_mask, and its Laplace equals one over that layer by name."""
    import keras

    class HeadFirst(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(N_CLASSES, dtype="float64")
            self.body = keras.layers.Dense(5, activation="tanh", dtype="float64")

        def call(self, x):
            return self.head(self.body(x["features"] if isinstance(x, dict) else x))

    x, y = classification_data
    x = {"features": x} if inputs == "dict" else x
    model = HeadFirst()
    model(x)
    assert model.trainable_variables[-1].path.startswith(model.body.path)  # created last
    head = sorted(v.path for v in model.head.trainable_variables)
    la = lt.Laplace(model, "classification").fit((x, y), verbose=False)
    assert sorted(la.params.names) == head
    masks = lt.subnetwork_mask(model, "last_layer")
    assert sorted(path for path, mask in masks.items() if mask.all()) == head
    named = lt.Laplace(model, "classification", subset_of_weights=[f"{model.head.path}/*"]).fit((x, y), verbose=False)
    np.testing.assert_allclose(la.log_marginal_likelihood(), named.log_marginal_likelihood(), rtol=1e-12)


def test_the_last_layer_of_a_subclassed_text_model_is_its_head():
    """Zeros cannot run through a TextVectorization: the forward pass that finds the last layer
    takes empty strings then."""
    import keras
    import tensorflow as tf

    class TextHeadFirst(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(2)
            self.vectorize = keras.layers.TextVectorization(max_tokens=8, output_sequence_length=3)
            self.vectorize.adapt(["a b c", "b c d"])
            self.embed = keras.layers.Embedding(8, 3)

        def call(self, x):
            return self.head(tf.reduce_mean(self.embed(self.vectorize(x)), axis=1))

    model = TextHeadFirst()
    model(tf.constant(["a b", "c d"]))
    la = lt.Laplace(model, "classification")
    assert sorted(la.params.names) == sorted(v.path for v in model.head.trainable_variables)


def test_patterns_and_masks_select_the_same_subnetwork(model, classification_data):
    full = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        classification_data, verbose=False
    )
    first_kernel = model.trainable_variables[0]
    mask = np.zeros(first_kernel.shape, dtype=bool)
    mask[1, :3] = True
    masks = [mask, None, None, None, np.ones(model.trainable_variables[4].shape, dtype=bool), None]
    by_mask = lt.Laplace(model, "classification", subset_of_weights=masks, hessian_structure="full").fit(
        classification_data, verbose=False
    )
    index = _indices(model, masks=masks)
    np.testing.assert_allclose(by_mask.curvature, full.curvature.numpy()[np.ix_(index, index)], rtol=1e-10)
    by_dict = lt.Laplace(
        model,
        "classification",
        subset_of_weights={first_kernel.path: mask, model.trainable_variables[4].path: masks[4]},
        hessian_structure="full",
    )
    by_dict.fit(classification_data, verbose=False)
    np.testing.assert_allclose(by_dict.curvature, by_mask.curvature, rtol=1e-12)
    pattern = f"{model.layers[1].name}/*"
    by_pattern = lt.Laplace(model, "classification", subset_of_weights=[pattern], hessian_structure="full").fit(
        classification_data, verbose=False
    )
    index = _indices(model, chosen_paths={v.path for v in model.layers[1].trainable_variables})
    np.testing.assert_allclose(by_pattern.curvature, full.curvature.numpy()[np.ix_(index, index)], rtol=1e-10)


def test_subnetwork_predictive_uses_only_its_weights(model, classification_data):
    x = classification_data[0][:5]
    la = lt.Laplace(
        model, "classification", subset_of_weights="last_layer", prior_precision=0.3, hessian_structure="full"
    )
    la.fit(classification_data, verbose=False)
    index = _indices(model, chosen_paths={v.path for v in model.layers[-1].trainable_variables})
    jac = naive_jacobians(model, x)[:, :, index]
    expected = np.einsum("nkp,pq,nlq->nkl", jac, np.linalg.inv(la.posterior.precision.numpy()), jac)
    np.testing.assert_allclose(la.glm_output_distribution(x)[1], expected, rtol=1e-9, atol=1e-12)
    draws = la.sample(3, seed=0).numpy()
    assert draws.shape == (3, len(index))
    map_before = [v.numpy().copy() for v in model.trainable_variables]
    la.predict(x, pred_type="nn", n_samples=3, seed=0)
    for before, v in zip(map_before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(before, v.numpy())  # the model's own weights are untouched


def test_bad_subsets_are_clear_errors(model):
    with pytest.raises(ValueError, match="no trainable variable matches"):
        lt.Laplace(model, "classification", subset_of_weights=["conv*"], hessian_structure="full")
    with pytest.raises(ValueError, match="one mask per trainable variable"):
        lt.Laplace(model, "classification", subset_of_weights=[np.ones(3, dtype=bool)], hessian_structure="full")
    with pytest.raises(ValueError, match="must be boolean of shape"):
        lt.Laplace(
            model, "classification", subset_of_weights=[np.ones(3, dtype=bool)] + [None] * 5, hessian_structure="full"
        )
    with pytest.raises(ValueError, match="unknown variables"):
        lt.Laplace(
            model, "classification", subset_of_weights={"nope/kernel": np.ones(3, dtype=bool)}, hessian_structure="full"
        )
    with pytest.raises(ValueError, match="subset_of_weights='first'"):
        lt.Laplace(model, "classification", subset_of_weights="first", hessian_structure="full")


@pytest.mark.parametrize("structure", ["full", "diag", "kron", "lowrank"])
def test_last_layer_predictive_from_features_equals_the_jacobian_one(model, classification_data, structure):
    options = {"rank": 10} if structure == "lowrank" else {}
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure=structure, **options)
    la.fit(classification_data, verbose=False)
    assert la._fitted_view.features is not None  # the closed-form path is the one taken
    x = classification_data[0][:6]
    index = _indices(model, chosen_paths={v.path for v in model.layers[-1].trainable_variables})
    jacobians = naive_jacobians(model, x)[:, :, index]
    expected = la.posterior.functional_variance(jacobians)
    f_mean, f_var = la.glm_output_distribution(x)
    assert la._fitted_view.features.direct  # known once traced: the outputs are the layer's own
    np.testing.assert_allclose(f_var, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f_mean, model(x), rtol=1e-12)


@pytest.mark.parametrize(("structure", "after"), [("kron", "rescaling"), ("diag", "activation"), ("full", "rescaling")])
def test_last_layer_predictive_when_the_outputs_are_not_the_layers_own(classification_data, structure, after):
    """$J = a^T \\otimes I$ holds only when the outputs are the Dense layer's own: a rescaling after
    it, or an activation on it, used to be ignored (variances off by the factor's square). Now the
    predictive sees that while tracing and takes the other exact path: naive Jacobians agree (and
    the full fit likewise does not take its closed form)."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((4,), dtype="float64")
    hidden = keras.layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    head = keras.layers.Dense(N_CLASSES, activation=None if after == "rescaling" else "tanh", dtype="float64")
    outputs = head(hidden)
    if after == "rescaling":
        outputs = keras.layers.Rescaling(2.0, dtype="float64")(outputs)
    model = keras.Model(inputs, outputs)
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure=structure)
    la.fit(classification_data, verbose=False)
    x = classification_data[0][:6]
    index = _indices(model, chosen_paths={v.path for v in head.weights})
    expected = la.posterior.functional_variance(naive_jacobians(model, x)[:, :, index])
    np.testing.assert_allclose(la.glm_output_distribution(x, verbose=False)[1], expected, rtol=1e-9, atol=1e-12)
    assert la._fitted_view.features.direct is False
    if structure == "full":  # nor does the fit take the output layer's closed form: the curvature is the GGN
        jacobians = naive_jacobians(model, classification_data[0])[:, :, index]
        hessians = output_hessians_np(np.asarray(model(classification_data[0])), "classification")
        ggn = np.einsum("nkp,nkl,nlq->pq", jacobians, hessians, jacobians)
        np.testing.assert_allclose(la.curvature, ggn, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_last_layer_kron_factors_from_the_features(model, classification_data, regression_data, likelihood):
    """A Dense output layer's K-FAC factors in closed form: A from its inputs, G = sum_n Lambda_n
    (no backward pass), against NumPy on the features read off the Keras model."""
    import keras

    data = classification_data if likelihood == "classification" else regression_data
    if likelihood == "regression":  # 3 inputs, 2 outputs
        model = make_mlp(3, 2, hidden=(5, 4))
    la = lt.Laplace(model, likelihood, subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(data, batch_size=8, verbose=False)  # batches of 8, 8 and fewer: the sums add up
    features = keras.Model(model.inputs[0], model.layers[-2].output)(data[0]).numpy()
    hessians = output_hessians_np(np.asarray(model(data[0])), likelihood)
    kernel, bias = la.curvature.blocks
    np.testing.assert_allclose(kernel.input_factor, features.T @ features / len(features), rtol=1e-10)
    np.testing.assert_allclose(kernel.output_factor, hessians.sum(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bias.input_factor, [[1.0]])
    np.testing.assert_allclose(bias.output_factor, hessians.sum(axis=0), rtol=1e-10, atol=1e-12)
    assert la._estimator.treatment[model.layers[-1].kernel.path] == "kron (dense)"


def test_last_layer_fits_when_the_outputs_are_not_the_layers_own(classification_data):
    """A rescaling after the output layer: the features' closed forms do not apply (f = 2 z), and
    the fit takes the probes instead: G = sum_n 4 Lambda_n(f), the diagonal likewise scaled."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,), dtype="float64")
    hidden = keras.layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    head = keras.layers.Dense(N_CLASSES, dtype="float64")
    model = keras.Model(inputs, keras.layers.Rescaling(2.0, dtype="float64")(head(hidden)))
    x, y = classification_data
    features = keras.Model(inputs, hidden)(x).numpy()
    hessians = 4 * output_hessians_np(np.asarray(model(x)), "classification")
    kron = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    kernel = kron.fit((x, y), verbose=False).curvature.blocks[0]
    np.testing.assert_allclose(kernel.input_factor, features.T @ features / len(x), rtol=1e-10)
    np.testing.assert_allclose(kernel.output_factor, hessians.sum(axis=0), rtol=1e-10, atol=1e-12)
    diag = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="diag")
    a = np.concatenate([features, np.ones((len(x), 1))], axis=1)
    expected = np.einsum("ni,nk->ik", a**2, np.diagonal(hessians, axis1=1, axis2=2)).ravel()
    np.testing.assert_allclose(diag.fit((x, y), verbose=False).curvature, expected, rtol=1e-10, atol=1e-12)


def test_last_layer_full_predictive_by_the_covariance_factor(model, classification_data):
    """The full last-layer GLM predictive: a triangular solve for few examples, the kept factor
    S = L^-T (S S^T = Sigma) for many (and later), both equal to J Sigma J^T with a NumPy inverse."""
    x, y = classification_data
    la = lt.Laplace(
        model, "classification", subset_of_weights="last_layer", prior_precision=0.5, hessian_structure="full"
    )
    la.fit((x, y), verbose=False)
    index = _indices(model, chosen_paths={v.path for v in model.layers[-1].trainable_variables})
    covariance = np.linalg.inv(la.posterior.precision.numpy())

    def expected(points):
        jacobians = naive_jacobians(model, points)[:, :, index]
        return np.einsum("nkp,pq,nlq->nkl", jacobians, covariance, jacobians)

    np.testing.assert_allclose(la.glm_output_distribution(x[:2], verbose=False)[1], expected(x[:2]), rtol=1e-9)
    assert not la.posterior.has_covariance_factor  # N K < P: solved
    np.testing.assert_allclose(la.glm_output_distribution(x, verbose=False)[1], expected(x), rtol=1e-9)
    assert la.posterior.has_covariance_factor  # kept
    np.testing.assert_allclose(la.glm_output_distribution(x[:1], verbose=False)[1], expected(x[:1]), rtol=1e-9)
    la.prior_precision = 2.0  # a new posterior: a new factor
    covariance = np.linalg.inv(la.posterior.precision.numpy())
    np.testing.assert_allclose(la.glm_output_distribution(x, verbose=False)[1], expected(x), rtol=1e-9)


def test_last_layer_draws_by_the_features_equal_the_network_at_them(model, classification_data):
    """A last layer whose outputs are the model's: the outputs at posterior draws, network and
    linearised alike, come from the features (one pass of the network for every draw); both equal
    the Keras model run with each draw's weights set into its output layer."""
    x, y = classification_data
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit((x, y), verbose=False)
    draws = la.sample(3, seed=0).numpy()
    head, kept = model.layers[-1], [w.numpy() for w in model.layers[-1].weights]
    expected = []
    for draw in draws:
        head.set_weights([draw[: kept[0].size].reshape(kept[0].shape), draw[kept[0].size :]])
        expected.append(model(x).numpy())
    head.set_weights(kept)
    for pred_type in ("nn", "glm"):
        outputs = la.outputs_at_draws(draws, x, pred_type=pred_type, verbose=False)
        np.testing.assert_allclose(outputs, np.stack(expected), rtol=1e-10, atol=1e-12)


def test_last_layer_kron_handles_many_classes_without_network_jacobians():
    import keras

    keras.utils.set_random_seed(0)
    classes = 2000
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(classes)]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, classes, size=64)
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit((x, y), verbose=False)
    probs = la.predict(x[:32]).numpy()
    assert probs.shape == (32, classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the linearised variance of one logit by hand: a^T Sigma_W a over the kernel + bias block
    posterior = la.posterior
    block, values = posterior.blocks[0], posterior.eigenvalues[0].numpy()
    features = model.layers[0](x[:1]).numpy()[0]
    rotated = features @ block.input_vectors.numpy()
    q = block.output_vectors.numpy()
    kernel_var = (q**2) @ ((rotated**2) @ (1 / values))
    bias_var = (q**2) @ (1 / posterior.eigenvalues[1].numpy()[0])
    f_var = np.diagonal(la.glm_output_distribution(x[:1])[1].numpy()[0])
    np.testing.assert_allclose(f_var, kernel_var + bias_var, rtol=1e-4)
