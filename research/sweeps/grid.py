"""A sweep's points: the settings each run changes, from a config file's `get_sweep()`.

    def get_sweep():
      return {
          'product': {'model.dropout_rate': [0.0, 0.25, 0.5], 'train.label_smoothing': [0.0, 0.1]},
          'zip': {'optimizer.learning_rate': [1e-3, 3e-3], 'schedule.warmup_steps': [0, 100]},
          'points': {'baseline': {}, 'no_augmentation': {'data.train_ops': 'normalize'}},
          'extra_points': {'from_scratch': {'distillation.teachers': ()}},
          'seeds': [0, 1, 2],
          'metrics': ['test/accuracy'],                 # optional; default: every test/* key
          'plot': {'x': 'model.dropout_rate', 'metric': 'test/accuracy'},   # optional
          'slurm': {'partition': 'gpu', 'time_min': 60, 'gpus_per_node': 1},  # optional
      }

The points are the explicit `points` (default: one point with no changes) crossed with the
`product` grid, crossed with the rows of `zip` (its lists have equal lengths and are taken
together, row by row), then the `extra_points` as they are (baselines that no axis applies
to, e.g. a from-scratch row beside a grid of distillation settings). Each point runs once per seed, the seed being `config.seed` and nothing
else: no hyper-parameter may depend on it (`seed` cannot be swept). A point's name lists its
settings by their last key component, `dropout_rate=0.25,label_smoothing=0.1` (full dotted keys
where last components collide), after the explicit point's name if any.
"""
import dataclasses
import itertools
import re

from research.errors import ConfigError

KNOWN = ('product', 'zip', 'points', 'extra_points', 'seeds', 'metrics', 'plot', 'slurm')


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  overrides: dict  # dotted config key -> value, in a fixed order

  def settings(self) -> dict:
    return dict(self.overrides)


def format_value(value) -> str:
  """A value as a `--config.key=` argument and in names: '0.25', '(32, 64)', 'adamw', 'True'."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _safe(text: str) -> str:
  """A name usable as a folder name on every filesystem we write to."""
  return re.sub(r'[^A-Za-z0-9_.=,+()\-]', '_', text.replace(', ', '_').replace(' ', '_'))


def _short_names(keys) -> dict:
  last = [k.split('.')[-1] for k in keys]
  return {k: (l if last.count(l) == 1 else k) for k, l in zip(keys, last)}


def expand(spec: dict) -> tuple[list[Point], list[int]]:
  """The points and seeds of a `get_sweep()` dict; raises ConfigError for a malformed one."""
  if not isinstance(spec, dict):
    raise ConfigError(f'get_sweep() must return a dict; got {type(spec).__name__}')
  unknown = sorted(set(spec) - set(KNOWN))
  if unknown:
    raise ConfigError(f'get_sweep() has unknown entries {", ".join(unknown)}; known: {", ".join(KNOWN)}')
  product, zipped = dict(spec.get('product', {})), dict(spec.get('zip', {}))
  explicit = spec.get('points', {'': {}})
  if isinstance(explicit, (list, tuple)):
    explicit = {p['name']: p.get('overrides', {}) for p in explicit}
  seeds = list(spec.get('seeds', [0]))
  extra = spec.get('extra_points', {})
  if isinstance(extra, (list, tuple)):
    extra = {p['name']: p.get('overrides', {}) for p in extra}
  for key in [*product, *zipped, *(k for o in [*explicit.values(), *extra.values()] for k in o)]:
    if key == 'seed' or key.endswith('.seed'):
      raise ConfigError("get_sweep() cannot sweep 'seed': list the seeds in 'seeds' (the seed "
                        'changes nothing but randomness)')
  for axis, values in [*product.items(), *zipped.items()]:
    if not isinstance(values, (list, tuple)) or not values:
      raise ConfigError(f'sweep axis {axis!r} needs a non-empty list of values; got {values!r}')
  lengths = {len(v) for v in zipped.values()}
  if len(lengths) > 1:
    raise ConfigError(f'the zip axes need lists of one length; got lengths '
                      f'{", ".join(f"{k}: {len(v)}" for k, v in zipped.items())}')
  if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) for s in seeds):
    raise ConfigError(f"get_sweep()['seeds'] must be distinct integers; got {seeds!r}")
  overlap = set(product) & set(zipped)
  if overlap:
    raise ConfigError(f'{", ".join(sorted(overlap))} is both a product and a zip axis')

  grid = [dict(zip(product, values)) for values in itertools.product(*product.values())]
  rows = ([dict(zip(zipped, values)) for values in zip(*zipped.values())] if zipped else [{}])
  names = _short_names(list(product) + list(zipped))
  points = []
  for (label, base), cell, row in itertools.product(explicit.items(), grid, rows):
    overrides = {**base, **cell, **row}
    parts = [label] if label else []
    parts += [f'{names[k]}={format_value(v)}' for k, v in {**cell, **row}.items()]
    points.append(Point(_safe(','.join(parts)) or 'default', overrides))
  points += [Point(_safe(label), dict(overrides)) for label, overrides in extra.items()]
  duplicates = sorted({p.name for p in points if [q.name for q in points].count(p.name) > 1})
  if duplicates:
    raise ConfigError(f'sweep points share the names {", ".join(duplicates)}; give the explicit '
                      'points distinct names')
  return points, seeds


def run_dir(sweep_dir: str, point: Point, seed: int) -> str:
  return f'{sweep_dir.rstrip("/")}/{point.name}/seed{seed}'


def command(experiment: str, config_path: str, workdir: str, point: Point, seed: int,
            extra: list[str], python: str = 'python') -> list[str]:
  """The command that runs one point with one seed (`extra`: the user's --config.* overrides,
  which apply to every point)."""
  swept = {f'--config.{k}' for k in point.overrides}
  clash = [a for a in extra if a.split('=')[0] in swept]
  if clash:
    raise ConfigError(f'{clash[0].split("=")[0]} is swept; it cannot also be overridden for '
                      'every point')
  return [python, '-m', f'experiments.{experiment}', f'--config={config_path}',
          f'--workdir={workdir}', *extra,
          *(f'--config.{k}={format_value(v)}' for k, v in point.overrides.items()),
          f'--config.seed={seed}']
