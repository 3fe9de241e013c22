r"""How many multiplies one example's forward pass costs, estimated from the model's layers.

A layer whose kernel $W$ is applied at several positions of each example (the patches of a
convolution, the steps of a sequence under a ``Dense`` or an attention projection) multiplies
$\lvert W \rvert$ numbers at each of them:

$$
F \approx \sum_{\text{layers}} \lvert W \rvert \cdot \text{positions},
$$

with the positions read from the output shape the layer was built for (the axes between the
batch's and the kernel's output axes; an axis of unknown extent counts once). Only the layers with
a K-FAC rule (`kfac_layers.find_rules`: ``Dense``, ``EinsumDense``, convolutions) are counted;
an ``Embedding`` looks its rows up without multiplying. So $F / P$ says how much each weight is
reused: about 1 for an MLP, tens for a convolutional network.

Example:
    ```python
    >>> forward_multiplies(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)]))
    1296                                    # (3 * 3 * 1 * 4) weights at 6 * 6 positions
    ```
"""

from __future__ import annotations

import keras
import numpy as np

from laplace_tf.networks.curvature.kfac_layers import LayerRule, find_rules


def forward_multiplies(model: keras.Model) -> int:
    """The estimated multiplies of one example's forward pass through ``model``'s kernels."""
    paths = {variable.path for variable in model.trainable_variables}
    rules = [rule for rule in find_rules(model, paths) if rule.kind != "embedding"]
    return sum(int(np.prod(rule.kernel.shape)) * _positions(rule) for rule in rules)


def _positions(rule: LayerRule) -> int:
    """At how many positions of an example the rule's layer applies its kernel (1 if unknown)."""
    shape = _output_shape(rule.layer)
    if shape is None:
        return 1
    kernel_output_axes = len(rule.kernel.shape) - rule.input_axes
    return int(np.prod([extent or 1 for extent in shape[1 : len(shape) - kernel_output_axes]]))


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    """The layer's output shape: from its first call in a functional graph, else from the input
    shape it was built for; ``None`` if neither tells."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        pass
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    input_shape = shapes.get("input_shape", next(iter(shapes.values()), None))
    if input_shape is None or isinstance(input_shape, dict):
        return None
    try:
        return tuple(layer.compute_output_shape(input_shape))
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None
