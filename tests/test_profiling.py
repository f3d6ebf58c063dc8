"""research.tools.profiling: kernels sorted into kinds, and a traced step's convolutions counted."""
import jax
import jax.numpy as jnp
import pytest

from research.tools import profiling
from research.errors import ConfigError
from research.models import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('name,kind', [
    # Kernel names seen in an H100 trace of ResNet-50 (bfloat16, XLA on cuDNN / cuBLAS).
    ('sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64', 'convolution'),
    ('sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc', 'convolution'),
    ('void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816fprop_optimized_bf16>', 'convolution'),
    ('nvjet_sm90_tst_128x256_64x4_2x1_v_bx_coopA_bias_TNN', 'matmul'),
    ('input_reduce_select_fusion_9', 'reduction'),
    ('loop_add_fusion_1', 'elementwise'),
    # XLA:CPU operation names.
    ('ffi_call.73', 'convolution'), ('conv_general_dilated.196', 'convolution'),
    ('convert_fusion.2', 'elementwise'), ('transpose_copy_fusion.169', 'copy'),
    ('maximum_copy_fusion.8', 'elementwise'), ('copy_fusion', 'copy'), ('copy.27', 'copy'),
    ('ynn_fusion.109', 'YNNPACK/XNNPACK fusion'), ('something_else', 'other'),
])
def test_kernel_names_are_sorted_into_kinds(name, kind):
  assert profiling.kind_of(name) == kind


@pytest.mark.parametrize('backend', ['onednn', 'xla'])
def test_a_traced_gradient_step_has_its_five_convolutions(backend):
  """Two convolutions and their gradient: 2 forward, 1 input gradient (the first layer's input
  needs none), 2 weight gradients; whichever backend runs them."""
  def loss(w1, w2, x):
    h = jnp.tanh(conv.conv_general_dilated(x, w1, (1, 1), 'SAME', dimension_numbers=NHWC))
    return jnp.sum(conv.conv_general_dilated(h, w2, (1, 1), 'SAME', dimension_numbers=NHWC) ** 2)

  with conv.choice(backend):
    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    args = (jnp.ones((3, 3, 4, 8)), jnp.ones((3, 3, 8, 8)), jnp.ones((8, 16, 16, 4)))
    jax.block_until_ready(step(*args))
  result = profiling.breakdown(step, args, calls=2)
  assert result['by_kind']['convolution']['kernels'] == 5
  by_kind = result['by_kind'].values()
  assert result['busy_ms_per_call'] == pytest.approx(sum(v['ms'] for v in by_kind))
  assert 0 < result['by_kind']['convolution']['ms'] <= result['busy_ms_per_call']
  assert 'convolution' in profiling.format_breakdown(result)


def test_a_trace_without_operations_is_a_clear_error():
  with pytest.raises(ConfigError, match='names no XLA operations'):
    profiling.breakdown(lambda: 1.0, (), calls=1)
