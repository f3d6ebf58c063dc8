"""YOLO-style detection of real MNIST digits on synthetic 96x96 canvases (`mnist_detection`).

    python -m research.data.prepare mnist_detection
    python -m experiments.detection --config=configs/detection/mnist_yolo.py \
        --workdir=runs/mnist_yolo

DarknetTiny (16-32-64-128 channels, one residual block per stage) to stride 8: a 12x12 grid
on 96x96 canvases whose digits are 14-40 px tall; 3 anchors from k-means (1 - IoU) on the
training boxes; CIoU box loss; random zoom 0.8-1.2 and shifts up to 10% (no flips: a
mirrored digit is not a digit). AdamW with warmup and cosine decay.

Expected: not measured yet (target: test mAP@0.5 >= 0.95 and COCO mAP@[.5:.95] >= 0.70 within
20 minutes on 2 CPU cores; the loss weights and sizes here are untuned). A 200-step check
(batch 32, 6,400 canvases, a third of an epoch; late November 2026, on 2 cores shared with other
work: ~2.7 steps/s) reached mAP@0.5 0.57 and mAP 0.21 on the first 300 test canvases. The
final report adds test/mAP, test/mAP50, test/mAP75, test/AP/<digit> and detections_test.png
to the workdir.
"""
from research.tasks.detection.config import detection_config


def get_config():
  c = detection_config()
  c.data.name = 'mnist_detection'
  c.model.name = 'darknet_tiny'
  c.model.widths = (16, 32, 64, 128)
  c.model.depths = (1, 1, 1)
  c.detection.num_anchors = 3
  c.detection.head_hidden = 128
  c.detection.max_boxes = 8
  c.detection.scale = (0.8, 1.2)
  c.detection.translate = 0.1
  c.train.batch_size = 64
  c.train.eval_batch_size = 500
  c.train.num_epochs = 10.0
  c.train.log_every = 50
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 300
  return c
