"""The oneDNN convolution (CPU) against XLA's: same values and gradients, and the dispatch."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research import runtime
from research.errors import ConfigError
from research.kernels import onednn
from research.models import build_model, conv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_onednn = pytest.mark.skipif(bool(onednn.availability()),
                                  reason=f'oneDNN kernels unavailable: {onednn.availability()}')

# (image shape NHWC, kernel shape HWIO, strides, padding, kernel dilation, groups)
CASES = [
    ((4, 32, 32, 16), (3, 3, 16, 16), (1, 1), 'SAME', (1, 1), 1),       # ResNet-20 body
    ((4, 32, 32, 16), (3, 3, 16, 32), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),  # downsampling
    ((4, 32, 32, 16), (1, 1, 16, 32), (2, 2), 'VALID', (1, 1), 1),      # projection shortcut
    ((3, 32, 32, 1), (5, 5, 1, 6), (1, 1), 'VALID', (1, 1), 1),         # LeNet-5 conv1
    ((2, 17, 13, 12), (5, 3, 4, 6), (2, 1), ((2, 1), (0, 3)), (2, 1), 3),  # odd everything
    ((2, 14, 14, 8), (3, 3, 1, 8), (1, 1), 'SAME', (1, 1), 8),          # depthwise
    ((1, 9, 9, 3), (7, 7, 3, 5), (2, 2), 'SAME', (1, 1), 1),            # batch 1, big kernel
    ((2, 15, 15, 4), (3, 3, 4, 4), (1, 1), 'SAME', (3, 3), 1),          # atrous
    ((5, 12, 12, 6), (3, 3, 6, 7), (1, 1), 'SAME', (1, 1), 1),          # batch split 3 + 2
]


def _loss(impl, strides, padding, dilation, groups):
  def loss(x, kernel, cotangent):
    y = impl(x, kernel, strides, padding, rhs_dilation=dilation,
             dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)
    return jnp.sum(y * cotangent), y
  return loss


def _gradients(impl, x, kernel, cotangent, padding, strides=(1, 1), dilation=(1, 1), groups=1):
  """The jitted step's HLO text and (y, dx, dkernel) of sum(conv(x, kernel) * cotangent)."""
  fn = jax.jit(jax.value_and_grad(_loss(impl, strides, padding, dilation, groups),
                                  argnums=(0, 1), has_aux=True))
  (_, y), (dx, dk) = fn(x, kernel, cotangent)
  return fn.lower(x, kernel, cotangent).as_text(), (y, dx, dk)


@needs_onednn
@pytest.mark.parametrize('x_shape, k_shape, strides, padding, dilation, groups', CASES)
def test_onednn_matches_xla_values_and_gradients(x_shape, k_shape, strides, padding, dilation,
                                                 groups):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], x_shape)
  kernel = jax.random.normal(keys[1], k_shape) / np.sqrt(np.prod(k_shape[:3]))
  y_shape = jax.eval_shape(_loss(lax.conv_general_dilated, strides, padding, dilation, groups),
                           x, kernel, 0.0)[1].shape
  cotangent = jax.random.normal(keys[2], y_shape)
  results = {}
  for name, impl in (('xla', lax.conv_general_dilated), ('onednn', conv.conv_general_dilated)):
    hlo, results[name] = _gradients(impl, x, kernel, cotangent, padding, strides, dilation, groups)
    assert ('convlab_conv' in hlo) == (name == 'onednn')
  for got, want in zip(results['onednn'], results['xla']):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(want))))


def _relu_outputs(intermediates) -> list:
  """The outputs of every residual block and ReLU-fused BatchNorm, in a fixed order."""
  return [np.asarray(v) for path, v in jax.tree_util.tree_leaves_with_path(intermediates)
          if np.asarray(v).ndim == 4 and (np.asarray(v) == 0).any()]


