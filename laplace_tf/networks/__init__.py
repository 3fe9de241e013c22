"""Laplace for Keras models: parameters, data, likelihoods, curvature, posteriors, predictives,
the evidence and its tuning, training with the evidence, subnetworks, saving and loading.

The user-facing class is [`Laplace`][laplace_tf.Laplace] (`networks.laplace`, with its evidence,
predictive and report halves beside it). Nothing here imports `laplace_tf.reports` or
`laplace_tf.cli` when it loads; the report half and the grid search's calibration metrics reach
the reports when they are called.
"""
