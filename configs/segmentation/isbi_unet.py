"""U-Net on the ISBI 2012 EM membrane segmentation data (research/data/builders/isbi2012_em.py),
sized for 2 CPU cores.

    python -m research.data.prepare isbi2012_em          # once, offline
    python -m experiments.segmentation --config=configs/segmentation/isbi_unet.py \
        --workdir=runs/isbi_unet

Training: the 25 slices 0-24, random 128x128 crops with left-right flips and brightness/contrast
jitter, on device. No flips up/down or 90-degree rotations: the labels sit above the membranes
they mark (tests/test_segmentation_data.py; by about 0.5-0.75 px, going by a probe of a trained
model), a network trained with all 8 symmetries cannot learn that offset, and it cost 0.5 points
of pixel accuracy (configs/segmentation/isbi_orientation_ablation.py). No elastic deformation:
it cost pixel accuracy and Dice in configs/segmentation/isbi_loss_ablation.py and, on a
2,400-step run (seed 1, Adam 1e-3, no dropout, no TTA), 0.17 points of pixel accuracy (add
`elastic(3, 10)` to data.train_ops for the paper's).
Validation: slices 25-29, whole 512x512 images (the test labels were never published, so every
number reported here is a validation number). The final report adds, on the validation slices,
pixel metrics with 2-fold (left-right) test-time augmentation, the ISBI adapted Rand error and
variation of information, the majority-class baseline, overlay PNGs (report/), and the
predicted masks of the 30 test slices (predictions/test/<slice>.png, 0 = membrane).

Model: U-Net depth 4, base width 16 (1,942,306 parameters), BatchNorm, transposed-conv
upsampling, dropout 0.5 after the bottleneck; cross-entropy + soft Dice; Adam 3e-3, 50 warmup
steps and cosine decay, 3,600 steps at batch 4.

Measured (2026-12-01, 2 Intel Xeon (Sapphire Rapids) cores, nothing else running): the whole
command takes 7 min 54 s (seed 0; summary.json's wall_time_s 470: training at ~8 steps/s, an
evaluation every 600 steps, the report). On validation slices 25-29 (whole images, flip_lr TTA),
seed 0: pixel accuracy 0.9283, membrane Dice 0.8196 (IoU 0.6943), cell Dice 0.9552, mean IoU
0.8043, adapted Rand error 0.049, variation of information 0.233; seed 1 (the same config run by
a sweep, without overlays and test predictions): 0.9282, 0.8203, adapted Rand error 0.114. The
all-cell baseline: pixel accuracy 0.8010, membrane Dice 0, adapted Rand error 0.907, VI 5.22.
Without TTA (the loop's evaluation at step 3,600, seed 0): 0.9277 and 0.8182. On its own 25
training slices (evaluation mode, no TTA; a probe script) the seed-0 model scores 0.9312 (0.910
to 0.947 per slice): it does not overfit. Short of the pixel-accuracy target (0.93); membrane
Dice and the Rand error reach theirs. The same config on one core (a sweep with --parallel=2
pins each run to a core) gave 0.9287 for seed 0: XLA:CPU's float results depend on its thread
count.
Also measured on the Xeon (validation, flip_lr TTA; seed 0 unless said): Adam 1e-3: 0.9270 and
0.9280 for seeds 0 and 1 (Dice 0.8160, 0.8204; adapted Rand error 0.102, 0.103; 7 min 22 s and 6 min
51 s); CE alone at 3e-3: 0.9287, Dice 0.8190; Adam 1e-3 at base width 32 (7,762,498 parameters),
3,000 steps: 0.9281, Dice 0.8199, adapted Rand error 0.139, 18 min 44 s; Adam 1e-3 with 256x256
crops, no dropout, 3,000 steps: 0.9263, Dice 0.8145, 18 min 19 s (its training pixel accuracy
reached 0.95: it overfits). The earlier config (256 crops with flips up/down and rotations, width
32, no dropout, Adam 1e-3, 1,000 steps, 8-fold TTA): 0.9236, Dice 0.8080, adapted Rand error 0.045,
28 min 54 s. On 2 AMD EPYC cores, which train this config at ~4.5 steps/s (the logged median; times
are summary.json's wall_time_s): seed 1 in 13 min 22 s: 0.9284, Dice 0.8210, adapted Rand error
0.131; twice the steps (7,200, seed 0) in 27 min 37 s: 0.9287, Dice 0.8218, adapted Rand error
0.025; no flips at all (no TTA; the labels also sit a little left of the membranes, which a
left-right flip reverses), seed 0 in 13 min 45 s: 0.9269, Dice 0.8177; the loss only on the centre
128x128 of 160x160 crops of the 16-px mirrored image, predicted with 16 px of mirrored context
(train_ops 'pad(16)|random_crop(160)|flip_lr|ignore_border(16)|...', eval_ops 'pad(16)|normalize';
the U-Net paper's overlap-tile strategy), seed 0 in 25 min 2 s: 0.9273, Dice 0.8174 (0.9350 on its
training slices: it fits them better, the validation slices worse).
"""
from research.tasks.segmentation.config import base_config


def get_config():
  c = base_config()
  c.data.name = 'isbi2012_em'
  c.data.train_split = 'train'
  c.data.eval_splits = {'val': 'validation'}
  # Left-right flips only: the labels sit above the membranes they mark (builder doc), and a
  # flip up/down or a 90-degree rotation would reverse that offset.
  c.data.train_ops = 'random_crop(128)|flip_lr|brightness(0.1)|contrast(0.2)|normalize'
  c.data.eval_ops = 'normalize'
  c.model.name = 'unet'
  c.model.depth = 4
  c.model.base_width = 16
  c.model.batch_norm = True
  c.model.upsampling = 'transpose'
  c.model.dropout_rate = 0.5            # after the bottleneck, as the U-Net paper
  c.train.loss = 'ce+dice'
  c.train.batch_size = 4
  c.train.eval_batch_size = 5
  c.train.num_steps = 3600
  c.train.log_every = 50
  c.train.eval_every = 600
  c.train.checkpoint_every = 600
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 50
  s = c.segmentation
  s.num_classes = 2
  s.class_names = ('membrane', 'cell')
  s.id_key = 'slice'
  s.report_split = 'val'
  s.region_scores = True
  s.predict_split = 'test'
  s.overlays = 5
  s.tta = 'flip_lr'
  return c
