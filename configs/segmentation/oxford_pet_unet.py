"""U-Net on the Oxford-IIIT Pet trimaps (Parkhi et al. 2012; tfds `oxford_iiit_pet`): 3 classes
per pixel, pet / background / border, at 128x128.

    python -m research.data.prepare oxford_iiit_pet     # needs internet (no manual files here)
    python -m experiments.segmentation --config=configs/segmentation/oxford_pet_unet.py \
        --workdir=runs/oxford_pet_unet

The trimaps store 1 (pet), 2 (background), 3 (border, not classified); label_offset -1 makes
them class indices 0, 1, 2. Images and masks are resized to 128x128 on load (bilinear /
nearest). Trained on the 3,680 `train` images, evaluated on the 3,669 `test` images. Not run
here (no internet to prepare the data); tested on tfds mock data only
(tests/test_segmentation_experiment.py).
"""
from research.tasks.segmentation.config import base_config


def get_config():
  c = base_config()
  c.data.name = 'oxford_iiit_pet'
  c.data.train_split = 'train'
  c.data.eval_splits = {'test': 'test'}
  c.data.label_key = 'segmentation_mask'
  c.data.train_ops = 'random_crop(112)|flip_lr|rotate(10)|brightness(0.1)|contrast(0.2)|normalize'
  c.data.eval_ops = 'normalize'
  c.model.name = 'unet'
  c.model.depth = 4
  c.model.base_width = 32
  c.train.loss = 'ce+dice'
  c.train.batch_size = 32
  c.train.eval_batch_size = 64
  c.train.num_epochs = 20.0
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 200
  s = c.segmentation
  s.num_classes = 3
  s.class_names = ('pet', 'background', 'border')
  s.label_offset = -1
  s.image_size = 128
  s.report_split = 'test'
  s.overlays = 8
  return c
