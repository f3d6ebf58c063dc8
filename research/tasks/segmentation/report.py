"""The end-of-run report of a segmentation experiment (the Task's `final_report`), on the
reported checkpoint:

- `report/<split>/...`: the report split's whole images predicted as configured (tiled when a
  tile size is set, with test-time augmentation if asked: research/tasks/segmentation/
  tiling.py): pixel_accuracy, iou_<class>, dice_<class>, mean_iou, mean_dice from one summed
  confusion matrix, and with region scores the ISBI 2012 adapted Rand error and variation of
  information (metrics.region_scores), averaged over the images.
- `baseline/<split>/...`: the same numbers for predicting the training set's majority class
  everywhere (what a model that learned nothing scores).
- With `segmentation.decision = 'fitted'`, the predicted class is argmax_k(log p_k + b_k), the
  per-class offsets b fitted on the training split's whole images to maximise pixel accuracy
  there (`fit_decision_offsets`; for two classes, a threshold on p(class 0) other than 1/2):
  a loss such as soft Dice skews the probabilities, so the argmax is not the decision of
  fewest wrong pixels. `report/decision` says which rule and offsets; the argmax's own pixel
  scores stay beside as `report/<split>/argmax/...`.
- `report/weights`, where segmentation.average_checkpoints or segmentation.batch_stats ask for
  other weights than the reported checkpoint's (inference_weights.py): which ones predicted.
- PNGs in `<workdir>/report/`: `<split>_<id>.png`, one row per example of the report split:
  image | ground truth | prediction | errors (red: wrong, black: right, grey: ignored);
  class colours: class 0 black, the last class white, others grey levels between.
- `<workdir>/predictions/<split>/<id>.png`: the predicted masks of the prediction split (e.g.
  ISBI's 30 unlabelled test slices), grey levels class * 255 / (K - 1) (for 2 classes 0 and
  255, the ISBI label convention: 0 = membrane, 255 = cell).
Only process 0 writes files; every process computes the numbers.
"""
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from research.tasks.segmentation import metrics, tiling
from research.training.task import variables as _variables


