"""The config schema every experiment starts from, and its validation.

Config files call `base_config()` and set what they change. `validate()` rejects keys the
schema does not know (a typo in a config file or on the command line would otherwise be
silently ignored), naming the closest known key, and values that cannot work, each with a
`ConfigError` naming the key. The free-form sections (`FREE_FORM`: the model's constructor
arguments, the named evaluation splits) accept new keys from the config file and from the
command line (`--config.model.dtype=bfloat16`, `--config.data.eval_splits.val=train[:5000]`);
their keys are checked where they are used (`research.models.build_model` names a model's
arguments). Values given on the command line for known keys are parsed to the key's type.
"""
import difflib

import ml_collections

from research.errors import ConfigError

# Sections whose keys are free-form: the model's constructor arguments and the named
# evaluation splits.
FREE_FORM = ('model', 'data.eval_splits')

# The experiment modules a config can name in `experiment` (experiments/<name>.py).
EXPERIMENTS = ('classification', 'transfer', 'detection', 'distillation', 'segmentation',
               'adversarial')


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'classification'   # the module that runs it: experiments/<experiment>.py
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'             # tfds dataset name
  c.data.data_dir = ''              # '' = research.data.sources.default_data_dir()
  c.data.train_split = 'train'
  c.data.eval_splits = ml_collections.ConfigDict({'test': 'test'})  # name -> tfds split
  c.data.validation_holdout = 0     # > 0: hold out this many training examples as eval split 'val'
  c.data.image_key = 'image'
  c.data.label_key = 'label'
  c.data.classes = ()               # keep only these labels, renumbered 0..k-1; () = all
  c.data.loader = 'in_memory'       # 'in_memory' (decode once) | 'grain' (streaming)
  c.data.train_ops = 'normalize'    # preprocessing ops, see research/data/augment.py
  c.data.eval_ops = 'normalize'

  c.model = ml_collections.ConfigDict()
  c.model.name = ''                 # a name in research.models.MODELS; other keys -> kwargs

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128          # global batch, split over all devices
  c.train.eval_batch_size = 1000
  c.train.num_epochs = 1.0
  c.train.num_steps = -1            # > 0 overrides num_epochs
  c.train.log_every = 100
  c.train.eval_every = -1           # steps; -1 = once per epoch
  c.train.checkpoint_every = -1     # steps; -1 = once per epoch
  c.train.checkpoint_every_minutes = 0.0  # > 0: also checkpoint when this much time has passed
  c.train.keep_checkpoints = 3      # the latest ones; the best one (best_metric) is kept too
  c.train.best_metric = ''          # eval metric selecting the reported checkpoint, e.g.
                                    # 'val/accuracy'; '' = early_stopping.metric ('' too: the last)
  c.train.best_mode = ''            # 'max' | 'min'; '' = early_stopping.mode
  c.train.loss = 'softmax_xent'     # 'softmax_xent' | 'mse' (on one-hot targets)
  c.train.label_smoothing = 0.0
  c.train.ema_decay = 0.0           # > 0: evaluate an exponential moving average of the weights
  c.train.top_k = 5                 # also report top-k accuracy when num_classes > k
  c.train.final_report = True       # evaluate the reported checkpoint on the first eval split
                                    # with research/evaluation (eval/<split>/: report, PNGs)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'          # sgd | momentum | nesterov | adam | adamw
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.decay_norms_and_biases = False
  c.optimizer.clip_grad_norm = 0.0  # 0 = no clipping; the global norm of all gradients

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'constant'      # constant | warmup_cosine | piecewise
  c.schedule.warmup_steps = 0
  c.schedule.boundaries = (0.5, 0.75)  # piecewise: fractions of the total steps
  c.schedule.decay_factor = 0.1        # piecewise: lr multiplier at each boundary
  c.schedule.final_lr_factor = 0.0     # warmup_cosine: final lr / peak lr
  c.schedule.plateau_metric = ''       # reduce-on-plateau on top: an eval metric, e.g. 'val/loss'
  c.schedule.plateau_mode = 'min'      # 'min' | 'max'
  c.schedule.plateau_factor = 0.1      # lr multiplier on a plateau
  c.schedule.plateau_patience = 3      # evaluations without improvement
  c.schedule.plateau_rtol = 1e-4       # relative improvement that counts
  c.schedule.plateau_cooldown = 0      # evaluations before counting again after a reduction
  c.schedule.plateau_min_scale = 0.0   # the factor never goes below this

  c.transfer = ml_collections.ConfigDict()  # see research/training/transfer.py
  c.transfer.init_from = ''         # a workdir (optionally 'workdir@best' or '@<step>') or
                                    # converted weights; '' = from scratch
  c.transfer.reinit = r'^(logits|fc|classifier_\d+)/'  # not loaded: the head
  c.transfer.freeze = ''            # regex of parameters kept as loaded, e.g. '^(conv|bn)'
  c.transfer.lr_multipliers = ''    # 'regex=factor,...', e.g. '^layer[12]=0.1'

  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.metric = ''      # e.g. 'val/loss' (hold out data.validation_holdout); '' = off
  c.early_stopping.mode = 'max'     # 'max' | 'min'
  c.early_stopping.patience = 5     # evaluations without improvement
  c.early_stopping.min_delta = 0.0
  c.early_stopping.start_step = 0   # evaluations before this step are ignored (warmups, ramps)
  return c


