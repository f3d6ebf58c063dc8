"""Transfer learning on real MNIST: pretrain LeNet-5 on digits 0-4 (all 30,596 training images,
3 epochs), then learn digits 5-9 from only the 498 of them among the first 1,000 training
images (150 steps at batch 32): fine-tuned from the pretrained weights with the convolutions
frozen (conv1, conv2; the dense layers train, the 5-way head is new), against the same
model trained from scratch with the same data and steps. Test: the 4,861 test images of 5-9.

    python -m experiments.transfer --config=configs/transfer/mnist_0to4_to_5to9.py \
        --workdir=runs/transfer_mnist

Expected (measured 2026-11-22 on 2 CPU cores, 19-21 s for all three runs): pretrain 0.9967 on
digits 0-4; on digits 5-9 fine-tuned 0.9535 vs from scratch 0.9449. With a smaller budget
(`--config.finetune.data.train_split='train[:200]'`, i.e. 99 examples of 5-9, and
`--config.finetune.train.num_steps=60 --config.finetune.train.eval_every=30
--config.finetune.train.checkpoint_every=60`): fine-tuned 0.8766 vs from scratch 0.8572.
"""
import ml_collections

from research.config import base_config


def lenet5(classes, train_split, batch_size, **train):
  c = base_config()
  c.data.name = 'mnist'
  c.data.classes = classes
  c.data.train_split = train_split
  c.data.train_ops = c.data.eval_ops = 'pad(2)|normalize'
  c.model.name = 'lenet5'
  c.model.activation = 'relu'
  c.model.pooling = 'max'
  c.train.batch_size = batch_size
  c.train.update(train)
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 2e-3
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_steps = 20
  return c


def get_config():
  c = ml_collections.ConfigDict()
  c.pretrain = lenet5((0, 1, 2, 3, 4), 'train', 128, num_epochs=3.0)
  c.finetune = lenet5((5, 6, 7, 8, 9), 'train[:1000]', 32, num_steps=150, eval_every=50,
                      checkpoint_every=150)
  c.finetune.transfer.freeze = '^conv'
  return c
