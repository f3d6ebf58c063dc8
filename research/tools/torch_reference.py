"""PyTorch equivalents of zoo models, for same-process speed comparisons (needs the torch extra).

CIFAR ResNets (option A), LeNet-5 and the simple CNN are written here to match the JAX
models layer for layer (the benchmark checks that parameter counts agree); the ImageNet
models come from torchvision.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _CifarBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.extra = stride, cout - cin

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    shortcut = x
    if self.stride != 1 or self.extra:  # option A: subsample and zero-pad channels
      shortcut = F.pad(x[:, :, ::self.stride, ::self.stride],
                       (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
    return F.relu(y + shortcut)


class CifarResNet(nn.Module):
  def __init__(self, depth, num_classes=10, width=16):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    blocks, cin = [], width
    for stage in range(3):
      for i in range(n):
        cout = width * 2 ** stage
        blocks.append(_CifarBlock(cin, cout, 2 if stage and not i else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class LeNet5(nn.Module):
  def __init__(self, num_classes=10, activation='tanh', pooling='avg'):
    super().__init__()
    self.act = torch.tanh if activation == 'tanh' else F.relu
    self.pool = F.avg_pool2d if pooling == 'avg' else F.max_pool2d
    self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
    self.fc1, self.fc2, self.logits = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

  def forward(self, x):
    x = self.pool(self.act(self.conv1(x)), 2)
    x = F.adaptive_avg_pool2d(self.pool(self.act(self.conv2(x)), 2), 5).flatten(1)
    return self.logits(self.act(self.fc2(self.act(self.fc1(x)))))


class SimpleCNN(nn.Module):
  def __init__(self, num_classes=10, features=(32, 64), dropout_rate=0.5, channels=1):
    super().__init__()
    layers, cin = [], channels
    for f in features:
      layers += [nn.Conv2d(cin, f, 3, 1, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU(), nn.MaxPool2d(2)]
      cin = f
    self.features = nn.Sequential(*layers)
    self.head = nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Dropout(dropout_rate),
                              nn.Linear(cin * 49, num_classes))

  def forward(self, x):
    return self.head(self.features(x))


def build(name: str, num_classes: int, channels: int = 3) -> nn.Module:
  if name in ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110'):
    return CifarResNet(int(name[6:]), num_classes)
  if name == 'lenet5':
    return LeNet5(num_classes)
  if name == 'simple_cnn':
    return SimpleCNN(num_classes, channels=channels)
  import torchvision
  kwargs = {'aux_logits': False, 'init_weights': False} if name == 'googlenet' else {}
  return getattr(torchvision.models, name)(num_classes=num_classes, **kwargs)
