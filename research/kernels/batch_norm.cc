// BatchNorm's per-feature gradient sums on the CPU, as XLA FFI custom calls for JAX.
//
//   convlab_bn_gradient_sums      (dy, x, mean)      -> (sum of dy, sum of dy (x - mean))
//   convlab_bn_relu_gradient_sums (dz, out, x, mean) -> the same, with dy = dz where out > 0
//                                                       and 0 elsewhere (out = relu(bn(x)))
//
// Features are the last axis; the sums run over all others. XLA:CPU computes each such sum as
// a library reduction whose operands must be in memory, so it first writes the masked gradient
// and x - mean out and then reads them back; this reads each operand once, for both sums
// (research/models/norm.py).
//
// The pixels are split into one contiguous range per thread of XLA's pool (parts.h). Sums
// accumulate in float over blocks of 256 pixels and in double across blocks; the parts' totals
// are added in a fixed order, so results do not depend on which thread ran what.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "parts.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
constexpr int64_t kBlock = 256;  // pixels summed in float before adding to the double totals

// Adds the sums over pixels [first, last) of (..., c) arrays to totals[0, c) and [c, 2c).
// Pixels are taken m at a time as one flat run of m * c floats (>= 64 lanes where c allows),
// lane j summing feature j % c, so the inner loop is long and vectorises for any c.
template <bool kMasked>
void SumPixels(const float* __restrict dy, const float* __restrict out,
               const float* __restrict x, const float* mean, int64_t c, int64_t first,
               int64_t last, double* totals) {
  const int64_t m = std::max<int64_t>(1, 64 / c), width = m * c;
  std::vector<float> lane_mean(width), lane_sum(width), lane_centred(width);
  for (int64_t j = 0; j < width; ++j) lane_mean[j] = mean[j % c];
  const float* __restrict mu = lane_mean.data();
  float* __restrict sum = lane_sum.data();
  float* __restrict centred = lane_centred.data();
  for (int64_t start = first; start < last; start += kBlock) {
    const int64_t stop = std::min(last, start + kBlock);
    std::fill(lane_sum.begin(), lane_sum.end(), 0.0f);
    std::fill(lane_centred.begin(), lane_centred.end(), 0.0f);
    for (int64_t p = start; p < stop; p += m) {
      const int64_t o = p * c, lanes = std::min(m, stop - p) * c;  // fewer at the block's end
      for (int64_t j = 0; j < lanes; ++j) {
        const float d = dy[o + j];  // read unconditionally, so that the select vectorises
        const float g = kMasked ? (out[o + j] > 0.0f ? d : 0.0f) : d;
        sum[j] += g;
        centred[j] += g * (x[o + j] - mu[j]);
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      totals[j % c] += sum[j];
      totals[c + j % c] += centred[j];
    }
  }
}

template <bool kMasked>
ffi::Error GradientSums(ffi::ThreadPool& pool, const F32& dy, const float* out, const F32& x,
                        const F32& mean, Out& sum_dy, Out& sum_centred) {
  const auto dims = x.dimensions();
  if (dims.size() < 1 || dy.dimensions().size() != dims.size())
    return ffi::Error::InvalidArgument("BatchNorm gradient sums: dy and x differ in rank");
  for (size_t i = 0; i < dims.size(); ++i)
    if (dy.dimensions()[i] != dims[i])
      return ffi::Error::InvalidArgument("BatchNorm gradient sums: dy and x differ in shape");
  const int64_t c = dims.back();
  if (mean.element_count() != static_cast<size_t>(c) ||
      sum_dy->element_count() != static_cast<size_t>(c) ||
      sum_centred->element_count() != static_cast<size_t>(c))
    return ffi::Error::InvalidArgument("BatchNorm gradient sums: expected " + std::to_string(c) +
                                       " features in mean and results");
  const auto parts = convlab::BatchParts(c == 0 ? 0 : x.element_count() / c, pool);
  std::vector<std::vector<double>> totals(parts.size(), std::vector<double>(2 * c, 0.0));
  const std::string error = convlab::RunParts(pool, parts.size(), [&](int p) {
    SumPixels<kMasked>(dy.typed_data(), out, x.typed_data(), mean.typed_data(), c,
                       parts[p].first, parts[p].first + parts[p].second, totals[p].data());
  });
  if (!error.empty()) return ffi::Error(ffi::ErrorCode::kInternal, "BatchNorm: " + error);
  for (int64_t k = 0; k < c; ++k) {
    double sum = 0.0, centred = 0.0;
    for (const auto& part : totals) {  // in part order
      sum += part[k];
      centred += part[c + k];
    }
    sum_dy->typed_data()[k] = static_cast<float>(sum);
    sum_centred->typed_data()[k] = static_cast<float>(centred);
  }
  return ffi::Error::Success();
}

ffi::Error BnGradientSums(ffi::ThreadPool pool, F32 dy, F32 x, F32 mean, Out sum_dy,
                          Out sum_centred) {
  return GradientSums<false>(pool, dy, nullptr, x, mean, sum_dy, sum_centred);
}

ffi::Error BnReluGradientSums(ffi::ThreadPool pool, F32 dz, F32 out, F32 x, F32 mean,
                              Out sum_dy, Out sum_centred) {
  if (out.element_count() != x.element_count())
    return ffi::Error::InvalidArgument("BatchNorm gradient sums: out and x differ in size");
  return GradientSums<true>(pool, dz, out.typed_data(), x, mean, sum_dy, sum_centred);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_bn_gradient_sums, BnGradientSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_bn_relu_gradient_sums, BnReluGradientSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());
