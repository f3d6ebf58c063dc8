"""Transfer learning: start from a checkpoint's weights, replace the head, freeze by regex,
and scale learning rates per parameter group.

Parameter paths are '/'-joined module names, e.g. 'conv1/kernel', 'layer2_0/bn1/scale',
'logits/bias'. `config.transfer`:
  init_from       a workdir of this project (its latest checkpoint; 'workdir@best' or
                  'workdir@<step>' for another) or a folder written by
                  research.tools.convert_torch; '' = train from scratch
  reinit          regex of parameters not taken from it (the head, whose shape changes)
  freeze          regex of parameters kept exactly as loaded (their BatchNorm statistics too)
  lr_multipliers  'regex=factor,regex=factor': the first match scales that parameter's updates

The optimizer still runs once over all parameters (`wrap_optimizer`): frozen parameters'
gradients are zeroed before it, so gradient clipping by global norm and any other transform
that sees every gradient at once behave as without groups; the group factors then scale its
updates (for SGD, momentum and Adam alike this equals a per-group learning rate).
"""
import os
import re

import jax
import optax
import orbax.checkpoint as ocp

from research.training.checkpointing import load_state
from research.errors import CheckpointError, ConfigError


def path_of(key_path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in key_path)


def split_step(spec: str) -> tuple[str, str | None]:
  """'runs/x@best' -> ('runs/x', 'best'); 'runs/x' -> ('runs/x', None). Raises ConfigError
  for an existing workdir followed by an unknown step ('runs/x@bogus')."""
  path, at, step = spec.rpartition('@')
  if at and (step in ('best', 'latest') or step.isdigit()):
    return path, step
  if at and os.path.isdir(path) and not os.path.exists(spec):
    raise ConfigError(f'{spec}: unknown checkpoint {step!r}; use {path}@best, @latest or '
                      '@<step number>')
  return spec, None


def load_weights(spec: str) -> dict:
  """{'params': ..., 'batch_stats': ...} from a workdir (optionally '@best' or '@<step>') or a
  converted-weights folder, on this process's devices whatever layout saved them."""
  path, step = split_step(spec)
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    state = load_state(path, step)
  elif os.path.isdir(path) and step is None:
    try:
      state = ocp.StandardCheckpointer().restore(path)
    except Exception as e:
      raise CheckpointError(f'cannot read weights from {path} ({type(e).__name__})') from None
  else:
    raise CheckpointError(f'transfer.init_from={spec} is neither a workdir nor a weights folder')
  return {'params': state['params'], 'batch_stats': state.get('batch_stats', {}) or {}}


def merge_pretrained(variables: dict, pretrained: dict, reinit: str) -> tuple[dict, list[str]]:
  """Takes every leaf from `pretrained` except those matching `reinit`; returns the merged
  variables and the paths left as initialised."""
  pattern, kept_init = re.compile(reinit) if reinit else None, []

  def take(collection):
    def leaf(key_path, initial):
      path = path_of(key_path)
      if pattern is not None and pattern.search(path):
        kept_init.append(path)
        return initial
      node = pretrained.get(collection, {})
      for part in path.split('/'):
        if not isinstance(node, dict) or part not in node:
          raise CheckpointError(f'the pretrained weights have no {collection}/{path}; add it to '
                                'transfer.reinit to initialise it instead')
        node = node[part]
      if tuple(node.shape) != tuple(initial.shape):
        raise CheckpointError(f'{collection}/{path} has shape {tuple(node.shape)} in the pretrained '
                              f'weights but {tuple(initial.shape)} here; add it to transfer.reinit')
      return jax.numpy.asarray(node, initial.dtype)
    return leaf

  merged = {c: jax.tree_util.tree_map_with_path(take(c), tree) for c, tree in variables.items()}
  return merged, kept_init


def mask(tree, pattern: str):
  """True where a leaf's path matches `pattern`."""
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(path_of(p))), tree)


def parse_multipliers(spec: str) -> list[tuple[str, float]]:
  pairs = []
  for part in filter(None, (p.strip() for p in spec.split(','))):
    regex, _, factor = part.rpartition('=')
    try:
      re.compile(regex)
      pairs.append((regex, float(factor)))
    except (re.error, ValueError):
      raise ConfigError(f"transfer.lr_multipliers: cannot read {part!r}; write 'regex=factor'") from None
  return pairs


def group_factors(params, transfer_config, multipliers: bool = True):
  """A tree like `params` of update factors: 0 frozen, the first matching multiplier (when
  `multipliers`), else 1."""
  freeze = transfer_config.freeze
  pairs = parse_multipliers(transfer_config.lr_multipliers) if multipliers else []

  def factor(key_path, _):
    path = path_of(key_path)
    if freeze and re.search(freeze, path):
      return 0.0
    return next((f for r, f in pairs if re.search(r, path)), 1.0)
  return jax.tree_util.tree_map_with_path(factor, params)


def _scale_by_groups(transfer_config, multipliers: bool) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    factors = group_factors(updates, transfer_config, multipliers)
    return jax.tree.map(lambda u, f: u if f == 1.0 else u * f, updates, factors), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def wrap_optimizer(optimizer, transfer_config) -> optax.GradientTransformation:
  """Frozen parameters get zero gradients (before `optimizer`, so they count in no global norm
  and leave no optimizer state) and zero updates; the others `optimizer`'s updates, scaled by
  their group's factor."""
  if not transfer_config.freeze and not parse_multipliers(transfer_config.lr_multipliers):
    return optimizer
  return optax.chain(_scale_by_groups(transfer_config, multipliers=False), optimizer,
                     _scale_by_groups(transfer_config, multipliers=True))
