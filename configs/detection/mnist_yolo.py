"""YOLO-style detection of real MNIST digits on synthetic 96x96 canvases (`mnist_detection`).

    python -m research.data.prepare mnist_detection
    python -m experiments.detection --config=configs/detection/mnist_yolo.py \
        --workdir=runs/mnist_yolo

DarknetTiny (16-32-64-128 channels, one residual block per stage) with the YOLO head at stride
4: a 24x24 grid on 96x96 canvases whose digits are 14-40 px tall, reading stage2 (24x24x64) with
stage3 (12x12x128) brought in by YOLOv3's top-down path (`detection.merge_feature`: 1x1 conv,
x2 upsampling, concatenation); head 3x3 conv of 64 channels; 291,975 parameters. 3 anchors from
k-means (1 - IoU) on the training boxes; CIoU box loss (weight 2) and IoU-aware objectness
(target = the box's IoU, YOLOv5); random zoom 0.8-1.2 and shifts up to 10% (no flips: a
mirrored digit is not a digit), switched off for the last 2 epochs (YOLOX's closing epochs
without augmentation). AdamW with warmup and cosine decay, 10 epochs of the 20,000 training
canvases (3,120 steps at batch 64; unaugmented from step 2,496).

After NMS, box voting at IoU 0.7 (`detection.vote_iou`; chosen on the first 2,000 training
canvases of the seed-0 model: mAP there 0.7133 without voting, 0.7163 / 0.7172 / 0.7191 /
0.7176 at 0.5 / 0.6 / 0.7 / 0.8).

Measured (2026-11-30, 2 Intel Xeon (Sapphire Rapids) cores, seed 0, nothing else running), on
the 2,000 test canvases (real MNIST test digits; the arrangement is synthetic): COCO
mAP@[.5:.95] 0.7131, mAP@0.5 0.9589, mAP@0.75 0.8812; AP per digit 0-9: 0.777 0.590 0.721 0.728
0.692 0.703 0.740 0.717 0.729 0.734 (thin 1s are the hardest to box tightly); 20 min 25 s for
the whole command (median 2.8 steps/s). Without voting the same training (identical logged
losses) gave 0.7067 / 0.9590 / 0.8597 in 18 min 27 s (median 3.0 steps/s): this machine's speed
varies, and the run sits at the 20-minute limit (voting adds one small matrix product per
image). The accuracy targets are met (mAP@0.5 >= 0.95, mAP@[.5:.95] >= 0.70).
Seed 1 (`--config.seed=1`): 0.7070 / 0.9614 / 0.8699 with voting, 0.6987 / 0.9606 / 0.8518
without (its checkpoint re-evaluated by the final report's own functions).
Why the unaugmented epochs: trained on zoomed and shifted canvases to the end (the same recipe
otherwise), the model's boxes came out 0.6 px too narrow and 1.1 px too short on average (on
training canvases as on test ones; a likely cause: bilinear resampling spreads faint ink beyond
the box that was drawn tight at ink >= 64), mAP@[.5:.95] 0.6711 (mAP@0.5 0.9542, mAP@0.75
0.8123) in 19 min 49 s.
From that checkpoint, 400 more steps without augmentation gave 0.7080, the same 400 steps with
it 0.6665; this config's boxes are off by less than 0.04 px on average.
Earlier recipes: head at stride 8 on stage3 (128-channel head, 12 epochs, 360,391 parameters,
augmented throughout): mAP 0.6670, mAP@0.5 0.9487, mAP@0.75 0.8040 in 17 min 48 s; the same
with YOLOv3's objectness target 1, box weight 1 and 10 epochs: 0.6367 / 0.9489 / 0.7589 in
14 min 26 s. The final report adds test/mAP, test/mAP50, test/mAP75, test/AP/<digit> and
detections_test.png to the workdir.
"""
from research.tasks.detection.config import detection_config


def get_config():
  c = detection_config()
  c.data.name = 'mnist_detection'
  c.model.name = 'darknet_tiny'
  c.model.widths = (16, 32, 64, 128)
  c.model.depths = (1, 1, 1)
  c.detection.num_anchors = 3
  c.detection.feature = 'stage2'          # stride 4
  c.detection.merge_feature = 'stage3'    # stride 8, upsampled onto it
  c.detection.head_hidden = 64
  c.detection.max_boxes = 8
  c.detection.scale = (0.8, 1.2)
  c.detection.translate = 0.1
  c.detection.no_augment_epochs = 2.0
  c.detection.box_weight = 2.0
  c.detection.object_target_iou = 1.0
  c.detection.vote_iou = 0.7              # box voting, chosen on training canvases
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
