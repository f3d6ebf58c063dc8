"""PGD adversarial training (Madry et al. 2018) on MNIST, eps = 0.3 in [0, 1] pixels (L-inf).

    python -m experiments.adversarial --config=configs/adversarial/mnist_pgd.py --workdir=runs/pgd_at

The network is Wong et al.'s MNIST CNN (`wong_cnn`: two stride-2 convolutions and a 100-unit
dense layer, no BatchNorm, 166,406 parameters) on pixels in [0, 1] (no normalisation); PGD-10
with steps of 2.5 eps / 10 (Madry et al.'s rule) from a random start; Adam with the learning
rate rising to 5e-3 over the first 4 epochs and a cosine decay after (close to Wong et al.'s
cyclic schedule); the training eps ramps linearly from 0 to 0.3 over the same 4 epochs
(`adversarial.eps_warmup_steps`). 1,000 training images are held out ('val') and watched with
PGD-10 at every epoch: the checkpoint with the best robust validation accuracy is the one
reported (Rice et al. 2020's early stopping against robust overfitting). The final report
attacks the whole test split with PGD-40 x 3 restarts and APGD-CE (100 steps), plus the eps
curve and the gradient-masking checks on the first 1,000.

Measured: see the "Measured" line below (filled in from runs/pgd_at/summary.json).
"""
import ml_collections

from research.tasks.adversarial import adversarial_config


def get_config():
  c = adversarial_config()
  c.data.name = 'mnist'
  c.data.eval_splits = {}
  c.data.validation_holdout = 1000
  c.data.train_ops = ''          # pixels in [0, 1] straight into the network
  c.data.eval_ops = ''
  c.model = ml_collections.ConfigDict({'name': 'wong_cnn'})
  a = c.adversarial
  a.method = 'pgd'
  a.eps = 0.3
  a.steps = 10
  a.step_size = 0.075            # 2.5 eps / steps
  a.eps_warmup_steps = 2360      # 4 epochs of 590 steps
  c.train.batch_size = 100
  c.train.num_epochs = 10.0
  c.train.eval_every = 590
  c.train.checkpoint_every = 590
  c.train.best_metric = 'val/pgd_accuracy'
  c.train.best_mode = 'max'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 5e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 2360
  return c
