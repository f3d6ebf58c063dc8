"""Plots a person looks at: training curves from metrics.jsonl, image grids.

Files are written through etils.epath, so a path may be local or remote (gs://...).
"""
import collections
import io

import matplotlib
from etils import epath

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path, dpi: int = 100) -> str:
  """Writes `fig` as PNG to `path` (local or remote) and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi)
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())
  return str(path)


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
  return save_figure(fig, path)


def _grid(images, path: str, title: str, cmap: str = 'viridis', cell: float = 1.3) -> str:
  """Saves images (N, H, W) or (N, H, W, 3) as a near-square grid of panels."""
  import math

  import numpy as np
  n = len(images)
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.5), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i < n:
      image = np.asarray(images[i], dtype=np.float32)
      lo, hi = image.min(), image.max()
      ax.imshow((image - lo) / (hi - lo) if hi > lo else image * 0, cmap=cmap,
                interpolation='nearest')
      ax.set_title(str(i), fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path)


def plot_feature_maps(feature_map, path: str, title: str = 'feature maps') -> str:
  """One panel per channel of a (H, W, C) feature map, each scaled to its own range."""
  return _grid(feature_map.transpose(2, 0, 1), path, title)


def plot_kernels(kernel, path: str, title: str = 'first-layer kernels') -> str:
  """A conv kernel (kh, kw, in, out): RGB panels for 3 input channels, else the channel mean."""
  kernel = kernel.transpose(3, 0, 1, 2)
  panels = kernel if kernel.shape[-1] == 3 else kernel.mean(axis=-1)
  return _grid(panels, path, title, cmap='gray')


def plot_image(image, path: str, title: str = '') -> str:
  """The input image itself, for reference beside its feature maps."""
  return _grid(image[None] if image.shape[-1] == 3 else image[None, ..., 0], path, title,
               cmap='gray', cell=3.0)
