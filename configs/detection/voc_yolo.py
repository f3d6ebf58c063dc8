"""YOLOv3-style detection on PASCAL VOC 2007 (tfds `voc/2007`, 20 classes), ResNet-18 backbone.

    python -m research.data.prepare voc/2007     # needs internet: tfds downloads VOC itself
    python -m experiments.detection --config=configs/detection/voc_yolo.py \
        --workdir=runs/voc_yolo

Training on VOC 2007 trainval (5,011 images), COCO-style mAP on its test set (4,952 images;
VOC's 'difficult' objects dropped from both, as VOC's own evaluation ignores them). Every
image is resized to 416x416 (bilinear, boxes stretched with it: VOC's images differ in size).
ResNet-18 from scratch, the YOLO head at stride 16 on stage3 (26x26) with stage4 (13x13)
brought in by YOLOv3's top-down path; 6 anchors from k-means (1 - IoU) on the training boxes;
CIoU box loss, IoU-aware objectness; horizontal flips, zoom 0.75-1.25 and shifts up to 10%,
switched off for the last 5 epochs (as in configs/detection/mnist_yolo.py, where boxes trained
on resampled images to the end came out too small); AdamW with warmup and cosine decay.

Not measured: these machines reach no dataset server, so VOC cannot be downloaded here. The
config is tested end to end on tfds mock data (tests/test_detection_data.py: a few steps of
this config on hand-made VOC-shaped records, at 64x64 and 4 steps); no result is claimed.
"""
from research.tasks.detection.config import detection_config


def get_config():
  c = detection_config()
  c.data.name = 'voc/2007'
  c.data.train_split = 'train+validation'
  c.data.eval_splits = {'test': 'test'}
  c.model.name = 'resnet18'
  c.detection.image_size = (416, 416)
  c.detection.drop_difficult = True
  c.detection.max_boxes = 64               # an image with more is an error that names it
  c.detection.num_anchors = 6
  c.detection.feature = 'stage3'           # stride 16
  c.detection.merge_feature = 'stage4'     # stride 32, upsampled onto it
  c.detection.head_hidden = 256
  c.detection.flip_prob = 0.5
  c.detection.scale = (0.75, 1.25)
  c.detection.translate = 0.1
  c.detection.no_augment_epochs = 5.0
  c.detection.box_weight = 2.0
  c.detection.object_target_iou = 1.0
  c.train.batch_size = 32
  c.train.eval_batch_size = 64
  c.train.num_epochs = 100.0
  c.train.log_every = 50
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 1000
  return c
