"""Pictures of detections: images with their true and predicted boxes."""
import math

import numpy as np

from research.plotting import plt, save_figure


def plot_detections(images, truth: dict, detections: dict, path, class_names=None,
                    min_score: float = 0.3, title: str = '') -> str:
  """A grid of images (N, H, W, C) uint8 or float with the true boxes (green, dashed, class
  name) and the detections scoring >= min_score (red, 'class score'); boxes are xyxy pixels,
  `truth` {'boxes', 'classes', 'mask'} and `detections` {'boxes', 'scores', 'classes', 'valid'}
  with a leading N axis. Writes a PNG to `path` (local or remote)."""
  images = np.asarray(images, np.float32)
  n = len(images)
  names = (lambda c: class_names[int(c)]) if class_names is not None else (lambda c: str(int(c)))
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.4), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i >= n:
      continue
    image = images[i]
    lo, hi = image.min(), image.max()
    image = (image - lo) / (hi - lo) if hi > lo else image * 0
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray',
              interpolation='nearest')
    for box, cls, valid in zip(truth['boxes'][i], truth['classes'][i], truth['mask'][i]):
      if valid:
        x1, y1, x2, y2 = box
        ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                   edgecolor='lime', linestyle='--', linewidth=1))
        ax.text(x1, y2 + 0.5, names(cls), color='lime', fontsize=6, va='top')
    for box, score, cls, valid in zip(detections['boxes'][i], detections['scores'][i],
                                      detections['classes'][i], detections['valid'][i]):
      if valid and score >= min_score:
        x1, y1, x2, y2 = box
        ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                   edgecolor='red', linewidth=1))
        ax.text(x1, y1 - 0.5, f'{names(cls)} {score:.2f}', color='red', fontsize=6)
  fig.suptitle(title or 'true boxes (green, dashed) and detections with score >= '
               f'{min_score} (red)', fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)
