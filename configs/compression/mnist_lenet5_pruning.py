"""Magnitude pruning of LeNet-5 on MNIST: sparsity x schedule (one-shot, gradual) x 2 seeds.

    python -m experiments.classification --config=configs/classification/mnist_lenet5.py \
        --workdir=runs/lenet5
    python -m experiments.compress --config=configs/compression/mnist_lenet5_pruning.py \
        --workdir=runs/lenet5_p90 [--config.compression.sparsity=0.9]
    python -m experiments.sweep --config=configs/compression/mnist_lenet5_pruning.py \
        --workdir=runs/pruning_ablation --parallel=2

Each run fine-tunes runs/lenet5's last checkpoint (0.9917 test accuracy) for 2,000 steps
(4.3 epochs) at learning rate 1e-3 (half the training's), global magnitude ranking of the conv
and dense kernels (research/compression/pruning.py): one-shot prunes to the target at step 0;
gradual follows Zhu & Gupta's cubic schedule with 10 mask updates over the first 1,000 steps.
The seed sets the fine-tuning's data order.

Expected (measured 2026-11-30, 2 Intel Xeon (Sapphire Rapids) cores; test accuracy, mean of
seeds 0 and 1, float32 0.9917): 90% gradual 0.9903 (-0.14 points), 90% one-shot 0.9892, 95%
gradual 0.9857, one-shot 0.9826, 80% 0.9912-0.9914, 50% 0.9914-0.9918. Each run 38-40 s on its
core; the 20-run sweep 6 min 51 s with --parallel=2. Table: README.md.
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.experiment = 'compress'
  c.seed = 0
  c.compression = ml_collections.ConfigDict({
      'source': 'runs/lenet5', 'method': 'prune', 'step': 'latest', 'steps': 2000,
      'learning_rate': 1e-3, 'sparsity': 0.9, 'schedule': 'gradual', 'scope': 'global',
      'structure': 'unstructured', 'begin_step': 0, 'num_updates': 10, 'update_every': 0,
      'initial_sparsity': 0.0})
  return c


def get_sweep():
  return {
      'product': {'compression.sparsity': [0.0, 0.5, 0.8, 0.9, 0.95],
                  'compression.schedule': ['one_shot', 'gradual']},
      'seeds': [0, 1],
      'metrics': ['test/accuracy', 'sparsity/prunable', 'float32/test/accuracy'],
  }