def _is_section(value) -> bool:
  return isinstance(value, (dict, ml_collections.ConfigDict)) and len(value) > 0


def _leaf_paths(config, prefix):
  for key, value in config.items():
    if _is_section(value):
      yield from _leaf_paths(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def _unknown_keys(config, schema, prefix=''):
  """(dotted key, closest known key or None, known keys there) for each key not in `schema`."""
  for key, value in config.items():
    path = f'{prefix}{key}'
    if path in FREE_FORM:
      continue
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1, cutoff=0.6)
      paths = list(_leaf_paths(value, path + '.')) if _is_section(value) else [path]
      for leaf in paths:
        yield leaf, (close[0] if close else None), sorted(schema.keys())
    elif _is_section(value) and _is_section(schema[key]):
      yield from _unknown_keys(value, schema[key], path + '.')
    elif _is_section(value) and not isinstance(schema[key], (dict, ml_collections.ConfigDict)):
      for leaf in _leaf_paths(value, path + '.'):  # a key below a value, e.g. train.steps.x
        yield leaf, None, f'{path!r} is a value, not a section'


def nested(dotted_keys) -> dict:
  """{'a': {'b': None}} from ['a.b']: dotted keys as a tree to check with unknown_key_message."""
  tree = {}
  for dotted in sorted(dotted_keys, key=lambda k: -k.count('.')):  # 'a.b' before 'a'
    node, parts = tree, dotted.split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node.setdefault(parts[-1], None)
  return tree


def unknown_key_message(config, schema) -> str | None:
  """The error for the first key of `config` that `schema` does not have, or None. Both are
  ConfigDicts or nested dicts (the leaves' values do not matter)."""
  for path, close, known in _unknown_keys(config, schema):
    hint = (f" (did you mean {close!r}?)" if close else f': {known}' if isinstance(known, str)
            else f'; known keys there: {", ".join(known)}')
    return f'unknown config key {path!r}{hint}'
  return None


def best_metric(config) -> tuple[str, str]:
  """(metric, mode) selecting the reported checkpoint; ('', '') when the last one is reported."""
  t, es = config.train, config.early_stopping
  metric = t.best_metric or es.metric
  mode = t.best_mode or es.mode
  return (metric, mode) if metric else ('', '')


