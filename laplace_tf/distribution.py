"""Running per-example work under a ``tf.distribute`` strategy: shard examples, sum or concatenate.

Curvature, loss and the GGN products of ``lowrank`` are sums over examples, so each replica
takes a contiguous shard of every batch and the replicas' results are added with an all-reduce
(``strategy.reduce(SUM)``): MirroredStrategy across a machine's devices, MultiWorkerMirroredStrategy
across processes and machines. Predictions are per example, so the replicas' shards are gathered
back in order (``strategy.gather``). Every worker passes the same batches; each computes only its
replicas' shards.

Example:
    ```python
    >>> strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    >>> with strategy.scope():
    ...     la.fit((x, y))               # the same curvature as on one device
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf


def current_strategy(strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy | None:
    """``strategy``, else the one whose scope is active; ``None`` when there is nothing to distribute."""
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return None
    return strategy


def summed_over_replicas(strategy: tf.distribute.Strategy, fn: Callable, sharded: Sequence[int]) -> Callable:
    """``fn`` with its arguments at positions ``sharded`` split by examples across replicas, results summed.

    ``fn`` must return a structure of tensors that are sums over its examples.
    """

    def run(*args: Any) -> Any:
        results = strategy.run(fn, args=_distributed_args(strategy, args, sharded))
        return tf.nest.map_structure(
            lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None), results
        )

    return run


def concatenated_over_replicas(strategy: tf.distribute.Strategy, fn: Callable, sharded: Sequence[int]) -> Callable:
    """``fn`` on shards of the examples at positions ``sharded``, outputs concatenated back in order.

    ``fn`` must return a structure of tensors whose first axis runs over its examples.
    """

    def run(*args: Any) -> Any:
        results = strategy.run(fn, args=_distributed_args(strategy, args, sharded))
        return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), results)

    return run


def _distributed_args(strategy: tf.distribute.Strategy, args: Sequence[Any], sharded: Sequence[int]) -> tuple:
    return tuple(
        strategy.experimental_distribute_values_from_function(_shard_of(arg)) if index in sharded else arg
        for index, arg in enumerate(args)
    )


def _shard_of(tensors: Any) -> Callable:
    """The contiguous shard of the examples of ``tensors`` (a tensor or a structure of them) for a
    replica: ``ceil(B / n)`` examples (fewer at the end)."""

    def shard(context: tf.distribute.experimental.ValueContext) -> Any:
        replicas = context.num_replicas_in_sync
        n = int(tf.nest.flatten(tensors)[0].shape[0])
        size = -(-n // replicas)
        start = min(context.replica_id_in_sync_group * size, n)
        return tf.nest.map_structure(lambda tensor: tensor[start : start + size], tensors)

    return shard
