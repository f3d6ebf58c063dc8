"""Pruning (masks, schedule, optimizer wrapper, checkpoints) and int8 quantization with qwix."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.compression import pruning
from research.compression.pruning import PruningConfig
from research.errors import ConfigError


def made_up_params(seed=0):
  rng = np.random.RandomState(seed)
  return {'conv1': {'kernel': jnp.asarray(rng.randn(3, 3, 2, 4), jnp.float32),
                    'bias': jnp.asarray(rng.randn(4), jnp.float32)},
          'dense': {'kernel': jnp.asarray(rng.randn(36, 5), jnp.float32)},
          'bn': {'scale': jnp.ones(5), 'bias': jnp.zeros(5)},
          'logits': {'kernel': jnp.asarray(rng.randn(5, 3), jnp.float32),
                     'bias': jnp.zeros(3)}}


def numpy_keep(values: np.ndarray, sparsity: float) -> np.ndarray:
  """Independent reference: prune the round(s n) smallest |w|, earlier index first on ties."""
  flat = np.abs(values).ravel()
  k = int(np.floor(sparsity * flat.size + 0.5))
  order = sorted(range(flat.size), key=lambda i: (flat[i], i))
  keep = np.ones(flat.size, bool)
  keep[order[:k]] = False
  return keep.reshape(values.shape)


# ------------------------------------------------------------------ masks

def test_default_selection_prunes_kernels_but_not_the_head_biases_or_norms():
  chosen = pruning.prunable(made_up_params(), PruningConfig(sparsity=0.5))
  assert chosen == {'conv1': {'kernel': True, 'bias': False}, 'dense': {'kernel': True},
                    'bn': {'scale': False, 'bias': False},
                    'logits': {'kernel': False, 'bias': False}}


@pytest.mark.parametrize('sparsity', [0.0, 0.3, 0.5, 0.7, 0.95])
def test_per_layer_masks_keep_exactly_the_largest_magnitudes(sparsity):
  params = made_up_params()
  config = PruningConfig(sparsity=sparsity, scope='per_layer')
  pruned, masks = pruning.prune_params(params, config)
  for name in ('conv1', 'dense'):
    w = np.asarray(params[name]['kernel'])
    np.testing.assert_array_equal(np.asarray(masks[name]['kernel']), numpy_keep(w, sparsity))
    assert np.count_nonzero(np.asarray(pruned[name]['kernel']) == 0) == round(sparsity * w.size)
  np.testing.assert_array_equal(pruned['logits']['kernel'], params['logits']['kernel'])
  np.testing.assert_array_equal(pruned['conv1']['bias'], params['conv1']['bias'])


def test_ties_prune_the_earlier_weight_first():
  params = {'a': {'kernel': jnp.array([[1.0, -1.0, 1.0], [2.0, 1.0, -3.0]])}}
  _, masks = pruning.prune_params(params, PruningConfig(sparsity=0.5, scope='per_layer'))
  # |w| = 1 at flat indices 0, 1, 2, 4: three of the six go, the first three of the ties.
  np.testing.assert_array_equal(masks['a']['kernel'], [[False, False, False], [True, True, True]])


def test_global_and_per_layer_differ_on_layers_of_different_scale():
  rng = np.random.RandomState(1)
  params = {'small': {'kernel': jnp.asarray(rng.rand(10, 10) * 0.01 + 0.001, jnp.float32)},
            'large': {'kernel': jnp.asarray(rng.rand(10, 10) + 1.0, jnp.float32)}}
  _, global_masks = pruning.prune_params(params, PruningConfig(sparsity=0.5, scope='global'))
  _, layer_masks = pruning.prune_params(params, PruningConfig(sparsity=0.5, scope='per_layer'))
  # Globally the 100 smallest of 200 are exactly the small layer; per layer, half of each.
  assert not np.any(global_masks['small']['kernel']) and np.all(global_masks['large']['kernel'])
  assert np.sum(layer_masks['small']['kernel']) == 50 and np.sum(layer_masks['large']['kernel']) == 50
  np.testing.assert_array_equal(layer_masks['large']['kernel'],
                                numpy_keep(np.asarray(params['large']['kernel']), 0.5))
  # The global mask is the NumPy reference over the concatenation, in leaf order.
  both = np.concatenate([np.asarray(params[k]['kernel']).ravel() for k in ('large', 'small')])
  expected = numpy_keep(both, 0.5)
  got = np.concatenate([np.asarray(global_masks[k]['kernel']).ravel() for k in ('large', 'small')])
  np.testing.assert_array_equal(got, expected)


def test_channel_pruning_removes_the_filters_with_the_smallest_l1_norm():
  rng = np.random.RandomState(2)
  kernel = rng.randn(3, 3, 2, 8).astype(np.float32)
  kernel[..., 5] *= 0.01   # the two weakest filters by L1 norm
  kernel[..., 2] *= 0.02
  pruned, masks = pruning.prune_params(
      {'conv': {'kernel': jnp.asarray(kernel)}},
      PruningConfig(sparsity=0.25, scope='per_layer', structure='channel'))
  out = np.asarray(pruned['conv']['kernel'])
  dead = [c for c in range(8) if np.all(out[..., c] == 0)]
  assert dead == [2, 5]
  np.testing.assert_array_equal(out[..., [0, 1, 3, 4, 6, 7]], kernel[..., [0, 1, 3, 4, 6, 7]])


# ------------------------------------------------------------------ schedule and config

def test_polynomial_schedule_values():
  config = PruningConfig(sparsity=0.8, initial_sparsity=0.0, begin_step=10, update_every=5,
                         num_updates=4)
  values = {t: float(pruning.target_sparsity(config, t)) for t in (0, 9, 10, 15, 20, 25, 30, 99)}
  # s_t = 0.8 - 0.8 (1 - (t - 10) / 20)^3
  expected = {0: 0.0, 9: 0.0, 10: 0.0, 15: 0.8 - 0.8 * 0.75 ** 3, 20: 0.8 - 0.8 * 0.5 ** 3,
              25: 0.8 - 0.8 * 0.25 ** 3, 30: 0.8, 99: 0.8}
  assert values == pytest.approx(expected, abs=1e-6)
  updates = [t for t in range(40) if bool(pruning.is_update_step(config, t))]
  assert updates == [10, 15, 20, 25, 30]
  one_shot = PruningConfig(sparsity=0.6, begin_step=7)
  assert [bool(pruning.is_update_step(one_shot, t)) for t in (6, 7, 8)] == [False, True, False]
  assert float(pruning.target_sparsity(one_shot, 7)) == pytest.approx(0.6)


@pytest.mark.parametrize('bad', [1.0, -0.1, 1.5])
def test_invalid_sparsity_is_one_config_error_line(bad):
  with pytest.raises(ConfigError) as e:
    PruningConfig(sparsity=bad)
  assert '\n' not in str(e.value) and str(bad) in str(e.value) and '[0, 1)' in str(e.value)


def test_other_config_mistakes_are_config_errors():
  for kwargs in ({'scope': 'everywhere'}, {'structure': 'channel', 'scope': 'global'},
                 {'update_every': 0}, {'initial_sparsity': 0.9}, {'include': '('}):
    with pytest.raises(ConfigError):
      PruningConfig(sparsity=0.5, **kwargs)
  with pytest.raises(ConfigError, match='select no parameter'):
    pruning.prunable(made_up_params(), PruningConfig(sparsity=0.5, include='nothing_like_this'))


def test_a_source_that_is_no_trained_run_names_what_it_is(tmp_path):
  from research.compression import trained
  (tmp_path / 'file').write_text('')
  (tmp_path / 'empty').mkdir()
  for name, message in (('missing', 'does not exist'), ('file', 'is no directory'),
                        ('empty', 'holds no config.json')):
    with pytest.raises(ConfigError, match=f'{name} {message}: give the workdir of a trained run'):
      trained.load(str(tmp_path / name))
  for name, text, message in (('truncated', '{"model": ', r'cannot be read \(JSONDecodeError'),
                              ('list', '[1, 2]', r'holds no config \(a JSON list, not an object\)')):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'config.json').write_text(text)
    with pytest.raises(ConfigError, match=f'{name}/config.json {message}'):
      trained.load(str(tmp_path / name))


# ------------------------------------------------------------------ training with the wrapper

_STEPS = {}


def run_steps(optimizer, params, state, start, stop, seed=0):
  """Steps start..stop-1 on a fixed quadratic loss plus step-dependent noise (one compiled
  step per optimizer)."""
  if id(optimizer) not in _STEPS:
    @jax.jit
    def step(params, state, t):
      grads = jax.grad(lambda p: sum(jnp.sum((a - 0.5) ** 2) for a in jax.tree.leaves(p)))(params)
      key = jax.random.fold_in(jax.random.key(seed), t)
      grads = jax.tree.map(lambda g: g + 0.1 * jax.random.normal(key, g.shape), grads)
      updates, state = optimizer.update(grads, state, params)
      return optax.apply_updates(params, updates), state
    _STEPS[id(optimizer)] = (optimizer, step)
  step = _STEPS[id(optimizer)][1]
  for t in range(start, stop):
    params, state = step(params, state, t)
  return params, state


OPTIMIZERS = {
    'adam': lambda: optax.adam(0.05),
    'momentum_l2': lambda: optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9)),
    'adamw': lambda: optax.adamw(0.05, weight_decay=0.1),
}


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_masked_weights_stay_exactly_zero_through_training(name):
  params = made_up_params()
  config = PruningConfig(sparsity=0.75, initial_sparsity=0.25, begin_step=2, update_every=3,
                         num_updates=3)
  optimizer = pruning.wrap(OPTIMIZERS[name](), config)
  state = optimizer.init(params)
  seen_zero = {}
  for stop in range(1, 20):
    params, state = run_steps(optimizer, params, state, stop - 1, stop)
    masks = pruning.masks_of(state)
    for layer in ('conv1', 'dense'):
      w, m = np.asarray(params[layer]['kernel']), np.asarray(masks[layer]['kernel'])
      assert np.all(w[~m] == 0.0), f'{name}: pruned weights moved at step {stop}'
      zeros = np.flatnonzero(~m)
      assert set(seen_zero.get(layer, [])) <= set(zeros)  # masks only grow
      seen_zero[layer] = zeros
  report = pruning.sparsity_report(params, config)
  # Global 0.75 of the 72 + 180 prunable weights after the last update (step 11).
  assert report['prunable_sparsity'] == pytest.approx(round(0.75 * 252) / 252)
  assert set(report['layers']) == {'conv1/kernel', 'dense/kernel'}
  # Weights that are kept keep training, and what is not prunable is never zeroed.
  assert np.count_nonzero(np.asarray(params['logits']['kernel'])) == 15
  assert report['num_params'] == 72 + 4 + 180 + 10 + 15 + 3


def test_pruned_weights_stay_zero_when_reduce_on_plateau_scales_the_updates():
  from research.training import optim
  params = made_up_params()
  config = PruningConfig(sparsity=0.5, begin_step=0)
  optimizer = pruning.wrap(optax.chain(optax.adam(0.05), optim.scale_by_lr_scale()), config)
  state = optimizer.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for scale in (1.0, 0.5, 0.1):  # the loop passes the plateau factor as lr_scale
    updates, state = optimizer.update(grads, state, params, lr_scale=jnp.float32(scale))
    params = optax.apply_updates(params, updates)
  masks = pruning.masks_of(state)
  w, m = np.asarray(params['conv1']['kernel']), np.asarray(masks['conv1']['kernel'])
  assert (~m).any() and np.all(w[~m] == 0.0)
  plain, _ = optax.adam(0.05).update(grads, optax.adam(0.05).init(params), params)
  scaled, _ = optax.chain(optax.adam(0.05), optim.scale_by_lr_scale()).update(
      grads, optax.chain(optax.adam(0.05), optim.scale_by_lr_scale()).init(params), params,
      lr_scale=0.1)
  np.testing.assert_allclose(scaled['dense']['kernel'], 0.1 * plain['dense']['kernel'], rtol=1e-6)


def test_pruning_state_survives_an_orbax_checkpoint_and_resumes_exactly(tmp_path):
  from research.training.checkpointing import Checkpointer
  config = PruningConfig(sparsity=0.6, scope='per_layer', begin_step=1, update_every=2,
                         num_updates=4)
  optimizer = pruning.wrap(optax.adam(0.05), config)
  params = made_up_params()
  state = optimizer.init(params)
  params, state = run_steps(optimizer, params, state, 0, 5)
  checkpointer = Checkpointer(str(tmp_path))
  checkpointer.save(5, {'params': params, 'opt_state': state}, {'note': 'x'})
  checkpointer.wait()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          {'params': params, 'opt_state': state})
  restored, _ = checkpointer.restore(5, abstract)
  checkpointer.close()
  assert isinstance(restored['opt_state'], pruning.PruningState)
  np.testing.assert_array_equal(restored['opt_state'].masks['dense']['kernel'],
                                state.masks['dense']['kernel'])
  straight = run_steps(optimizer, params, state, 5, 12)
  resumed = run_steps(optimizer, restored['params'], restored['opt_state'], 5, 12)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  final_params, final_state = resumed
  for layer in ('conv1', 'dense'):
    m = np.asarray(final_state.masks[layer]['kernel'])
    assert np.all(np.asarray(final_params[layer]['kernel'])[~m] == 0.0)
    assert np.mean(~m) == pytest.approx(round(0.6 * m.size) / m.size)


def test_before_begin_step_nothing_is_pruned():
  params = made_up_params()
  optimizer = pruning.wrap(optax.sgd(0.01), PruningConfig(sparsity=0.9, begin_step=50))
  params, state = run_steps(optimizer, params, optimizer.init(params), 0, 5)
  report = pruning.sparsity_report(params)
  assert report['num_zeros'] == 0 and report['prunable_sparsity'] == 0.0
  assert np.all(np.asarray(jax.tree.leaves(pruning.masks_of(state))[1]))


# ------------------------------------------------------------------ quantization (qwix)

from research.compression import quantization  # noqa: E402
from tests.tiny_mnist import trained_lenet  # noqa: E402


@pytest.mark.parametrize('shape', [(3, 3, 4, 8), (50, 7)])
def test_int8_round_trip_error_is_at_most_half_a_step_per_channel(shape):
  rng = np.random.RandomState(3)
  kernel = rng.randn(*shape).astype(np.float32) * rng.uniform(0.01, 10, shape[-1])
  q = quantization.quantize_weight(jnp.asarray(kernel))
  values = np.asarray(q.qvalue)
  assert values.dtype == np.int8 and np.abs(values.astype(int)).max() in (127, 128)
  # qwix's symmetric int8: absmax / 127.5 per channel (the top bucket is used in full)
  scale = np.abs(kernel.reshape(-1, shape[-1])).max(axis=0) / 127.5
  np.testing.assert_allclose(np.asarray(q.scale).ravel(), scale, rtol=1e-6)
  error = np.abs(kernel - np.asarray(quantization.dequantize(q)))
  assert np.all(error <= scale * (0.5 + 1e-5))
  assert np.all(error.reshape(-1, shape[-1]).max(axis=0) > scale * 0.2)  # it does round


def test_qat_forward_is_quantized_and_its_gradients_flow_straight_through():
  model = __import__('research.models', fromlist=['build_model']).build_model(
      {'name': 'simple_cnn'}, 10)
  x = jax.random.normal(jax.random.key(1), (8, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  qat = quantization.qat_model(model)
  float_logits, qat_logits = jax.jit(model.apply)(variables, x), jax.jit(qat.apply)(variables, x)
  difference = float(jnp.max(jnp.abs(qat_logits - float_logits)))
  assert 1e-4 < difference < 0.1 * float(jnp.max(jnp.abs(float_logits)))
  loss = lambda m: lambda p: jnp.sum(m.apply({**variables, 'params': p}, x) ** 2)
  qat_grads = jax.jit(jax.grad(loss(qat)))(variables['params'])
  float_grads = jax.jit(jax.grad(loss(model)))(variables['params'])
  for path in (('conv1', 'kernel'), ('conv2', 'kernel'), ('logits', 'kernel')):
    g, f = (np.asarray(t[path[0]][path[1]]).ravel() for t in (qat_grads, float_grads))
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
    # straight through: the quantized model's gradient is the float one, up to rounding
    assert g @ f / np.linalg.norm(g) / np.linalg.norm(f) > 0.99
  with pytest.raises(ConfigError, match='calibration'):
    quantization.ptq(model, variables, (28, 28, 1))


@pytest.mark.real_data
def test_ptq_of_a_trained_lenet_keeps_its_accuracy(mnist_data_dir):
  model, variables, preprocess, train_images, test_images, labels = trained_lenet(mnist_data_dir)
  images = preprocess(test_images)
  float_pred = np.asarray(jnp.argmax(jax.jit(model.apply)(variables, images), -1))
  float_accuracy = np.mean(float_pred == labels)
  assert float_accuracy > 0.9
  calibration = [preprocess(train_images[i:i + 100]) for i in range(0, 500, 100)]
  static = quantization.ptq(model, variables, (32, 32, 1), calibration)
  dynamic = quantization.ptq(model, variables, (32, 32, 1), static=False)
  for quantized in (static, dynamic):
    pred = np.asarray(jnp.argmax(jax.jit(quantized)(images), -1))
    assert abs(np.mean(pred == labels) - float_accuracy) <= 0.01
    assert np.mean(pred == float_pred) >= 0.98
  # The static input scale of conv1: per-image absmax averaged over the calibration images / 127.5.
  expected = np.mean([np.abs(np.asarray(b)).max(axis=(1, 2, 3)).mean() for b in calibration]) / 127.5
  scale = static.variables['params']['conv1']['conv_general_dilated0_lhs_scale'].array
  assert float(np.asarray(scale).ravel()[0]) == pytest.approx(expected, rel=1e-5)
  assert isinstance(static.variables['params']['fc1']['kernel'].array.qvalue, jax.Array)
  assert static.variables['params']['fc1']['kernel'].array.qvalue.dtype == jnp.int8
  sizes = quantization.size_report(variables['params'], static.variables['params'])
  assert sizes['float32_bytes'] == 4 * 61706
  # 61,470 kernel weights in int8; scales and 236 biases in float32
  assert sizes['int8_bytes'] == 61470 and 3.8 < sizes['compression'] < 4.0


@pytest.mark.slow  # three short LeNet-5 runs: ~85 s on the loaded 2-core machine
@pytest.mark.real_data
def test_pruned_training_in_the_shared_loop_resumes_bit_identically(mnist_data_dir, tmp_path,
                                                                     monkeypatch):
  import functools
  import os
  from experiments import classification
  from research.training import checkpointing, loop
  from tests.helpers import assert_trees_identical, run_interrupted, small_mnist
  config = small_mnist(mnist_data_dir)  # LeNet-5, 30 steps, checkpoints every 5
  prune = PruningConfig(sparsity=0.8, initial_sparsity=0.2, scope='per_layer', begin_step=2,
                        update_every=4, num_updates=5)  # mask updates at 2, 6, ..., 22
  monkeypatch.setattr(loop, 'run', functools.partial(
      loop.run, wrap_optimizer=lambda optimizer: pruning.wrap(optimizer, prune)))
  classification.run(config, str(tmp_path / 'straight'))

  run_interrupted(classification.run, config, str(tmp_path / 'resumed'), monkeypatch)
  assert sorted(os.listdir(tmp_path / 'resumed' / 'checkpoints')) == ['10', '5']
  classification.run(config, str(tmp_path / 'resumed'))  # resumes at step 10, mid-schedule

  straight = checkpointing.load_state(str(tmp_path / 'straight'))
  resumed = checkpointing.load_state(str(tmp_path / 'resumed'))
  assert_trees_identical(straight, resumed)
  report = pruning.sparsity_report(resumed['params'], prune)
  for layer in ('conv1/kernel', 'conv2/kernel', 'fc1/kernel', 'fc2/kernel'):
    size = report['layers'][layer]['size']
    assert report['layers'][layer]['zeros'] == round(0.8 * size)
  assert report['layers'].keys() == {'conv1/kernel', 'conv2/kernel', 'fc1/kernel', 'fc2/kernel'}


def test_excluded_layers_stay_in_float():
  model = __import__('research.models', fromlist=['build_model']).build_model({'name': 'lenet5'}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  quantized = quantization.ptq(model, variables, (32, 32, 1), static=False, exclude='logits|conv1')
  params = quantized.variables['params']
  for name in ('logits', 'conv1'):
    assert isinstance(params[name]['kernel'], jax.Array)
    np.testing.assert_array_equal(params[name]['kernel'], variables['params'][name]['kernel'])
  assert params['conv2']['kernel'].array.qvalue.dtype == jnp.int8
  sizes = quantization.size_report(variables['params'], params)
  assert sizes['int8_bytes'] == 5 * 5 * 6 * 16 + 400 * 120 + 120 * 84
