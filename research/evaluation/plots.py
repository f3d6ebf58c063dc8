"""The evaluation's pictures, as PNG files: confusion matrices, ROC curves, a reliability
diagram with its confidence histogram, the most confidently wrong images, a subgroup bar chart.
"""
import numpy as np
from sklearn import metrics as skm

from research.evaluation.metrics import calibration_bins
from research.plotting import plt, save_figure


def confusion_matrices(confusion, names, path) -> str:
  """Counts and row-normalised (each true class's row sums to 1), side by side."""
  confusion = np.asarray(confusion, np.float64)
  rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  size = max(4.0, 0.45 * len(names) + 2)
  fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
  for ax, values, title, fmt in ((axes[0], confusion, 'counts', '.0f'),
                                 (axes[1], rows, 'row-normalised (recall on the diagonal)', '.2f')):
    ax.imshow(values, cmap='Blues')
    ax.set_title(title)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 10 else 0)
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 20:
      for i in range(len(names)):
        for j in range(len(names)):
          ax.text(j, i, format(values[i, j], fmt), ha='center', va='center', fontsize=7,
                  color='white' if values[i, j] > values.max() / 2 else 'black')
  fig.tight_layout()
  return save_figure(fig, path)


def roc_curves(probs, labels, names, path) -> str:
  fig, ax = plt.subplots(figsize=(5.5, 5))
  for k, name in enumerate(names):
    positive = labels == k
    if positive.any() and not positive.all():
      fpr, tpr, _ = skm.roc_curve(positive, probs[:, k])
      ax.plot(fpr, tpr, lw=1, label=f'{name} (AUC {skm.auc(fpr, tpr):.4f})')
  ax.plot([0, 1], [0, 1], 'k:', lw=0.8)
  ax.set_xlabel('false positive rate')
  ax.set_ylabel('true positive rate')
  ax.set_title('one-vs-rest ROC')
  ax.legend(fontsize=6, loc='lower right')
  fig.tight_layout()
  return save_figure(fig, path)


def reliability(probs, labels, path, title: str = '') -> str:
  """Accuracy against confidence per bin (the diagonal is perfect calibration), above the
  histogram of top-label confidences."""
  b = calibration_bins(probs, labels)
  centres = (b['edges'][:-1] + b['edges'][1:]) / 2
  width = b['edges'][1] - b['edges'][0]
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                    gridspec_kw={'height_ratios': [3, 1]})
  used = b['count'] > 0
  top.bar(centres[used], b['accuracy'][used], width=width * 0.9, label='accuracy', alpha=0.8)
  top.bar(centres[used], b['confidence'][used] - b['accuracy'][used], bottom=b['accuracy'][used],
          width=width * 0.9, color='tab:red', alpha=0.4, label='gap to confidence')
  top.plot([0, 1], [0, 1], 'k:', lw=0.8)
  top.set_ylabel('accuracy')
  top.set_title(title or 'reliability (15 equal-width bins)')
  top.legend(fontsize=8)
  bottom.bar(centres, b['count'] / b['count'].sum(), width=width * 0.9, color='gray')
  bottom.set_yscale('log')
  bottom.set_xlabel('top-label confidence')
  bottom.set_ylabel('fraction')
  fig.tight_layout()
  return save_figure(fig, path)


def confidently_wrong(images, probs, labels, names, path, count: int = 24) -> str:
  """The `count` wrong predictions with the highest confidence: true -> predicted (p)."""
  predicted = probs.argmax(axis=1)
  wrong = np.flatnonzero(predicted != labels)
  order = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:count]
  cols = 6
  rows = max(1, -(-len(order) // cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.0 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, i in zip(axes.flat, order):
    image = images[i]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray')
    ax.set_title(f'{names[labels[i]]} -> {names[predicted[i]]}\n({probs[i, predicted[i]]:.3f})',
                 fontsize=7)
  fig.suptitle(f'most confidently wrong ({len(wrong)} wrong in all)')
  fig.tight_layout()
  return save_figure(fig, path)


def audit_bars(result: dict, path, num_classes: int) -> str:
  """Per group: accuracy, and per class FNR, as grouped bars."""
  groups = list(result['by_group'])
  metrics = ['accuracy'] + [f'fnr_{c}' for c in range(num_classes)]
  fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(metrics) * len(groups)), 3.5))
  width = 0.8 / len(groups)
  for i, group in enumerate(groups):
    values = [result['by_group'][group][m] for m in metrics]
    ax.bar(np.arange(len(metrics)) + i * width, values, width, label=group)
  ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=45)
  ax.set_yscale('log')
  ax.set_title('per group: accuracy and per-class false-negative rate (log scale)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)