def _png(array: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def class_grey(mask: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
  """uint8 grey levels class * 255 / (K - 1); ignored pixels 128."""
  grey = (np.asarray(mask, np.float64) * 255.0 / (num_classes - 1)).round()
  return np.where(mask == ignore_label, 128, np.clip(grey, 0, 255)).astype(np.uint8)


def overlay_row(image, truth, predicted, num_classes: int, ignore_label: int) -> np.ndarray:
  """uint8 RGB (H, 4 W + 3 gaps, 3): image | ground truth | prediction | error map."""
  image = np.asarray(image)
  grey = image[..., 0] if image.shape[-1] == 1 else None
  rgb = np.repeat(grey[..., None], 3, -1) if grey is not None else image[..., :3]
  to_rgb = lambda m: np.repeat(class_grey(m, num_classes, ignore_label)[..., None], 3, -1)
  errors = np.zeros(rgb.shape, np.uint8)
  errors[(predicted != truth) & (truth != ignore_label)] = (255, 0, 0)
  errors[truth == ignore_label] = (128, 128, 128)
  gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
  return np.concatenate([rgb.astype(np.uint8), gap, to_rgb(truth), gap, to_rgb(predicted), gap,
                         errors], axis=1)


def majority_class(masks, num_classes: int, ignore_label: int) -> int:
  masks = np.asarray(masks)
  return int(np.argmax(np.bincount(masks[masks != ignore_label].ravel(), minlength=num_classes)))


DECISIONS = ('argmax', 'fitted')
OFFSET_GRID = np.round(np.arange(-1.0, 1.0001, 0.02), 2)  # log-probability units


def fit_decision_offsets(log_probs, truth, ignore_label: int = 255, grid=OFFSET_GRID,
                         sweeps: int = 2) -> np.ndarray:
  """float64 offsets b (K,), b[0] = 0, of the decision argmax_k(log p_k + b_k) that gets the
  most pixels of `truth` (N, H, W) right, ignored pixels left out, from log-probabilities
  (N, H, W, K): coordinate ascent over b_1..b_{K-1} on `grid` (`sweeps` passes; a tie keeps
  the offset nearest 0). For two classes it is exact over the grid: class 0 is predicted where
  p_0 > 1 / (1 + exp(-b_1)), a threshold on p_0. Each coordinate costs one sort of the pixels'
  margins (O(P log P)), not one pass per grid value."""
  log_probs = np.asarray(log_probs, np.float32)
  valid = np.asarray(truth) != ignore_label
  lp, truth = log_probs[valid], np.asarray(truth)[valid]  # (P, K), (P,)
  k_classes = lp.shape[-1]
  grid = np.asarray(grid, np.float64)
  offsets = np.zeros(k_classes)
  order = sorted(range(len(grid)), key=lambda i: abs(grid[i]))  # ties: nearest 0 first
  for _ in range(sweeps if k_classes > 2 else 1):
    for k in range(1, k_classes):
      others = np.delete(lp + offsets.astype(np.float32), k, axis=1)
      best_other = np.delete(np.arange(k_classes), k)[others.argmax(1)]
      margin = (others.max(1) - lp[:, k]).astype(np.float64)
      # Class k wins where b_k > margin; on a tie where k is the lower index (argmax's rule).
      gain = (truth == k).astype(np.int64) - (truth == best_other)  # k winning instead
      correct = np.full(len(grid), np.count_nonzero(truth == best_other), np.int64)
      for lower, side in ((best_other < k, 'left'), (best_other > k, 'right')):
        m = margin[lower]
        sorted_at = np.argsort(m, kind='stable')
        gained = np.concatenate([[0], np.cumsum(gain[lower][sorted_at])])
        correct += gained[np.searchsorted(m[sorted_at], grid, side=side)]
      offsets[k] = grid[order[int(np.argmax(correct[order]))]]
  return offsets


def decide(log_probs, offsets=None) -> np.ndarray:
  """int class maps (N, H, W): argmax_k(log p_k + offsets_k) (offsets None: the argmax)."""
  log_probs = np.asarray(log_probs)
  if offsets is None:
    return log_probs.argmax(-1)
  return (log_probs + np.asarray(offsets, log_probs.dtype)).argmax(-1)


def describe_decision(offsets, split: str = '', num_images: int = 0) -> str:
  """What decides each pixel: 'argmax' (offsets None), else the offsets and where they were
  fitted (`split`, `num_images` images)."""
  if offsets is None:
    return 'argmax'
  text = f'argmax of log-probabilities + offsets {tuple(round(float(b), 2) for b in offsets)}'
  if len(offsets) == 2:
    text += f' (class 0 where p_0 > {1 / (1 + np.exp(-offsets[1])):.3f})'
  return text + f', fitted on {split} ({num_images} images) for pixel accuracy'


def predict_logits(apply, preprocess, images, *, tile_size: int = 0, tile_overlap: int = 0,
                   tile_weighting: str = 'gaussian', tta: str = '', size_multiple: int = 1):
  """float32 logits (N, H, W, K) of uint8 images (N, H, W, C): each image preprocessed, then
  predicted whole (tile_size 0) or in tiles, averaged over the `tta` views (tiling.py).
  `apply(float images) -> logits` is the model in eval mode (jitted). A preprocess that pads
  (eval_ops 'pad(m)|normalize': mirrored context, the U-Net paper's overlap-tile strategy) is
  undone on the logits: the centre H x W is kept."""
  logits = []
  for image in images:
    x = np.asarray(preprocess(image[None]))
    tile = tile_size or x.shape[1:3]
    overlap = tile_overlap if tile_size else 0
    out = tiling.tiled_predict(apply, x, tile, overlap, weighting=tile_weighting, tta=tta,
                               size_multiple=size_multiple)[0]
    top, left = ((p - s) // 2 for p, s in zip(out.shape[:2], image.shape[:2]))
    logits.append(out[top:top + image.shape[0], left:left + image.shape[1]])
  return np.stack(logits)


def scores(predicted, truth, num_classes: int, class_names, ignore_label: int = 255,
           region_scores: bool = False, cell_class: int = 1, distance=None) -> dict:
  """Pixel scores of predicted masks (N, H, W) against `truth` from one summed confusion
  matrix (metrics.scores), pixel accuracy near the ground truth's boundaries
  (metrics.trimap_scores; `distance` the truth's boundary distances, computed here if None),
  plus with `region_scores` the ISBI adapted Rand error and variation of information averaged
  over the images."""
  confusion = metrics.confusion_matrix(jnp.asarray(predicted), jnp.asarray(truth), num_classes,
                                       ignore_label)
  out = metrics.scores(np.asarray(confusion), class_names)
  out.update(metrics.trimap_scores(predicted, truth, num_classes, ignore_label,
                                   distance=distance))
  if region_scores:
    regions = [metrics.region_scores(p, t, cell_class) for p, t in zip(predicted, truth)]
    out.update({k: float(np.mean([r[k] for r in regions])) for k in regions[0]})
  return out


def inference_description(tile_size: int, tile_overlap: int, tile_weighting: str, tta: str) -> str:
  text = (f'{tile_size}x{tile_size} tiles, overlap {tile_overlap}, {tile_weighting}' if tile_size
          else 'whole images')
  if tta:
    text += f', {len(tiling.views(tta))}-fold test-time augmentation ({tta})'
  return text


def make_final_report(model, preprocess, *, report_name: str = '', report_split=None,
                      predict_name: str = '', predict_split=None, num_classes: int, class_names,
                      ignore_label: int = 255, majority: int = 0, region_scores: bool = False,
                      cell_class: int = 1, tile_size: int = 0, tile_overlap: int = 0,
                      tile_weighting: str = 'gaussian', tta: str = '', overlays: int = 0,
                      fit_split=None, fit_name: str = '', inference_weights=None):
  """`final_report(state, workdir) -> {name: value}` (see the module doc). `report_split`,
  `predict_split` and `fit_split` (the split the decision offsets are fitted on, named
  `fit_name`; None: argmax) are research/data/segmentation.SegmentationSplit (whole splits);
  `preprocess(uint8 images) -> float images` is the evaluation pipeline;
  `inference_weights` (inference_weights.make_inference_weights; None: the state's own) gives
  the weights predicted with, described as `report/weights`."""
  size_multiple = getattr(model, 'size_multiple', 1)

  # The variables are an argument of the compiled function, not constants folded into it.
  apply_jit = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def predict_all(weights, split):
    apply = functools.partial(apply_jit, _variables(*weights))
    logits = predict_logits(apply, preprocess, split.images, tile_size=tile_size,
                            tile_overlap=tile_overlap, tile_weighting=tile_weighting, tta=tta,
                            size_multiple=size_multiple)
    return np.asarray(jax.nn.log_softmax(logits, axis=-1))

  score = lambda predicted, truth, distance: scores(predicted, truth, num_classes, class_names,
                                                    ignore_label, region_scores, cell_class,
                                                    distance)

  def final_report(state, workdir: str) -> dict:
    results, writing = {}, jax.process_index() == 0
    weights = (state.params, state.batch_stats)
    if inference_weights is not None:
      *weights, results['report/weights'] = inference_weights(*weights, workdir, int(state.step))
    offsets = None
    if fit_split is not None:
      offsets = fit_decision_offsets(predict_all(weights, fit_split), fit_split.masks, ignore_label)
    results['report/decision'] = describe_decision(
        offsets, fit_name, 0 if fit_split is None else len(fit_split))
    if report_split is not None:
      log_probs = predict_all(weights, report_split)
      predicted = decide(log_probs, offsets)
      truth = report_split.masks
      distance = metrics.boundary_distances(truth, num_classes, ignore_label)
      results.update({f'report/{report_name}/{k}': v
                      for k, v in score(predicted, truth, distance).items()})
      if offsets is not None:
        argmax = scores(log_probs.argmax(-1), truth, num_classes, class_names, ignore_label,
                        distance=distance)
        results.update({f'report/{report_name}/argmax/{k}': v for k, v in argmax.items()})
      baseline = np.full_like(truth, majority)
      results.update({f'baseline/{report_name}/{k}': v
                      for k, v in score(baseline, truth, distance).items()})
      if writing and overlays:
        folder = epath.Path(workdir) / 'report'
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(overlays, len(truth))):
          row = overlay_row(report_split.images[i], truth[i], predicted[i], num_classes, ignore_label)
          (folder / f'{report_name}_{report_split.ids[i]}.png').write_bytes(_png(row))
    if predict_split is not None:
      predicted = decide(predict_all(weights, predict_split), offsets)
      if writing:
        folder = epath.Path(workdir) / 'predictions' / predict_name
        folder.mkdir(parents=True, exist_ok=True)
        for mask, example_id in zip(predicted, predict_split.ids):
          (folder / f'{example_id}.png').write_bytes(_png(class_grey(mask, num_classes, ignore_label)))
      results[f'predictions/{predict_name}'] = len(predicted)
    results['report/inference'] = inference_description(tile_size, tile_overlap,
                                                        tile_weighting, tta)
    return results

  return final_report