def validate(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict | None = None
             ) -> None:
  """Raises ConfigError for the first unknown key or impossible value. `schema` (default
  `base_config()`) is the config the keys are checked against: a kind of experiment with
  sections of its own passes base_config() with them added."""
  message = unknown_key_message(config, schema if schema is not None else base_config())
  if message:
    raise ConfigError(message)
  if config.experiment not in EXPERIMENTS:
    raise ConfigError(f'config.experiment {config.experiment!r} names no experiment module; '
                      f'known: {", ".join(EXPERIMENTS)}')
  if schema is not None and schema.experiment != 'classification' \
      and config.experiment != schema.experiment:
    article = 'an' if schema.experiment[0] in 'aeiou' else 'a'
    raise ConfigError(f"{article} {schema.experiment} config needs "
                      f"experiment='{schema.experiment}', got {config.experiment!r}")
  if not config.model.name:
    raise ConfigError('config.model.name is empty: name a model from research.models.MODELS')
  t = config.train
  for key in ('batch_size', 'eval_batch_size', 'log_every', 'keep_checkpoints'):
    if t[key] <= 0:
      raise ConfigError(f'config.train.{key} must be positive, got {t[key]}')
  if t.num_steps <= 0 and t.num_epochs <= 0:
    raise ConfigError('set config.train.num_steps or config.train.num_epochs to a positive value')
  if not 0 <= t.ema_decay < 1:
    raise ConfigError(f'config.train.ema_decay must be in [0, 1) (0 = no weight averaging; '
                      f'e.g. 0.999), got {t.ema_decay}')
  if t.checkpoint_every_minutes < 0:
    raise ConfigError(f'config.train.checkpoint_every_minutes must be >= 0, got '
                      f'{t.checkpoint_every_minutes}')
  for section, key in (('early_stopping', 'mode'), ('train', 'best_mode')):
    value = config[section][key]
    if value not in ('max', 'min') and not (key == 'best_mode' and value == ''):
      raise ConfigError(f"config.{section}.{key} must be 'max' or 'min', got {value!r}")
  if config.early_stopping.metric and config.early_stopping.patience < 1:
    raise ConfigError(f'config.early_stopping.patience must be at least 1, got '
                      f'{config.early_stopping.patience}')
  if config.early_stopping.start_step < 0:
    raise ConfigError(f'config.early_stopping.start_step must be >= 0, got '
                      f'{config.early_stopping.start_step}')
  for name in config.data.eval_splits:
    if '/' in name:
      raise ConfigError(f'eval split name {name!r} must not contain "/"')
  if config.data.validation_holdout < 0:
    raise ConfigError(f'config.data.validation_holdout must be >= 0, got '
                      f'{config.data.validation_holdout}')
  if config.data.validation_holdout and 'val' in config.data.eval_splits:
    raise ConfigError("data.validation_holdout makes the eval split 'val'; remove "
                      "data.eval_splits.val or the holdout")
  if config.data.loader not in ('in_memory', 'grain'):
    raise ConfigError(f"config.data.loader must be 'in_memory' or 'grain', got {config.data.loader!r}")
  if config.data.loader == 'grain' and (config.data.classes or config.data.validation_holdout):
    raise ConfigError('data.classes and data.validation_holdout need the in_memory loader')
  if config.optimizer.learning_rate < 0:
    raise ConfigError(f'config.optimizer.learning_rate must be >= 0, got '
                      f'{config.optimizer.learning_rate}')


def total_steps(train, steps_per_epoch: int) -> int:
  """The run's training steps: `train.num_steps` if set, else `train.num_epochs` epochs."""
  if train.num_steps > 0:
    return train.num_steps
  return max(1, round(train.num_epochs * steps_per_epoch))


def planned_steps(config, train_examples: int) -> int:
  """`total_steps` of a run over `train_examples` training examples, for dry runs that count
  without loading data; ConfigError when one batch is larger than the split, as the loaders
  raise it."""
  batch = config.train.batch_size
  if train_examples < batch:
    raise ConfigError(f'batch size {batch} is larger than the split ({train_examples})')
  return total_steps(config.train, train_examples // batch)


def check_early_stopping_start(early_stopping, total_steps: int) -> None:
  """ConfigError if early stopping is on but starts at or after the run's last step."""
  es = early_stopping
  if es.metric and es.start_step >= total_steps:
    raise ConfigError(f'early_stopping.start_step={es.start_step} is not before the end of the '
                      f'{total_steps} training steps: early stopping could never act; lower it '
                      "or turn early stopping off (early_stopping.metric='')")


def value_at(tree: dict, dotted: str, missing=None):
  """The value at a dotted key ('train.ema_decay') of nested dicts, or `missing` where the
  path does not lead to one."""
  for part in dotted.split('.'):
    if not isinstance(tree, dict) or part not in tree:
      return missing
    tree = tree[part]
  return tree


def differing_keys(a: dict, b: dict, prefix='') -> list[str]:
  """Dotted keys whose values differ between two nested dicts."""
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += differing_keys(va, vb, f'{prefix}{key}.')
    elif va != vb:
      out.append(f'{prefix}{key}')
  return out
