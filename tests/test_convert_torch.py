"""torchvision -> ConvLab conversion: eval-mode logits agree to 1e-4 relative error.

Needs torch and torchvision (`pip install -e ".[torch]"`); skipped, saying so, without them.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.tools.convert_torch import convert
from research.errors import CheckpointError
from research.models import build_model

torch = pytest.importorskip('torch', reason='torch is not installed (pip install -e ".[torch]")')
torchvision = pytest.importorskip('torchvision', reason='torchvision is not installed')


def random_torchvision_model(name, num_classes):
  torch.manual_seed(0)
  model = getattr(torchvision.models, name)(num_classes=num_classes).eval()
  with torch.no_grad():  # random BatchNorm statistics and affine terms, so that they matter
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.2)
  return model


@pytest.mark.parametrize('name,size', [
    ('resnet18', 224), ('resnet50', 64), ('vgg11_bn', 64), ('vgg16', 64), ('alexnet', 224),
    ('mobilenet_v2', 96)])
def test_converted_logits_match_torchvision(name, size):
  reference = random_torchvision_model(name, 10)
  x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x)).numpy()
  model = build_model({'name': name}, 10)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  variables = convert(reference.state_dict(), dict(template), name)
  logits = np.asarray(model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
  relative_error = np.max(np.abs(logits - expected)) / np.max(np.abs(expected))
  print(f'{name} at {size}x{size}: relative error {relative_error:.2e}')
  assert relative_error < 1e-4, relative_error


def test_a_state_dict_for_another_model_is_refused():
  state = random_torchvision_model('resnet18', 10).state_dict()
  model = build_model({'name': 'resnet34'}, 10)
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  with pytest.raises(CheckpointError, match='no tensor for (params|batch_stats)/layer1_2'):
    convert(state, dict(template), 'resnet34')


def test_fine_tune_from_a_converted_state_dict(tmp_path):
  import tensorflow_datasets as tfds

  from experiments import classification
  from research.tools import convert_torch
  from research.training import checkpointing
  from tests.helpers import load_config
  reference = random_torchvision_model('resnet18', 1000)
  torch.save(reference.state_dict(), tmp_path / 'resnet18.pth')
  convert_torch.main(['--model=resnet18', f'--state_dict={tmp_path / "resnet18.pth"}',
                      f'--out={tmp_path / "weights"}'])
  config = load_config('cifar10_resnet20', **{
      'model.name': 'resnet18', 'train.num_steps': 2, 'train.batch_size': 8,
      'train.eval_batch_size': 16, 'train.checkpoint_every': 2, 'train.eval_every': 2,
      'transfer.init_from': str(tmp_path / 'weights'), 'transfer.freeze': '^(conv1|bn1)/'})
  with tfds.testing.mock_data(num_examples=16):
    summary = classification.run(config, str(tmp_path / 'run'))
  assert summary['step'] == 2 and summary['num_params'] == 11_689_512 - 1000 * 513 + 10 * 513
  state = checkpointing.load_state(str(tmp_path / 'run'))
  expected = reference.state_dict()['conv1.weight'].numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(state['params']['conv1']['kernel'], expected)
