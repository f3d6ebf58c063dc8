"""Transfer learning: start from a checkpoint's weights, replace the head, freeze by regex,
and scale learning rates per parameter group.

Parameter paths are '/'-joined module names, e.g. 'conv1/kernel', 'layer2_0/bn1/scale',
'logits/bias'. `config.transfer`:
  init_from       a workdir of this project (its latest checkpoint) or a folder written by
                  research.tools.convert_torch; '' = train from scratch
  reinit          regex of parameters not taken from it (the head, whose shape changes)
  freeze          regex of parameters kept exactly as loaded (their BatchNorm statistics too)
  lr_multipliers  'regex=factor,regex=factor': the first match scales that parameter's updates
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


def load_weights(path: str) -> dict:
  """{'params': ..., 'batch_stats': ...} from a workdir or a converted-weights folder."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    state = load_state(path)
  elif os.path.isdir(path):
    try:
      state = ocp.StandardCheckpointer().restore(path)
    except Exception as e:
      raise CheckpointError(f'cannot read weights from {path} ({type(e).__name__})') from None
  else:
    raise CheckpointError(f'transfer.init_from={path} is neither a workdir nor a weights folder')
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


def wrap_optimizer(optimizer, transfer_config) -> optax.GradientTransformation:
  """Frozen parameters get zero updates; the others the optimizer's, scaled per group."""
  freeze, multipliers = transfer_config.freeze, parse_multipliers(transfer_config.lr_multipliers)
  if not freeze and not multipliers:
    return optimizer

  def label(params):
    def one(key_path, _):
      path = path_of(key_path)
      if freeze and re.search(freeze, path):
        return 'frozen'
      return next((f'group{i}' for i, (r, _) in enumerate(multipliers) if re.search(r, path)), 'rest')
    return jax.tree_util.tree_map_with_path(one, params)

  transforms = {'frozen': optax.set_to_zero(), 'rest': optimizer}
  for i, (_, factor) in enumerate(multipliers):
    transforms[f'group{i}'] = optax.chain(optimizer, optax.scale(factor))
  return optax.multi_transform(transforms, label)
