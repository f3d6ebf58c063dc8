"""Magnitude pruning as an optax transformation whose masks live in the optimizer state.

`wrap(optimizer, config)` is `optimizer` with pruning around it. Its state holds the masks and
its own step count, so checkpoints and exact resume need nothing new: the masks are saved
and restored with the rest of `opt_state`. Each step it

  1. zeroes the gradients of pruned weights (so momentum, Adam's moments, weight decay and
     gradient clipping by the global norm see only the weights still alive),
  2. runs `optimizer`,
  3. on a mask-update step, recomputes the masks from the current weights (`params`),
  4. returns `updates` for the weights kept and `-params` for the pruned ones, so that
     `optax.apply_updates` gives exactly 0.0 for every pruned weight (p + (-p) == 0 in IEEE
     arithmetic) whatever the optimizer proposed.

Which weights: the parameters whose '/'-joined path (e.g. 'conv1/kernel',
'stage1_block1/Conv_0/kernel') matches `include` and not `exclude`. The default prunes every
convolution and dense kernel except the classifier ('logits/...', which every zoo model names
so): the head is small and its weights are the most sensitive to pruning (Han et al. 2015
prune it far less than the rest); biases and BatchNorm parameters are never pruned by default
(they are few, and a zero BN scale is not a pruned connection).

When (Zhu & Gupta 2017, "To prune, or not to prune"): masks are recomputed at steps
t = t0 + k dt for k = 0 .. n (t0 `begin_step`, dt `update_every`, n `num_updates`) with target
sparsity

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3

(s_i `initial_sparsity`, s_f `sparsity`); before t0 nothing is pruned, after t0 + n dt the
masks stay fixed. `num_updates=0` is one-shot pruning to s_f at step t0.

How many and which: with target s, a layer (`scope='per_layer'`) or all prunable weights
together (`scope='global'`) of n weights lose exactly round(s n) of them: those with the
smallest |w|. Ties are broken by position: weights already pruned go first, then among equal
magnitudes the one earlier in row-major order (and, globally, in the parameter tree's leaf
order) is pruned first. Pruned weights are exactly zero, so they also rank first at the next
update: masks only ever grow. `structure='channel'` prunes whole output channels (conv
filters, the last kernel axis; dense output units) ranked by the L1 norm of their weights
(Li et al. 2017, "Pruning Filters for Efficient ConvNets"), round(s C) of the C channels of
each layer; filters are not comparable across layers, so it is per-layer only. A zeroed
filter of a conv followed by BatchNorm still outputs the BN offset: removing the channel from
the network is left to deployment.

The updates returned must be applied as they are: anything that scales updates (the shared
loop's reduce-on-plateau factor) belongs inside `optimizer`, and extra arguments of `update`
(`lr_scale`) are passed on to it.
"""
import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.errors import ConfigError

DEFAULT_INCLUDE = r'(^|/)kernel$'
DEFAULT_EXCLUDE = r'(^|/)logits/'
SCOPES = ('global', 'per_layer')
STRUCTURES = ('unstructured', 'channel')


def path_of(key_path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in key_path)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
  """What to prune, how much and when (see the module doc). Raises ConfigError when invalid."""
  sparsity: float                   # s_f: the final fraction of prunable weights set to zero
  scope: str = 'global'             # 'global' | 'per_layer'
  structure: str = 'unstructured'   # 'unstructured' | 'channel' (L1 norm of output channels)
  begin_step: int = 0               # t0: the first mask update (the optimizer's own step count)
  num_updates: int = 0              # n: 0 = one-shot at begin_step; else gradual
  update_every: int = 100           # dt: steps between mask updates
  initial_sparsity: float = 0.0     # s_i: the target at the first update of a gradual schedule
  include: str = DEFAULT_INCLUDE    # regex on parameter paths: prunable
  exclude: str = DEFAULT_EXCLUDE    # regex on parameter paths: never pruned ('' = none)

  def __post_init__(self):
    for name in ('sparsity', 'initial_sparsity'):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f'pruning {name}={value!r} must be in [0, 1) (a fraction of the '
                          'prunable weights set to zero)')
    if self.initial_sparsity > self.sparsity:
      raise ConfigError(f'pruning initial_sparsity={self.initial_sparsity} exceeds the final '
                        f'sparsity={self.sparsity}; the schedule only prunes more over time')
    if self.scope not in SCOPES:
      raise ConfigError(f'pruning scope {self.scope!r}; expected one of {", ".join(SCOPES)}')
    if self.structure not in STRUCTURES:
      raise ConfigError(f'pruning structure {self.structure!r}; expected one of '
                        f'{", ".join(STRUCTURES)}')
    if self.structure == 'channel' and self.scope == 'global':
      raise ConfigError("pruning structure='channel' ranks filters within each layer; set "
                        "scope='per_layer'")
    if self.begin_step < 0 or self.num_updates < 0 or self.update_every < 1:
      raise ConfigError(f'pruning begin_step={self.begin_step}, num_updates={self.num_updates} '
                        f'must be >= 0 and update_every={self.update_every} >= 1')
    for name in ('include', 'exclude'):
      try:
        re.compile(getattr(self, name))
      except re.error as e:
        raise ConfigError(f'pruning {name}={getattr(self, name)!r} is not a regex ({e})') from None

  @property
  def end_step(self) -> int:
    """t0 + n dt: the last mask update."""
    return self.begin_step + self.num_updates * self.update_every


