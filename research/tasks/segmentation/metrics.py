"""Segmentation metrics over a whole split, from one confusion matrix summed over batches,
devices and processes (never a mean of per-batch means), and the ISBI 2012 region scores.

`confusion_matrix` counts pixels by (true class, predicted class) as int32 (K, K), rows =
true class; ignored pixels (label == ignore_label) and padding rows count for nothing. From the
summed matrix C (`scores`):

  pixel_accuracy = trace(C) / sum(C)
  iou_<class k>  = C_kk / (sum_j C_kj + sum_i C_ik - C_kk)     (Jaccard; TP / (TP + FP + FN))
  dice_<class k> = 2 C_kk / (sum_j C_kj + sum_i C_ik)          (F1; 2 TP / (2 TP + FP + FN))
  mean_iou, mean_dice = the means over the classes whose value is defined

A class absent from both the labels and the predictions has 0/0: its IoU and Dice are NaN
(reported as such) and left out of the means; a class absent from the labels but predicted
somewhere has IoU 0. pixel_accuracy is NaN for an empty split.

`region_scores` (ISBI 2012, Arganda-Carreras et al. 2015): cells are the connected components
(4-connectivity, skimage.measure.label) of the cell class in the prediction and in the ground
truth; the predicted cells are first grown over the predicted membrane pixels (each such pixel
joins its nearest predicted cell, skimage.segmentation.expand_labels), so that the prediction
is a partition as the challenge's thresholded boundary maps were made into. Scores are
foreground-restricted, as in the challenge: ground-truth membrane pixels are ignored
(`ignore_labels=(0,)`). Adapted Rand error (skimage.metrics.adapted_rand_error: 1 - the
F-score of the pixel pairs that share a segment in both segmentations, against the pairs that
share one in each) and variation of information (skimage.metrics.variation_of_information,
bits; split = H(prediction | truth), merge = H(truth | prediction)). Lower is better for all.

`trimap_scores` (after the "trimap" of Kohli et al. 2009, which DeepLab, Chen et al. 2015,
used for accuracy near object boundaries): each labelled pixel's distance to the ground
truth's nearest labelled pixel of another class (Euclidean, in pixels, scipy's
distance_transform_edt: 1 for a 4-neighbour, sqrt 2 for a diagonal one, so the 1-pixel band
holds one pixel on each side of a boundary); for each band width w, pixel accuracy over the
pixels within w pixels of a boundary (trimap_accuracy_<w>px; NaN where the band is empty) and
the share of all wrong pixels that lie in it (trimap_error_share_<w>px; NaN without wrong
pixels). Ignored pixels neither count nor make boundaries: where an ignore ring separates the
classes (PASCAL VOC's void borders), the narrow bands measure from its far side (DeepLab's
bands were built around the void ring instead). They tell boundary placement, where
annotators disagree with each other, from errors inside regions.
"""
import jax.numpy as jnp
import numpy as np


def labelled(labels, num_classes: int, ignore_label: int = 255):
  """True where a label (NumPy or JAX array) is one of the classes 0..K-1, not the ignore label."""
  return (labels != ignore_label) & (labels >= 0) & (labels < num_classes)


def confusion_matrix(predictions, labels, num_classes: int, ignore_label: int = 255,
                     example_mask=None):
  """int32 (K, K) pixel counts, rows = true class, columns = predicted class. `predictions`
  and `labels` integer (N, H, W); `example_mask` (N,) 0/1 drops padding rows."""
  labels = labels.astype(jnp.int32)
  valid = labelled(labels, num_classes, ignore_label)
  if example_mask is not None:
    valid &= (example_mask > 0).reshape((-1,) + (1,) * (labels.ndim - 1))
  index = jnp.where(valid, labels * num_classes + predictions.astype(jnp.int32), 0)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index.ravel()].add(
      valid.ravel().astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def segmentation_sums(logits, labels, per_example_loss, example_mask, num_classes: int,
                      ignore_label: int = 255) -> dict:
  """{'loss': sum of per-example losses, 'count': examples, 'confusion': (K, K)} of a batch."""
  predictions = jnp.argmax(logits, axis=-1)
  return {'loss': jnp.sum(per_example_loss * example_mask), 'count': jnp.sum(example_mask),
          'confusion': confusion_matrix(predictions, labels, num_classes, ignore_label,
                                        example_mask)}


def scores(confusion, class_names) -> dict[str, float]:
  """pixel_accuracy, iou_<name>, dice_<name>, mean_iou, mean_dice from a (K, K) matrix."""
  c = np.asarray(confusion, np.float64)
  tp, true, predicted = np.diag(c), c.sum(axis=1), c.sum(axis=0)
  with np.errstate(invalid='ignore', divide='ignore'):
    iou = tp / (true + predicted - tp)
    dice = 2 * tp / (true + predicted)
    out = {'pixel_accuracy': float(np.trace(c) / c.sum()) if c.sum() else float('nan')}
  for k, name in enumerate(class_names):
    out[f'iou_{name}'], out[f'dice_{name}'] = float(iou[k]), float(dice[k])
  defined = ~np.isnan(iou)
  out['mean_iou'] = float(iou[defined].mean()) if defined.any() else float('nan')
  out['mean_dice'] = float(dice[defined].mean()) if defined.any() else float('nan')
  return out


def finalize(sums: dict, class_names) -> dict[str, float]:
  """The reported numbers of an evaluation: the mean loss per example and `scores`."""
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / max(count, 1.0), **scores(sums['confusion'], class_names)}