@needs_onednn
def test_resnet20_train_gradients_match_across_backends():
  """A whole model: ResNet-20's loss gradients with oneDNN convolutions equal XLA's.

  A ReLU's gradient jumps at 0, so when a pre-activation lies within float rounding of 0 the
  two backends may legitimately send a gradient down different sides of the kink (seen on
  Intel Sapphire Rapids: one of 32,768 outputs, 6.5% off in one kernel's gradient, with both
  forward passes equal to 1.5e-6). The comparison therefore uses the first input for which
  every ReLU output has the same sign pattern under both backends."""
  model = build_model({'name': 'resnet20'}, 10)
  labels = jnp.arange(8) % 10
  variables = model.init(jax.random.key(0), jnp.zeros((8, 32, 32, 3)))

  def loss(params, x):
    logits, state = model.apply({**variables, 'params': params}, x, train=True,
                                mutable=['batch_stats', 'intermediates'], capture_intermediates=True)
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    return loss, state['intermediates']

  for seed in range(1, 6):
    x = jax.random.normal(jax.random.key(seed), (8, 32, 32, 3))
    grads, relus = {}, {}
    for choice in ('xla', 'onednn'):
      with conv.choice(choice):
        grads[choice], intermediates = jax.jit(jax.grad(loss, has_aux=True))(variables['params'], x)
      relus[choice] = _relu_outputs(intermediates)
    assert len(relus['xla']) == len(relus['onednn']) > 0
    if all(((a > 0) == (b > 0)).all() for a, b in zip(relus['xla'], relus['onednn'])):
      break
  else:
    pytest.fail('every input put a ReLU pre-activation within rounding of 0 on one backend')
  for got, want in zip(jax.tree.leaves(grads['onednn']), jax.tree.leaves(grads['xla'])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


@needs_onednn
def test_onednn_gradients_are_bitwise_repeatable():
  """The batch runs in parts on several threads; the kernel gradient's parts are added in a
  fixed order, so repeated calls agree to the bit whichever thread ran which part."""
  x = jax.random.normal(jax.random.key(0), (9, 16, 16, 8))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 8, 8))
  loss = lambda x, k: jnp.sum(jnp.sin(conv.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))))
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  first = jax.device_get(grad(x, kernel))
  for _ in range(5):
    for got, want in zip(jax.device_get(grad(x, kernel)), first):
      assert got.tobytes() == want.tobytes()


@needs_onednn
def test_onednn_convolution_under_vmap_matches_xla():
  """Per-example gradients (vmap of grad) go through the custom calls one example at a time."""
  x = jax.random.normal(jax.random.key(0), (3, 1, 8, 8, 2))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  def per_example(impl):
    loss = lambda k, xi: jnp.sum(jnp.tanh(impl(xi, k, (1, 1), 'SAME',
                                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'))))
    return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(kernel, x)
  np.testing.assert_allclose(per_example(conv.conv_general_dilated),
                             per_example(lax.conv_general_dilated), rtol=1e-5, atol=1e-5)


def test_unwritable_kernel_cache_is_named(monkeypatch, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  monkeypatch.setenv('CONVLAB_KERNEL_CACHE', str(blocker / 'cache'))
  if onednn.availability():
    pytest.skip(onednn.availability())
  with pytest.raises(onednn.KernelUnavailable, match='cannot build into .*; set CONVLAB_KERNEL_CACHE'):
    onednn.build(onednn.onednn_prefix())


def _lowered(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


@needs_onednn
def test_dispatch_uses_xla_where_onednn_does_not_apply(monkeypatch):
  x, kernel = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  nhwc = ('NHWC', 'HWIO', 'NHWC')
  plain = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), 'SAME', dimension_numbers=nhwc)
  assert 'convlab_conv_forward' in _lowered(plain, x, kernel)
  # bfloat16, input dilation and other layouts stay with XLA.
  assert 'convlab' not in _lowered(plain, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  assert conv.describe('bfloat16') == 'XLA (bfloat16; oneDNN runs float32 only)'
  dilated = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2),
                                                   dimension_numbers=nhwc)
  assert 'convlab' not in _lowered(dilated, x, kernel)
  nchw = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), 'SAME',
                                                dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
  assert 'convlab' not in _lowered(nchw, jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3)))
  monkeypatch.setenv('CONVLAB_CONV', 'xla')  # read when a function is traced: a fresh one
  assert 'convlab' not in _lowered(lambda x, k: plain(x, k), x, kernel)


@needs_onednn
@pytest.mark.parametrize('reference_pass', onednn.PASSES)
def test_a_pass_with_only_reference_code_runs_on_xla(monkeypatch, reference_pass):
  keys = jax.random.split(jax.random.key(1), 3)
  x, kernel = jax.random.normal(keys[0], (2, 6, 6, 4)), jax.random.normal(keys[1], (3, 3, 4, 5))
  cotangent = jax.random.normal(keys[2], (2, 6, 6, 5))
  real = onednn.implementation
  monkeypatch.setattr(onednn, 'implementation', lambda pass_name, *args: 'ref:any'
                      if pass_name == reference_pass else real(pass_name, *args))
  hlo, got = _gradients(conv.conv_general_dilated, x, kernel, cotangent, 'SAME')
  if reference_pass == 'forward':  # then the whole convolution, gradients too
    assert 'convlab_conv' not in hlo
  else:
    for pass_name in onednn.PASSES:
      assert (f'convlab_conv_{pass_name}' in hlo) == (pass_name != reference_pass), pass_name
  _, want = _gradients(lax.conv_general_dilated, x, kernel, cotangent, 'SAME')
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(w))))


