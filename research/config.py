"""The config schema every experiment starts from, and its validation.

Config files call `base_config()` and set what they change. `validate()` rejects keys the
schema does not know (a typo in a config file would otherwise be silently ignored) and
values that cannot work, each with a `ConfigError` naming the key. Overrides given on the
command line (`--config.train.batch_size=64`) are checked by ml_collections itself: an
unknown key or a value of the wrong type is a flag-parsing error naming the key.
"""
import ml_collections

from research.errors import ConfigError

# Sections whose keys are free-form: the model's constructor arguments and the named
# evaluation splits. Their keys are checked where they are used.
_FREE_FORM = ('model', 'data.eval_splits')


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'             # tfds dataset name
  c.data.data_dir = ''              # '' = $TFDS_DATA_DIR, else tfds' default
  c.data.train_split = 'train'
  c.data.eval_splits = ml_collections.ConfigDict({'test': 'test'})  # name -> tfds split
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
  c.train.keep_checkpoints = 3
  c.train.loss = 'softmax_xent'     # 'softmax_xent' | 'mse' (on one-hot targets)
  c.train.label_smoothing = 0.0
  c.train.top_k = 5                 # also report top-k accuracy when num_classes > k

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'          # sgd | momentum | nesterov | adam | adamw
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.decay_norms_and_biases = False
  c.optimizer.clip_grad_norm = 0.0  # 0 = no clipping

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'constant'      # constant | warmup_cosine | piecewise
  c.schedule.warmup_steps = 0
  c.schedule.boundaries = (0.5, 0.75)  # piecewise: fractions of the total steps
  c.schedule.decay_factor = 0.1        # piecewise: lr multiplier at each boundary
  c.schedule.final_lr_factor = 0.0     # warmup_cosine: final lr / peak lr

  c.transfer = ml_collections.ConfigDict()  # see research/training/transfer.py
  c.transfer.init_from = ''         # a workdir or converted weights; '' = from scratch
  c.transfer.reinit = r'^(logits|fc|classifier_\d+)/'  # not loaded: the head
  c.transfer.freeze = ''            # regex of parameters kept as loaded, e.g. '^(conv|bn)'
  c.transfer.lr_multipliers = ''    # 'regex=factor,...', e.g. '^layer[12]=0.1'

  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.metric = ''      # e.g. 'val/accuracy'; '' = off
  c.early_stopping.mode = 'max'     # 'max' | 'min'
  c.early_stopping.patience = 5     # evaluations without improvement
  c.early_stopping.min_delta = 0.0
  return c


def _unknown_keys(config, schema, prefix=''):
  for key, value in config.items():
    path = f'{prefix}{key}'
    if path in _FREE_FORM:
      continue
    if key not in schema:
      yield path, sorted(schema.keys())
    elif isinstance(value, ml_collections.ConfigDict):
      yield from _unknown_keys(value, schema[key], path + '.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first unknown key or impossible value."""
  for path, known in _unknown_keys(config, base_config()):
    raise ConfigError(f'unknown config key {path!r}; known keys there: {", ".join(known)}')
  if not config.model.name:
    raise ConfigError('config.model.name is empty: name a model from research.models.MODELS')
  t = config.train
  for key in ('batch_size', 'eval_batch_size', 'log_every', 'keep_checkpoints'):
    if t[key] <= 0:
      raise ConfigError(f'config.train.{key} must be positive, got {t[key]}')
  if t.num_steps <= 0 and t.num_epochs <= 0:
    raise ConfigError('set config.train.num_steps or config.train.num_epochs to a positive value')
  if config.early_stopping.mode not in ('max', 'min'):
    raise ConfigError(f"config.early_stopping.mode must be 'max' or 'min', got {config.early_stopping.mode!r}")
  if config.early_stopping.metric and config.early_stopping.patience < 1:
    raise ConfigError(f'config.early_stopping.patience must be at least 1, got {config.early_stopping.patience}')
  for name in config.data.eval_splits:
    if '/' in name:
      raise ConfigError(f'eval split name {name!r} must not contain "/"')
  if config.data.loader not in ('in_memory', 'grain'):
    raise ConfigError(f"config.data.loader must be 'in_memory' or 'grain', got {config.data.loader!r}")


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
