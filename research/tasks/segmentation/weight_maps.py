"""The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2), computed on the host
with scipy's exact Euclidean distance transform, once per ground-truth mask (as the paper
pre-computes it), before augmentation warps it with the image (research/data/paired_augment.py).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

w_c(x) = class_weights[label(x)] balances the class frequencies (`balanced_class_weights`);
d1, d2 are the distances (pixels) from x to the nearest and the second-nearest cell, a cell
being a connected component of the cell class (4-connectivity, skimage.measure.label). The
border term is added on the pixels of the other classes only (the membranes between cells),
where the paper's figure 3d puts it; cell pixels get w_c. Ignored pixels get 0.

Distances beyond `cutoff` (default 6 sigma) are not computed: a pixel whose d1 + d2 exceeds it
gets a border term below w0 exp(-18) (1.5e-7 for w0 = 10), so each cell's distance transform
runs only on its bounding box grown by the cutoff. Exact otherwise (tested against the
untruncated definition).
"""
import numpy as np
from scipy import ndimage
from skimage import measure


def balanced_class_weights(masks, num_classes: int, ignore_label: int = 255) -> np.ndarray:
  """float32 (K,): w_k = 1 / (K f_k), f_k the fraction of valid pixels of class k (absent
  classes get weight 0); the mean weight over the valid pixels is 1."""
  masks = np.asarray(masks)
  counts = np.bincount(masks[masks != ignore_label].ravel(), minlength=num_classes)[:num_classes]
  fractions = counts / max(counts.sum(), 1)
  weights = np.where(counts > 0, 1.0 / (num_classes * np.maximum(fractions, 1e-12)), 0.0)
  return weights.astype(np.float32)


def border_weight_map(mask, *, w0: float = 10.0, sigma: float = 5.0, class_weights=None,
                      cell_class: int = 1, ignore_label: int = 255,
                      cutoff: float | None = None) -> np.ndarray:
  """The weight map of one integer (H, W) mask, float32 (H, W) (see the module doc)."""
  mask = np.asarray(mask)
  cutoff = 6.0 * sigma if cutoff is None else cutoff
  cells = measure.label(mask == cell_class, connectivity=1)
  d1 = np.full(mask.shape, np.inf)
  d2 = np.full(mask.shape, np.inf)
  margin = int(np.ceil(cutoff))
  for index, box in enumerate(ndimage.find_objects(cells), start=1):
    if box is None:
      continue
    window = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size))
                   for s, size in zip(box, mask.shape))
    distance = ndimage.distance_transform_edt(cells[window] != index)
    distance[distance > cutoff] = np.inf
    near1, near2 = d1[window], d2[window]
    closer = distance < near1
    near2[...] = np.where(closer, near1, np.minimum(near2, distance))
    near1[...] = np.where(closer, distance, near1)
  border = w0 * np.exp(-np.square(d1 + d2) / (2.0 * sigma ** 2))  # inf -> 0
  weights = (np.ones(mask.shape) if class_weights is None
             else np.asarray(class_weights, np.float64)[np.where(mask == ignore_label, 0, mask)])
  out = weights + np.where(mask != cell_class, border, 0.0)
  return np.where(mask == ignore_label, 0.0, out).astype(np.float32)
