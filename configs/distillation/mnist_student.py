"""Distillation on MNIST: a 9,122-parameter student (the simple CNN at 8-16 channels, 1/15 of
the teacher's 137,418) learns from configs/classification/mnist_teacher.py's run (99.32% test
accuracy, trained on all 60,000 training images). The student's budget: the first 5,000
training images, 20 epochs (780 steps at batch 128), no augmentation, no dropout: enough to
overfit the labels, which is where a teacher's soft targets help (Hinton et al. 2015).

    python -m experiments.classification --config=configs/classification/mnist_teacher.py \
        --workdir=runs/mnist_teacher
    python -m experiments.distillation --config=configs/distillation/mnist_student.py \
        --workdir=runs/student [--config.distillation.teachers="('runs/mnist_teacher',)"]
    python -m experiments.sweep --config=configs/distillation/mnist_student.py \
        --workdir=runs/distillation_ablation --parallel=2

alpha weights the HARD (label) term: loss = alpha CE + (1 - alpha) T^2 KL(teacher || student)
(research/tasks/distillation.py). `distillation.teachers=()` is the from-scratch baseline: the
same student, data, schedule and seeds.

Expected (measured 2026-11-30 on 2 Intel Xeon (Sapphire Rapids) cores, no GPU, 3 seeds): from
scratch 0.9727 ± 0.0017 test accuracy (273 errors on average); distilled, T=8 alpha=0.5
0.9863 ± 0.0003 (137 errors: 0.50x scratch's), T=4 alpha=0.1 0.9862 ± 0.0012, FitNets hints on
stage2 (T=4, alpha=0.5) 0.9857 ± 0.0008; T=1 barely helps (0.9734-0.9754). The whole ablation
(`experiments.sweep`, 51 runs) took 13 min 55 s with --parallel=2; one run takes 26-40 s on its
one core (FitNets 77 s: the teacher runs every step for its feature map). Cached teacher
logits: 89.7 steps/s against 27.0 with the teacher run every step (3.3x), same accuracy.
Table: README.md.
"""
from research.tasks.distillation import distillation_config

TEACHER = 'runs/mnist_teacher'


def get_config():
  c = distillation_config()
  c.data.name = 'mnist'
  c.data.train_split = 'train[:5000]'
  c.data.train_ops = 'normalize'   # no augmentation: the teacher's logits are cached
  c.data.eval_ops = 'normalize'
  c.model.name = 'simple_cnn'
  c.model.features = (8, 16)
  c.model.dropout_rate = 0.0
  c.distillation.teachers = (TEACHER,)
  c.distillation.temperature = 4.0
  c.distillation.alpha = 0.5
  c.train.batch_size = 128
  c.train.num_epochs = 20.0
  c.train.eval_every = 390
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 5e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 50
  return c


def get_sweep():
  return {
      'extra_points': {
          'scratch': {'distillation.teachers': ()},
          'fitnets': {'distillation.hint_student': 'stage2', 'distillation.hint_teacher': 'stage2'},
      },
      'product': {'distillation.temperature': [1.0, 2.0, 4.0, 8.0, 20.0],
                  'distillation.alpha': [0.1, 0.5, 0.9]},
      'seeds': [0, 1, 2],
      'metrics': ['test/accuracy', 'test/loss'],
  }
