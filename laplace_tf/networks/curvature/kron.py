r"""Kronecker-factored (K-FAC) curvature, one block per selected variable.

A supported layer's kernel gets $A \otimes G$ and its bias $G$ (see
`curvature.kfac_layers`; a recurrent layer's kernels get one block each,
`curvature.recurrent_layers`); any other selected variable gets the exact diagonal of
its GGN. Per batch the factors' sums are returned; `finalize` turns the sums over the
data set into blocks, so batches can be summed in any grouping.

The columns $v_{nc}$ whose backward passes give $G$ are, by curvature type:

* ``ggn``: a square root of the output Hessian, $\Lambda_n = V_n V_n^\top$ (``K`` columns),
  so $G$ is exact;
* ``ggn`` with ``mc_samples=M``: Monte-Carlo Fisher, $v = \nabla_f \ell(f, \tilde y) /
  \sqrt{M}$ with $\tilde y$ drawn from the model's predictive (``M`` columns);
* ``ef``: the empirical Fisher, $v = \nabla_f \ell(f, y)$ at the observed targets.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="kron").fit((x, y))
    >>> la.curvature.blocks[0]          # the first Dense kernel: KronBlock(A (d_in, d_in), G (d_out, d_out))
    ```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from laplace_tf.networks.curvature.diag_probes import diagonal_rules, probed_pieces, with_jacobian_pieces
from laplace_tf.networks.curvature.kfac_layers import LayerRule, covered_paths, find_rules, uncovered_size
from laplace_tf.networks.curvature.probe_passes import ProbeRun, probe_column_count, probe_columns, run_probes
from laplace_tf.networks.curvature.probe_squares import rows_grouped_by_example
from laplace_tf.networks.curvature.recurrent_layers import RecurrentRule
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters
from laplace_tf.options import CurvatureType


@dataclass
class KronBlock:
    """$A \\otimes G$; ``input_factor`` is a vector when $A$ is diagonal (Embedding)."""

    input_factor: tf.Tensor
    output_factor: tf.Tensor


@dataclass
class DiagBlock:
    """A diagonal curvature block for a variable without a Kronecker rule."""

    diagonal: tf.Tensor


@dataclass
class KronCurvature:
    """Blocks in the order of the selected variables, and which layers got which treatment."""

    blocks: list[KronBlock | DiagBlock]
    treatment: dict[str, str]


class KronPlan:
    """Which selected variables get Kronecker blocks, and the compiled per-batch computation."""

    def __init__(
        self,
        params: ModelParameters,
        likelihood: Likelihood,
        curvature_type: CurvatureType,
        mc_samples: int | None,
        reduce: bool = False,
    ):
        if curvature_type == CurvatureType.HESSIAN:
            raise ValueError("hessian_structure='kron' works with curvature='ggn' or 'ef', not 'hessian'.")
        full_sizes = [int(np.prod(shape)) for shape in params.shapes]
        if params.sizes != full_sizes:
            raise ValueError("hessian_structure='kron' needs whole variables: select them by pattern, not by masks.")
        self.params, self.likelihood = params, likelihood
        self.curvature_type, self.mc_samples, self.reduce = curvature_type, mc_samples, reduce
        self.rules = find_rules(params.model, set(params.names))
        others = diagonal_rules(params.model, set(params.names))
        self.recurrent_rules = [r for r in others if isinstance(r, RecurrentRule) and r.factored]
        self.diagonal_rules = [r for r in others if r not in self.recurrent_rules]
        kron_paths = covered_paths(self.rules + self.recurrent_rules)
        self.diagonal_paths = [n for n in params.names if n not in kron_paths]
        self.jacobian_params = uncovered_size(params, self._probed_rules)  # per-example Jacobians

    @property
    def _probed_rules(self) -> list:
        """Every rule, in the order the probes' gradients come: Kronecker, recurrent, diagonal."""
        return self.rules + self.recurrent_rules + self.diagonal_rules

    def elements(self) -> int:
        """The curvature's size in numbers: every factor, and the diagonal blocks."""
        factors = sum(r.input_dim * (1 if r.kind == "embedding" else r.input_dim) + r.output_dim**2 for r in self.rules)
        factors += sum(a * a + g * g for r in self.recurrent_rules for a, g in r.factor_shapes())
        sizes = zip(self.params.names, self.params.sizes, strict=True)
        return factors + sum(size for name, size in sizes if name in self.diagonal_paths)

    def treatment(self) -> dict[str, str]:
        """Variable path -> ``"kron (dense)"`` etc., or ``"diag"``."""
        kinds = {r.kernel.path: f"kron ({r.kind})" for r in self.rules}
        kinds.update({r.bias.path: f"kron ({r.kind} bias)" for r in self.rules if r.bias is not None})
        for rule in self.recurrent_rules:
            kinds.update({v.path: "kron (recurrent)" for v in rule.kernels if v is not None})
            kinds.update({rule.bias.path: "kron (recurrent bias)"} if rule.bias is not None else {})
        return {n: kinds.get(n, "diag") for n in self.params.names}

    def batch(self, theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, dict]:
        """The summed loss and the factors' sums over one batch."""
        f, sums = run_probes(
            self.params,
            self._probed_rules,
            theta,
            x,
            lambda f: self._columns(f, y, seed),
            self._sums,
            self._column_count,
        )
        pieces = with_jacobian_pieces(self, self.diagonal_paths, sums.pop("diag"), x, y)
        sums["diag"] = tf.concat([pieces[n] for n in self.diagonal_paths] or [tf.zeros([0], theta.dtype)], 0)
        return tf.reduce_sum(self.likelihood.loss(f, y)), sums

    def _sums(self, run: ProbeRun) -> dict:
        """The factors' sums from one run of the probes (several chunks of columns add up: the input
        moments and their positions then count every input once per chunk, which their ratio undoes)."""
        kron_gradients = run.gradients[: len(self.rules)]
        recurrent_end = len(self.rules) + len(self.recurrent_rules)
        recurrent_gradients = run.gradients[len(self.rules) : recurrent_end]
        moments = [self._moments(rule, g, run) for rule, g in zip(self.rules, kron_gradients, strict=True)]
        diagonal_run = dataclasses.replace(run, gradients=run.gradients[recurrent_end:])
        sums = {
            "input": [m[0] for m in moments],
            "positions": [m[1] for m in moments],
            "output": [m[2] for m in moments],
            "diag": probed_pieces(self.diagonal_rules, diagonal_run, self.params.dtype),
        }
        if self.recurrent_rules:  # a key of its own: the sums of models without recurrent layers keep their layout
            sums["recurrent"] = [
                entry
                for rule, g in zip(self.recurrent_rules, recurrent_gradients, strict=True)
                for entry in rule.kronecker_sums(g, self.params.dtype, self.reduce)
            ]
        return sums

    def _moments(self, rule: LayerRule, gradients: list[tf.Tensor], run: ProbeRun) -> tuple:
        """A layer's ``(sum a a^T, count, sum g g^T)`` over one run: its positions' (the "expand"
        convention), or, with ``reduce``, its examples' (each example's mean input over its
        positions, its gradients summed; an Embedding keeps expand's diagonal $A$)."""
        if (
            self.reduce
            and rule.kind != "embedding"
            and rule.probes
            and rows_grouped_by_example(rule, run.static_examples)
        ):
            return rule.reduced_moments(gradients, run.examples)
        return (*rule.input_moment(), rule.output_moment(gradients))

    def finalize(self, sums: dict) -> KronCurvature:
        """Blocks from the factors' sums over the data set."""
        blocks: dict[str, KronBlock | DiagBlock] = self._recurrent_blocks(sums)
        for rule, a_sum, positions, g_sum in zip(
            self.rules, sums["input"], sums["positions"], sums["output"], strict=True
        ):
            blocks[rule.kernel.path] = KronBlock(tf.math.divide_no_nan(a_sum, positions), g_sum)  # 0/0: not called
            if rule.bias is not None:
                blocks[rule.bias.path] = KronBlock(tf.ones([1, 1], g_sum.dtype), g_sum)
        if self.diagonal_paths:
            sizes = dict(zip(self.params.names, self.params.sizes, strict=True))
            pieces = tf.split(sums["diag"], [sizes[n] for n in self.diagonal_paths])
            for path, piece in zip(self.diagonal_paths, pieces, strict=True):
                blocks[path] = DiagBlock(piece)
        return KronCurvature([blocks[n] for n in self.params.names], self.treatment())

    def _recurrent_blocks(self, sums: dict) -> dict[str, KronBlock]:
        """The recurrent layers' blocks, $A$ averaged over the steps that ran."""
        paths = [path for rule in self.recurrent_rules for path in rule.covered]
        entries = sums.get("recurrent", [])
        if len(entries) != len(paths):
            raise ValueError(
                f"These curvature sums hold {len(entries)} recurrent Kronecker blocks where this model's kron "
                f"curvature has {len(paths)} (saved by an older laplace-tf, which gave recurrent "
                "kernels diagonal blocks?); fit the Laplace again."
            )
        return {path: KronBlock(tf.math.divide_no_nan(a, n), g) for path, (a, n, g) in zip(paths, entries, strict=True)}

    def _column_count(self, n_outputs: int) -> int:
        """How many columns `_columns` gives for ``n_outputs`` outputs."""
        if self.mc_samples is None or self.curvature_type == CurvatureType.EF:
            return probe_column_count(self.likelihood, self.curvature_type, n_outputs)
        return self.mc_samples

    def _columns(self, f: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The ``(B, K, C)`` vectors $v_{nc}$ to backpropagate."""
        if self.mc_samples is None or self.curvature_type == CurvatureType.EF:
            return probe_columns(self.likelihood, self.curvature_type, f, y)
        draws = [
            self.likelihood.sampled_loss_gradient(f, tf.random.experimental.stateless_fold_in(seed, m))
            for m in range(self.mc_samples)
        ]
        return tf.stack(draws, axis=-1) / np.sqrt(self.mc_samples)