TRIMAP_WIDTHS = (1, 2, 4, 8)


def boundary_distance(truth, num_classes: int, ignore_label: int = 255) -> np.ndarray:
  """float64 (H, W): each pixel's distance in pixels to the nearest labelled pixel of another
  class of the (H, W) `truth` (module doc); inf where there is none (one class only, or an
  ignored pixel)."""
  from scipy import ndimage
  truth = np.asarray(truth)
  scored = labelled(truth, num_classes, ignore_label)
  distance = np.full(truth.shape, np.inf)
  for k in np.unique(truth[scored]):
    other = scored & (truth != k)
    if other.any():
      mine = scored & (truth == k)
      distance[mine] = ndimage.distance_transform_edt(~other)[mine]
  return distance


def boundary_distances(truth, num_classes: int, ignore_label: int = 255) -> np.ndarray:
  """float32 (N, H, W) boundary_distance of each of the (N, H, W) masks."""
  return np.stack([boundary_distance(t, num_classes, ignore_label) for t in np.asarray(truth)]
                  ).astype(np.float32)


def trimap_scores(predicted, truth, num_classes: int, ignore_label: int = 255,
                  widths=TRIMAP_WIDTHS, distance=None) -> dict[str, float]:
  """trimap_accuracy_<w>px and trimap_error_share_<w>px (module doc) of predicted masks
  (N, H, W) against `truth` (N, H, W), over all the images' pixels together; `distance`: the
  truth's boundary_distances, if already computed (they depend on the truth only)."""
  predicted, truth = np.asarray(predicted), np.asarray(truth)
  scored = labelled(truth, num_classes, ignore_label)
  if distance is None:
    distance = boundary_distances(truth, num_classes, ignore_label)
  wrong = scored & (predicted != truth)
  total_wrong = wrong.sum()
  out = {}
  for w in widths:
    band = scored & (distance <= w)
    band_wrong = wrong[band].sum()
    out[f'trimap_accuracy_{w}px'] = (float(1 - band_wrong / band.sum()) if band.any()
                                     else float('nan'))
    out[f'trimap_error_share_{w}px'] = (float(band_wrong / total_wrong) if total_wrong
                                        else float('nan'))
  return out


def cell_regions(mask, cell_class: int = 1, expand: bool = False) -> np.ndarray:
  """int (H, W) labels of the connected components (4-connectivity) of the cell class, 0
  elsewhere; with `expand`, every other pixel joins its nearest component."""
  from skimage import measure, segmentation
  regions = measure.label(np.asarray(mask) == cell_class, connectivity=1)
  if expand and regions.max() > 0:
    regions = segmentation.expand_labels(regions, distance=float(sum(regions.shape)))
  return regions


def region_scores(predicted_mask, true_mask, cell_class: int = 1,
                  expand_prediction: bool = True) -> dict[str, float]:
  """ISBI 2012 scores of one slice (see the module doc): adapted_rand_error, vi_split,
  vi_merge, vi (= split + merge)."""
  from skimage import metrics
  truth = cell_regions(true_mask, cell_class)
  test = cell_regions(predicted_mask, cell_class, expand_prediction)
  error, _, _ = metrics.adapted_rand_error(truth, test, ignore_labels=(0,))
  split, merge = metrics.variation_of_information(truth, test, ignore_labels=(0,))
  return {'adapted_rand_error': float(error), 'vi_split': float(split), 'vi_merge': float(merge),
          'vi': float(split + merge)}