def prunable(params, config: PruningConfig):
  """A tree like `params` of Python bools: which leaves are pruned. Raises ConfigError when
  none is (the regexes match no kernel)."""
  include, exclude = re.compile(config.include), re.compile(config.exclude) if config.exclude else None

  def choose(key_path, leaf):
    path = path_of(key_path)
    return (jnp.ndim(leaf) >= 2 and bool(include.search(path))
            and not (exclude is not None and exclude.search(path)))
  chosen = jax.tree_util.tree_map_with_path(choose, params)
  if not any(jax.tree.leaves(chosen)):
    raise ConfigError(f'pruning include={config.include!r} exclude={config.exclude!r} select no '
                      'parameter of at least 2 dimensions; parameters are named like '
                      + ', '.join(path_of(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)[:3]))
  return chosen


def target_sparsity(config: PruningConfig, step):
  """s_t of the schedule at `step` (float32; 0 before begin_step, s_f after the last update)."""
  step = jnp.asarray(step, jnp.float32)
  if config.num_updates == 0:
    return jnp.where(step >= config.begin_step, jnp.float32(config.sparsity), 0.0)
  span = config.num_updates * config.update_every
  progress = jnp.clip((step - config.begin_step) / span, 0.0, 1.0)
  value = config.sparsity + (config.initial_sparsity - config.sparsity) * (1.0 - progress) ** 3
  return jnp.where(step >= config.begin_step, value, 0.0).astype(jnp.float32)


def is_update_step(config: PruningConfig, step):
  """Whether the masks are recomputed at `step` (t0 + k dt, k = 0 .. n)."""
  step = jnp.asarray(step, jnp.int32)
  offset = step - config.begin_step
  return (offset >= 0) & (step <= config.end_step) & (offset % config.update_every == 0)


def _keep_largest(scores, pruned_before, sparsity):
  """Bool mask over flat `scores` keeping all but the round(sparsity n) lowest; entries pruned
  before rank lowest, ties go to the earlier index (a stable sort)."""
  scores = jnp.where(pruned_before, -1.0, scores)
  num_pruned = jnp.round(sparsity * scores.size).astype(jnp.int32)
  order = jnp.argsort(scores, stable=True)
  rank = jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))
  return rank >= num_pruned


def _channel_scores(kernel):
  """L1 norm of each output channel (the last axis)."""
  return jnp.sum(jnp.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)


