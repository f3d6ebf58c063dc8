"""A sweep's table: every run's summary.json collected, grouped by point (everything but the
seed), each metric as mean ± sample standard deviation (ddof 1) over the n seeds that finished.

Writes into the sweep's folder: results.md (the table), results.csv (the same, plus every
seed's value), results.png (a metric against a swept axis, one line per setting of the other
axes, error bars of one standard deviation) and tensorboard/ (each run's settings and final
metrics as TensorBoard HParams: `tensorboard --logdir <sweep>/tensorboard`, HPARAMS tab).
"""
import csv
import json
import math
import os
import shutil

import numpy as np

from research.config import value_at
from research.plotting import plt, save_figure
from research.sweeps import grid

SWEEP_FILE = 'sweep.json'


def write_manifest(sweep_dir: str, manifest: dict) -> None:
  """sweep.json: what the sweep runs (experiment, config, points, seeds, options)."""
  os.makedirs(sweep_dir, exist_ok=True)
  with open(os.path.join(sweep_dir, SWEEP_FILE), 'w') as f:
    json.dump(manifest, f, indent=2, default=grid.format_value)


def read_manifest(sweep_dir: str) -> dict:
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.isfile(path):
    from research.errors import ConfigError
    raise ConfigError(f'{sweep_dir} holds no sweep ({SWEEP_FILE} is missing): run '
                      'python -m experiments.sweep --config=... --workdir=<it> first')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    from research.errors import ConfigError
    raise ConfigError(f'{path} cannot be read ({type(e).__name__}: {e}); rerun the sweep command '
                      'to write it again') from None


def collect(sweep_dir: str) -> tuple[list[dict], list[str]]:
  """One record per point: {'point', 'settings', 'values': {metric: {seed: value}}, 'missing'},
  and the metrics shown (the manifest's, else every numeric test/* key found)."""
  manifest = read_manifest(sweep_dir)
  records, found = [], []
  for point in manifest['points']:
    values, missing = {}, []
    for seed in manifest['seeds']:
      path = os.path.join(sweep_dir, point['name'], f'seed{seed}', 'summary.json')
      try:
        with open(path) as f:
          summary = json.load(f)
      except (OSError, json.JSONDecodeError):
        missing.append(seed)
        continue
      for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          values.setdefault(key, {})[seed] = float(value)
          if key.startswith('test/') and key not in found:
            found.append(key)
    records.append({'point': point['name'], 'settings': point['overrides'], 'values': values,
                    'missing': missing, 'config': _run_config(sweep_dir, point['name'],
                                                              manifest['seeds'])})
  return records, list(manifest.get('metrics') or found)


def _run_config(sweep_dir: str, point: str, seeds) -> dict:
  """The config.json of the point's first run that has one ({} if none)."""
  for seed in seeds:
    try:
      with open(os.path.join(sweep_dir, point, f'seed{seed}', 'config.json')) as f:
        return json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
  return {}


_MISSING = object()


def _setting(record: dict, dotted: str) -> str:
  """The value a point ran with: its own override, else what its run's config.json says
  (a setting the point left at the config file's value), else ''."""
  if dotted in record['settings']:
    return grid.format_value(record['settings'][dotted])
  node = value_at(record.get('config', {}), dotted, missing=_MISSING)
  if node is _MISSING:
    return ''
  return grid.format_value(tuple(node) if isinstance(node, list) else node)


def mean_std(values: list[float]) -> tuple[float, float, int]:
  """Mean, sample standard deviation (ddof 1; NaN for one value) and n."""
  n = len(values)
  if not n:
    return math.nan, math.nan, 0
  return float(np.mean(values)), float(np.std(values, ddof=1)) if n > 1 else math.nan, n


def _cell(mean, std, n) -> str:
  if not n:
    return '—'
  return f'{mean:.4f} ± {std:.4f} (n={n})' if n > 1 else f'{mean:.4f} (n=1)'


def _axes(records) -> list[str]:
  axes = []
  for r in records:
    axes += [k for k in r['settings'] if k not in axes]
  return axes


