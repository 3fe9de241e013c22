"""Sizes of the benchmark's non-MLP networks, shared by the torch and Keras builders (no imports)."""

VOCABULARY, EMBEDDING, HIDDEN, HEADS, CLASSES = 50, 32, 32, 4, 4
SEQUENCE_LENGTH = 16
LAYER_NORM_EPSILON = 1e-3  # Keras's default, so both sides normalise alike