def compute_masks(params, config: PruningConfig, sparsity, previous=None, chosen=None):
  """Masks (bool arrays for prunable leaves, a scalar True elsewhere) pruning `sparsity` of the
  prunable weights of `params` as `config` says; `previous` masks rank first for pruning."""
  chosen = prunable(params, config) if chosen is None else chosen
  leaves, treedef = jax.tree.flatten(params)
  flags = treedef.flatten_up_to(chosen)
  before = (treedef.flatten_up_to(previous) if previous is not None
            else [jnp.ones(jnp.shape(p), bool) for p in leaves])
  masks = [jnp.ones((), bool)] * len(leaves)
  picked = [i for i, flag in enumerate(flags) if flag]
  if config.structure == 'channel':
    for i in picked:
      kernel, keep_before = leaves[i], jnp.broadcast_to(before[i], leaves[i].shape)
      channel_pruned = ~jnp.all(keep_before.reshape(-1, kernel.shape[-1]), axis=0)
      keep = _keep_largest(_channel_scores(kernel), channel_pruned, sparsity)
      masks[i] = jnp.broadcast_to(keep, kernel.shape)
  elif config.scope == 'per_layer':
    for i in picked:
      pruned_before = ~jnp.broadcast_to(before[i], leaves[i].shape).ravel()
      masks[i] = _keep_largest(jnp.abs(leaves[i]).ravel().astype(jnp.float32), pruned_before,
                               sparsity).reshape(leaves[i].shape)
  else:
    scores = jnp.concatenate([jnp.abs(leaves[i]).ravel().astype(jnp.float32) for i in picked])
    pruned_before = jnp.concatenate(
        [~jnp.broadcast_to(before[i], leaves[i].shape).ravel() for i in picked])
    keep = _keep_largest(scores, pruned_before, sparsity)
    start = 0
    for i in picked:
      size = leaves[i].size
      masks[i] = keep[start:start + size].reshape(leaves[i].shape)
      start += size
  return treedef.unflatten(masks)


def apply_masks(params, masks):
  """params with the pruned weights set to exactly zero."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks)


def prune_params(params, config: PruningConfig):
  """One-shot pruning of trained weights to `config.sparsity` (no training): (params, masks)."""
  masks = compute_masks(params, config, jnp.float32(config.sparsity))
  return apply_masks(params, masks), masks


class PruningState(NamedTuple):
  count: jax.Array       # int32: optimizer steps taken (the schedule's t)
  masks: Any             # like params: bool masks of prunable leaves, scalar True elsewhere
  inner_state: Any       # the wrapped optimizer's state


def wrap(optimizer: optax.GradientTransformation,
         config: PruningConfig) -> optax.GradientTransformation:
  """`optimizer` with magnitude pruning around it (see the module doc); `update` needs params."""

  def init(params):
    chosen = prunable(params, config)
    masks = jax.tree.map(lambda p, c: jnp.ones(jnp.shape(p) if c else (), bool), params, chosen)
    return PruningState(count=jnp.zeros((), jnp.int32), masks=masks,
                        inner_state=optimizer.init(params))

  inner = optax.with_extra_args_support(optimizer)

  def update(grads, state, params=None, **extra_args):
    if params is None:
      raise ValueError('pruning.wrap needs the parameters: optimizer.update(grads, state, params)')
    chosen = prunable(params, config)
    grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros((), g.dtype)), grads, state.masks)
    updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
    masks = jax.lax.cond(
        is_update_step(config, state.count),
        lambda: compute_masks(params, config, target_sparsity(config, state.count),
                              state.masks, chosen),
        lambda: state.masks)
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype), updates, params,
                           masks)
    return updates, PruningState(count=state.count + 1, masks=masks, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init, update)


def masks_of(opt_state):
  """The masks held by the first PruningState in an optimizer state (None if there is none)."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, PruningState))
           if isinstance(s, PruningState)]
  return found[0].masks if found else None


def sparsity_report(params, config: PruningConfig | None = None) -> dict:
  """Exact zeros among the weights: {'layers': {path: {'size', 'zeros', 'sparsity'}} for each
  prunable leaf (every kernel of >= 2 dimensions without a config), 'prunable_sparsity' over
  those, 'total_sparsity' over every parameter, 'num_params', 'num_zeros'}."""
  config = config or PruningConfig(sparsity=0.0, exclude='')
  chosen = prunable(params, config)
  layers, zeros_all, size_all, zeros_pr, size_pr = {}, 0, 0, 0, 0
  for (key_path, leaf), flag in zip(jax.tree_util.tree_leaves_with_path(params),
                                    jax.tree.leaves(chosen)):
    array = np.asarray(leaf)
    zeros = int(np.count_nonzero(array == 0))
    zeros_all, size_all = zeros_all + zeros, size_all + array.size
    if flag:
      layers[path_of(key_path)] = {'size': int(array.size), 'zeros': zeros,
                                   'sparsity': zeros / max(array.size, 1)}
      zeros_pr, size_pr = zeros_pr + zeros, size_pr + array.size
  return {'layers': layers, 'prunable_sparsity': zeros_pr / max(size_pr, 1),
          'total_sparsity': zeros_all / max(size_all, 1), 'num_params': size_all,
          'num_zeros': zeros_all}
