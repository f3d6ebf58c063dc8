"""MNIST with the simple CNN (conv-BN-ReLU-pool x2, dropout, dense): the `make demo` default.

    python -m experiments.classification --config=configs/classification/mnist_cnn.py \
        --workdir=runs/mnist_cnn

Expected: test accuracy 0.9909 (measured 2026-11-22 evening, seed 0; earlier code: 0.9906, and
seed 1 with lr 3e-3: 0.9910) in 39-45 s of training and evaluation, compilation included, on
2 CPU cores (AMD EPYC, no GPU; ~58 steps/s, oneDNN convolutions and BatchNorm sums), 4 epochs
at batch 128; 48 s for the whole command once set up.
"""
from research.config import base_config


def get_config():
  c = base_config()
  c.data.name = 'mnist'
  c.data.train_ops = 'normalize'
  c.data.eval_ops = 'normalize'
  c.model.name = 'simple_cnn'
  c.model.features = (32, 64)
  c.model.dropout_rate = 0.25
  c.train.batch_size = 128
  c.train.num_epochs = 4.0
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 5e-3
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 200
  return c
