"""Weights averaged after training, and BatchNorm statistics recomputed for the weights a model
predicts with.

- `average_checkpoints`: the mean of the saved weights of several checkpoints of one run, the
  stochastic weight averaging of Izmailov et al. 2018 ("Averaging Weights Leads to Wider Optima
  and Better Generalization") taken over checkpoints; for a run with a moving average of its
  weights (train.ema_decay) each checkpoint contributes that average, unless `weights` says
  'trained'.
- `population_batch_stats`: the BatchNorm statistics of given weights over a set of inputs,
  computed with those weights after training ("precise BN", Wu & Johnson 2021, "Rethinking
  'Batch' in BatchNorm", section 3; the BN update SWA needs) instead of the running averages
  kept during training, which mix statistics of earlier weights, of training crops and of
  dropout. Each batch is normalised by its own statistics, as in training; the population mean
  is the example-weighted mean of the batch means and the population variance
  E_batches[var_b + mean_b^2] - mean^2 (biased, as flax's BatchNorm keeps it).
"""
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError
from research.training import checkpointing


def average_checkpoints(workdir: str, steps, weights: str | None = None) -> dict:
  """{'params', 'batch_stats'}: float means over the checkpoints of `workdir` at `steps` of
  their saved weights as `checkpointing.restore_step` gives them (`weights`: None / 'average' /
  'trained'). Raises CheckpointError for a missing checkpoint, ConfigError for no steps."""
  steps = list(steps)
  if not steps:
    raise ConfigError(f'no checkpoint steps of {workdir} to average')
  total, count = None, 0
  for step in steps:  # one state in memory at a time, beside the running sum
    state = checkpointing.restore_step(workdir, step, weights)[1]
    tree = {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}}
    tree = jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
    total = tree if total is None else jax.tree.map(np.add, total, tree)
    count += 1
  return jax.tree.map(lambda a: (a / count).astype(np.float32), total)


def _combine(moments: list, counts: list):
  """Per BatchNorm layer ({'mean', 'var'} leaves), the population statistics of batches."""
  if isinstance(moments[0], dict) and set(moments[0]) == {'mean', 'var'}:
    w = np.asarray(counts, np.float64) / np.sum(counts)
    means = np.stack([np.asarray(m['mean'], np.float64) for m in moments])
    variances = np.stack([np.asarray(m['var'], np.float64) for m in moments])
    mean = np.tensordot(w, means, 1)
    var = np.tensordot(w, variances + means ** 2, 1) - mean ** 2
    return {'mean': mean.astype(np.float32), 'var': np.maximum(var, 0.0).astype(np.float32)}
  if isinstance(moments[0], dict):
    return {k: _combine([m[k] for m in moments], counts) for k in moments[0]}
  raise ValueError('batch_stats must hold {mean, var} pairs, as flax BatchNorm layers do')


def population_batch_stats(apply_train, params, batch_stats, batches) -> dict:
  """BatchNorm statistics of `params` over `batches` (the module doc).

  `apply_train(variables, x) -> (outputs, {'batch_stats': updated})` is the model in training
  mode with its batch statistics mutable and without dropout or other randomness (it is
  jitted here, once per call);
  each layer updates its running statistic as flax's BatchNorm does, new = m old + (1 - m)
  batch, 0 <= m < 1. `batches`: float arrays (B, ...) the model takes. Returns float32 trees
  shaped like `batch_stats` ({} when the model has none). ConfigError for no batches."""
  if not batch_stats:
    return {}
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  ones = jax.tree.map(jnp.ones_like, batch_stats)

  @jax.jit
  def moments(x):
    # The running statistics do not enter the outputs in training mode, and the update is
    # affine in them: at old = 0 it gives (1 - m) batch, and its derivative is m.
    update = lambda old: apply_train({'params': params, 'batch_stats': old}, x)[1]['batch_stats']
    scaled, momentum = jax.jvp(update, (zeros,), (ones,))
    return jax.tree.map(lambda s, m: s / (1.0 - m), scaled, momentum)

  per_batch, counts = [], []
  for x in batches:
    per_batch.append(jax.device_get(moments(jnp.asarray(x))))
    counts.append(len(x))
  if not per_batch:
    raise ConfigError('no batches to compute BatchNorm statistics on')
  return _combine(per_batch, counts)
