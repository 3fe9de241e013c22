"""Uncertainty reports, calibration metrics and plots, ArviZ data, PSIS diagnostics and log
densities, for a fitted [`Laplace`][laplace_tf.Laplace] or [`LaplaceResult`][laplace_tf.LaplaceResult]."""
