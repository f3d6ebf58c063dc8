"""Semantic segmentation: per-pixel losses (losses.py), confusion-matrix and region metrics
(metrics.py), the U-Net weight map (weight_maps.py), tiled inference (tiling.py), the weights
predicted with (inference_weights.py), the final report (report.py) and the `Task` the shared
loop trains (task.py)."""
