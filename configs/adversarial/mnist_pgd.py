"""PGD adversarial training (Madry et al. 2018) on MNIST, eps = 0.3 in [0, 1] pixels (L-inf).

    python -m experiments.adversarial --config=configs/adversarial/mnist_pgd.py --workdir=runs/pgd_at

The simple CNN (32-64 channels), trained on PGD examples; 1,000 training images are held out
('val') and watched with PGD-10 at every evaluation: the checkpoint with the best robust
validation accuracy is the one reported (Rice et al. 2020's early stopping against robust
overfitting). The final report attacks the whole test split with PGD-40 x 3 restarts and
APGD-CE (100 steps), plus the eps curve and the gradient-masking checks on the first 1,000.

Expected: PGD_RESULT
"""
from research.tasks.adversarial import adversarial_config


def get_config():
  c = adversarial_config()
  c.data.name = 'mnist'
  c.data.eval_splits = {}
  c.data.validation_holdout = 1000
  c.data.train_ops = 'normalize'
  c.data.eval_ops = 'normalize'
  c.model.name = 'simple_cnn'
  c.model.features = (32, 64)
  c.model.dropout_rate = 0.0
  a = c.adversarial
  a.method = 'pgd'
  a.eps = 0.3
  a.step_size = 0.03
  a.steps = 10
  c.train.batch_size = 128
  c.train.num_epochs = 10.0
  c.train.eval_every = 430
  c.train.checkpoint_every = 430
  c.train.best_metric = 'val/pgd_accuracy'
  c.train.best_mode = 'max'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 200
  return c
