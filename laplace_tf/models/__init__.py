"""Laplace for probabilistic models written with TensorFlow Probability: [`fit_laplace`][laplace_tf.fit_laplace]
and [`laplace_approximation`][laplace_tf.laplace_approximation] (`models.approximation`), the
[`LaplaceResult`][laplace_tf.LaplaceResult] they return, mode finding and the flat state."""