def write_tables(sweep_dir: str, records: list[dict], metrics: list[str], seeds: list[int],
                 title: str = '') -> None:
  axes = _axes(records)
  short = grid._short_names(axes)  # noqa: SLF001
  header = ['point', *(short[a] for a in axes)]
  lines = [f'# {title or os.path.basename(sweep_dir.rstrip("/"))}', '',
           f'Mean ± sample standard deviation over n seeds (of {", ".join(map(str, seeds))}).', '',
           '| ' + ' | '.join(header + metrics) + ' |', '|' + '---|' * (len(header) + len(metrics))]
  rows = []
  for r in records:
    settings = [_setting(r, a) for a in axes]
    stats = {m: mean_std([r['values'].get(m, {})[s] for s in seeds if s in r['values'].get(m, {})])
             for m in metrics}
    lines.append('| ' + ' | '.join([r['point'], *settings, *(_cell(*stats[m]) for m in metrics)]) + ' |')
    row = {'point': r['point'], **{short[a]: v for a, v in zip(axes, settings)}}
    for m in metrics:
      mean, std, n = stats[m]
      row.update({f'{m} mean': mean, f'{m} std': std, f'{m} n': n,
                  **{f'{m} seed{s}': r['values'].get(m, {}).get(s, '') for s in seeds}})
    rows.append(row)
  missing = [f'{r["point"]}/seed{s}' for r in records for s in r['missing']]
  if missing:
    lines += ['', f'Not finished (not in the table): {", ".join(missing)}.']
  with open(os.path.join(sweep_dir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['point'])
    writer.writeheader()
    writer.writerows(rows)


def plot(sweep_dir: str, records: list[dict], metric: str, x: str, seeds: list[int]) -> str | None:
  """`metric` against swept axis `x`, a line per setting of the other axes, ±1 std bars."""
  if not records or x not in _axes(records):
    return None
  others = [a for a in _axes(records) if a != x]
  lines = {}
  for r in records:
    if x not in r['settings']:
      continue
    label = ', '.join(f'{a.split(".")[-1]}={grid.format_value(r["settings"].get(a))}' for a in others)
    mean, std, n = mean_std(list(r['values'].get(metric, {}).values()))
    if n:
      lines.setdefault(label, []).append((r['settings'][x], mean, 0.0 if math.isnan(std) else std))
  if not lines:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  numeric = all(isinstance(v, (int, float)) for pts in lines.values() for v, _, _ in pts)
  for label, points in lines.items():
    points.sort(key=lambda p: p[0] if numeric else str(p[0]))
    xs = [p[0] if numeric else str(p[0]) for p in points]
    ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker='o', capsize=3,
                label=label or metric)
  ax.set_xlabel(x)
  ax.set_ylabel(metric)
  ax.set_title(f'{metric}: mean ± std over seeds ({len(seeds)} each)')
  ax.grid(alpha=0.3)
  if len(lines) > 1 or next(iter(lines)):
    ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, os.path.join(sweep_dir, 'results.png'))


def write_hparams(sweep_dir: str, records: list[dict], metrics: list[str]) -> None:
  """Each finished run's settings and final metrics as TensorBoard HParams."""
  import tensorboardX
  folder = os.path.join(sweep_dir, 'tensorboard')
  shutil.rmtree(folder, ignore_errors=True)  # derived from the runs: rewritten whole
  with tensorboardX.SummaryWriter(folder) as writer:
    for r in records:
      settings = {k: v if isinstance(v, (bool, str, int, float)) else grid.format_value(v)
                  for k, v in r['settings'].items()}
      seeds = sorted({s for m in metrics for s in r['values'].get(m, {})})
      for seed in seeds:
        finals = {m: r['values'][m][seed] for m in metrics if seed in r['values'].get(m, {})}
        writer.add_hparams({**settings, 'seed': seed}, finals, name=f'{r["point"]}/seed{seed}')


def report(sweep_dir: str) -> str:
  """Collects the sweep and writes every output; returns the markdown table."""
  manifest = read_manifest(sweep_dir)
  records, metrics = collect(sweep_dir)
  write_tables(sweep_dir, records, metrics, manifest['seeds'], manifest.get('title', ''))
  options = manifest.get('plot') or {}
  axes = _axes(records)
  x = options.get('x') or next((a for a in axes if all(
      isinstance(r['settings'].get(a), (int, float)) for r in records)), axes[0] if axes else None)
  if x and metrics:
    plot(sweep_dir, records, options.get('metric') or metrics[0], x, manifest['seeds'])
  write_hparams(sweep_dir, records, metrics)
  with open(os.path.join(sweep_dir, 'results.md')) as f:
    return f.read()
