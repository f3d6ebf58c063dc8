"""Models, looked up by name from configs: `build_model({'name': 'resnet20', ...}, num_classes)`."""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.models import alexnet_vgg, googlenet, mobile, plain_cnn, resnet
from research.models.darknet import DarknetTiny
from research.models.fcn import FCN
from research.models.lenet import LeNet5
from research.models.plain_cnn import PlainCNN
from research.models.resnet_cifar import (CifarResNet, ResNet20, ResNet32, ResNet44, ResNet56,
                                          ResNet110)
from research.models.simple_cnn import SimpleCNN
from research.models.unet import UNet

__all__ = ['FCN', 'MODELS', 'CifarResNet', 'DarknetTiny', 'LeNet5', 'PlainCNN', 'SimpleCNN', 'UNet',
           'build_detector', 'build_model', 'count_params', 'model_arguments']

MODELS = {
    'lenet5': LeNet5,
    'simple_cnn': SimpleCNN,
    # Without normalisation layers, for adversarial training (research/models/plain_cnn.py).
    'plain_cnn': PlainCNN,
    'madry_cnn': plain_cnn.MadryCNN,
    'wong_cnn': plain_cnn.WongCNN,
    'resnet20': ResNet20,
    'resnet32': ResNet32,
    'resnet44': ResNet44,
    'resnet56': ResNet56,
    'resnet110': ResNet110,
    # ImageNet architectures; parameter counts equal torchvision's.
    'alexnet': alexnet_vgg.AlexNet,
    'vgg11': alexnet_vgg.VGG11, 'vgg13': alexnet_vgg.VGG13,
    'vgg16': alexnet_vgg.VGG16, 'vgg19': alexnet_vgg.VGG19,
    'vgg11_bn': alexnet_vgg.VGG11BN, 'vgg13_bn': alexnet_vgg.VGG13BN,
    'vgg16_bn': alexnet_vgg.VGG16BN, 'vgg19_bn': alexnet_vgg.VGG19BN,
    'resnet18': resnet.ResNet18, 'resnet34': resnet.ResNet34, 'resnet50': resnet.ResNet50,
    'resnet101': resnet.ResNet101, 'resnet152': resnet.ResNet152,
    'googlenet': googlenet.GoogLeNet,
    'mobilenet_v2': mobile.MobileNetV2,
    'efficientnet_b0': mobile.EfficientNetB0,
    # A small Darknet-style backbone for detection (research/models/darknet.py).
    'darknet_tiny': DarknetTiny,
    # Semantic segmentation: logits (N, H, W, num_classes) at the input's resolution.
    'unet': UNet,
    'fcn32s': functools.partial(FCN, variant='32s'),
    'fcn16s': functools.partial(FCN, variant='16s'),
    'fcn8s': functools.partial(FCN, variant='8s'),
}


def model_arguments(name: str) -> set[str]:
  """The constructor arguments `MODELS[name]` takes (what `model.*` config keys may set)."""
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; known: {", ".join(sorted(MODELS))}')
  cls = getattr(MODELS[name], 'func', MODELS[name])
  return {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}


def build_model(model_config, num_classes: int):
  """Instantiates `MODELS[config.name]` with the config's other keys as its arguments."""
  kwargs = dict(model_config)
  name = kwargs.pop('name', '')
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; known: {", ".join(sorted(MODELS))}')
  factory = MODELS[name]
  fields = model_arguments(name)
  for key in kwargs:
    if key not in fields:
      raise ConfigError(f'model {name!r} has no argument {key!r}; it takes {", ".join(sorted(fields))}')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  kwargs.setdefault('num_classes', num_classes)
  return factory(**kwargs)


def count_params(model, input_shape) -> int:
  """Number of trainable parameters (batch statistics excluded), without allocating them."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape)))
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def build_detector(model_config, num_classes: int, num_anchors: int, feature: str = '',
                   hidden: int = 256, objectness_prior: float | None = 0.01, merge: str = ''):
  """A `blocks.Detector`: the zoo backbone `model_config` names (built as `build_model` does)
  with a YOLO head of `num_anchors` anchors and `num_classes` classes on its feature map
  `feature` ('' = the last), optionally with the coarser map `merge` upsampled onto it
  (blocks.Detector). Its outputs are (N, Sy, Sx, num_anchors, 5 + num_classes)."""
  from research.models.blocks import Detector
  if num_anchors < 1:
    raise ConfigError(f'a detector needs at least one anchor; got num_anchors={num_anchors}')
  backbone = build_model(model_config, num_classes)
  return Detector(backbone, feature=feature, num_anchors=num_anchors, num_classes=num_classes,
                  hidden=hidden, objectness_prior=objectness_prior, merge=merge)