@needs_onednn
def test_fcn_fc6_kernel_gradient_follows_onednn_implementation():
  # FCN-8s's fc6 on VGG-16 (7x7, 512 -> 4096) on a 2x2 map (as on the 4x4 map of a 128 crop):
  # oneDNN 3.2 on AVX2 has only its reference code for the kernel gradient, ~100x slower than
  # XLA's (BENCHMARKS.md). Where oneDNN has a fast kernel for it (AVX-512?) this only checks
  # that routing follows oneDNN's answer; the monkeypatched test above guards the routing.
  keys = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(keys[0], (1, 2, 2, 512))
  kernel = jax.random.normal(keys[1], (7, 7, 512, 4096)) / np.sqrt(7 * 7 * 512)
  cotangent = jax.random.normal(keys[2], (1, 2, 2, 4096))
  pads = ((3, 3), (3, 3))
  names = {p: onednn.implementation(p, x.shape, kernel.shape, cotangent.shape, (1, 1), pads,
                                    (1, 1), 1) for p in onednn.PASSES}
  assert all(names.values()), names
  hlo, got = _gradients(conv.conv_general_dilated, x, kernel, cotangent, pads)
  for pass_name, name in names.items():
    on_onednn = not names['forward'].startswith('ref') and not name.startswith('ref')
    assert (f'convlab_conv_{pass_name}' in hlo) == on_onednn, names
  _, want = _gradients(lax.conv_general_dilated, x, kernel, cotangent, pads)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(w))))


@needs_onednn
def test_onednn_refusing_a_geometry_is_named():
  # Output shape inconsistent with the geometry: oneDNN refuses the description.
  with pytest.raises(ValueError, match=r'oneDNN forward convolution of \(1, 4, 4, 2\) by '
                                       r'\(3, 3, 2, 2\): '):
    onednn.implementation('forward', (1, 4, 4, 2), (3, 3, 2, 2), (1, 9, 9, 2), (1, 1),
                          ((1, 1), (1, 1)), (1, 1), 1)
  with pytest.raises(ValueError, match=r'implementation\(\) takes 4-D shapes'):
    onednn.implementation('forward', (4, 4, 2), (3, 3, 2, 2), (1, 4, 4, 2), (1, 1),
                          ((1, 1), (1, 1)), (1, 1), 1)


def test_a_bad_backend_choice_is_a_config_error(monkeypatch):
  monkeypatch.setenv('CONVLAB_CONV', 'mkl')
  with pytest.raises(ConfigError, match=r"CONVLAB_CONV='mkl'; expected one of auto, xla, onednn"):
    conv.backend_choice()
  with pytest.raises(ConfigError, match=r"convolution backend 'cudnn'; expected one of"):
    with conv.choice('cudnn'):
      pass
  with conv.choice('xla'):  # the context wins over the environment, and ends with the block
    assert conv.backend_choice() == 'xla'


def test_onednn_requested_but_unavailable_says_why(monkeypatch):
  monkeypatch.setenv('CONVLAB_CONV', 'onednn')
  monkeypatch.setattr(onednn, 'availability', lambda: 'no C++ compiler here')
  x, kernel = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
  with pytest.raises(ConfigError, match=re.escape('CONVLAB_CONV=onednn: no C++ compiler here')):
    conv.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  monkeypatch.setenv('CONVLAB_CONV', 'auto')  # auto falls back to XLA's convolution
  y = conv.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert float(y[0, 1, 1, 0]) == 9.0


def test_missing_onednn_and_compiler_are_named(monkeypatch, tmp_path):
  monkeypatch.setenv('ONEDNN_ROOT', str(tmp_path))
  with pytest.raises(onednn.KernelUnavailable, match=f'oneDNN not found under {tmp_path}'):
    onednn.onednn_prefix()
  monkeypatch.setenv('CXX', 'no-such-compiler')
  with pytest.raises(onednn.KernelUnavailable, match="no C\\+\\+ compiler 'no-such-compiler'"):
    onednn.build(tmp_path)


def test_allocator_tunables_merge_and_the_makefile_agrees():
  env = runtime.tunables_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0:glibc.cpu.x=1'})
  assert env['GLIBC_TUNABLES'] == ('glibc.malloc.hugetlb=0:glibc.cpu.x=1:'
                                   'glibc.malloc.mmap_threshold=33554432:'
                                   'glibc.malloc.trim_threshold=4294967295')
  assert not runtime.needs_reexec(runtime.tunables_env({}))
  assert not runtime.needs_reexec({'CONVLAB_ALLOCATOR': 'default'})
  makefile = open(os.path.join(REPO, 'Makefile')).read()
  assert re.search(r'GLIBC_TUNABLES \?= (\S+)', makefile).group(1) == ':'.join(runtime.TUNABLES)


@needs_onednn
def test_experiment_processes_restart_with_the_tuned_allocator():
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'CONVLAB_REEXECUTED', 'CONVLAB_CONV')}
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--model=lenet5', '--image_size=32',
       '--channels=1', '--num_classes=10', '--batch_size=8', '--repeats=1', '--steps=1',
       '--torch=no'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert f'GLIBC_TUNABLES={":".join(runtime.TUNABLES)}' in out.stdout
  assert 'convolutions: oneDNN' in out.stdout
