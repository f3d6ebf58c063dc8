"""Plots a person looks at: training curves from metrics.jsonl."""
import collections

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(records: list[dict], path: str, title: str = '') -> str:
  """One panel per metric name (loss, accuracy, ...), a line per split (train, test, ...)."""
  series = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    for key, value in record.items():
      if '/' in key:
        split, metric = key.split('/', 1)
        series[metric][split].append((record['step'], value))
  metrics = [m for m in ('loss', 'accuracy', 'learning_rate') if m in series]
  metrics += sorted(m for m in series if m not in metrics and m not in ('steps_per_s', 'grad_norm'))
  if not metrics:
    raise ValueError('no metrics to plot')
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for split, points in sorted(series[metric].items()):
      steps, values = zip(*points)
      ax.plot(steps, values, marker='o' if len(points) < 30 else None, ms=3, label=split)
    ax.set_title(metric)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend()
    if metric == 'loss' and all(v > 0 for p in series[metric].values() for _, v in p):
      ax.set_yscale('log')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
