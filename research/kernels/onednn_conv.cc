// 2-D convolution on the CPU through oneDNN, as XLA FFI custom calls for JAX.
//
// Layouts are JAX's: images NHWC, kernels HWIO (I = input channels per group), float32.
// Three calls, each with the same attributes (strides, padding, kernel dilation, groups):
//   convlab_conv_forward        (x, w)  -> y
//   convlab_conv_backward_data  (dy, w) -> dx   (dx's shape comes from the result buffer)
//   convlab_conv_backward_weights (x, dy) -> dw
// and convlab_materialize (x) -> x, in place, which XLA cannot see through (research/models/
// residual.py says why that helps).
//
// Threads: each call splits the batch into one part per thread of XLA's intra-op pool and runs
// every part as a single-threaded oneDNN primitive, on the calling thread and on the pool's
// (parts.h). So
// the convolutions use the threads XLA already keeps busy, instead of OpenMP teams of their own
// that would wake, spin and compete with XLA's threads for the same cores between calls
// (BENCHMARKS.md). The kernel gradient's parts are added in a fixed order: results do not
// depend on which thread ran what.
//
// Kernels are passed to oneDNN in the layout it prefers (a small reorder); images are read
// and written in place as NHWC. Primitives are cached per shape, so a jitted step pays the
// oneDNN setup once; each call has its own scratchpad, so concurrent calls are safe. Built and
// loaded by research/kernels/onednn.py.
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "parts.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using convlab::BatchParts;
using convlab::RunParts;
using dnnl::memory;
using Dims = memory::dims;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  int64_t n, c, h, w;      // input
  int64_t o, oh, ow;       // output
  int64_t kh, kw, groups;  // kernel
  Dims strides, pad_lo, pad_hi, dilation;  // dilation in oneDNN's convention (0 = none)

  Dims src() const { return {n, c, h, w}; }
  Dims dst() const { return {n, o, oh, ow}; }
  Dims weights() const {
    if (groups == 1) return {o, c, kh, kw};
    return {groups, o / groups, c / groups, kh, kw};
  }
  // HWIO with I = c / groups: the strides of oneDNN's logical weight dims in that layout.
  memory::desc hwio() const {
    const int64_t i = c / groups;
    if (groups == 1) return memory::desc(weights(), memory::data_type::f32, Dims{1, o, kw * i * o, i * o});
    const int64_t og = o / groups;
    return memory::desc(weights(), memory::data_type::f32,
                        Dims{og, 1, o, kw * i * o, i * o});
  }
  auto key() const {
    return std::make_tuple(n, c, h, w, o, oh, ow, kh, kw, groups, strides, pad_lo, pad_hi, dilation);
  }
};

memory::desc nhwc(const Dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::nhwc);
}
memory::desc any(const Dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::any);
}

// From JAX's dims: x NHWC, w HWIO, y NHWC; `dilation` in JAX's convention (1 = none).
Geometry MakeGeometry(const int64_t* x_dims, const int64_t* w_dims, const int64_t* y_dims,
                      const int64_t* strides, const int64_t* pad_lo, const int64_t* pad_hi,
                      const int64_t* dilation, int64_t groups) {
  Geometry g;
  g.n = x_dims[0]; g.h = x_dims[1]; g.w = x_dims[2]; g.c = x_dims[3];
  g.kh = w_dims[0]; g.kw = w_dims[1]; g.o = w_dims[3];
  g.oh = y_dims[1]; g.ow = y_dims[2];
  g.groups = groups;
  g.strides = {strides[0], strides[1]};
  g.pad_lo = {pad_lo[0], pad_lo[1]};
  g.pad_hi = {pad_hi[0], pad_hi[1]};
  g.dilation = {dilation[0] - 1, dilation[1] - 1};
  return g;
}

Geometry MakeGeometry(ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
                      ffi::Span<const int64_t> y_dims, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                      ffi::Span<const int64_t> dilation, int64_t groups) {
  return MakeGeometry(x_dims.begin(), w_dims.begin(), y_dims.begin(), strides.begin(),
                      pad_lo.begin(), pad_hi.begin(), dilation.begin(), groups);
}

// Each call brings its own scratchpad: XLA may run one primitive on several threads at once.
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      nhwc(g.src()), any(g.weights()), nhwc(g.dst()), g.strides, g.dilation, g.pad_lo, g.pad_hi,
      UserScratchpad());
}

// One cache per kind of primitive; entries live for the process (a model has few shapes).
template <typename Entry>
Entry& Cached(const Geometry& g, std::map<decltype(g.key()), std::unique_ptr<Entry>>& cache,
              std::mutex& mu) {
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[g.key()];
  if (!slot) slot = std::make_unique<Entry>(g);
  return *slot;
}

struct Forward {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  explicit Forward(const Geometry& g) : pd(ForwardDesc(g)), prim(pd) {}
};
// Both backward passes take the same descriptions: images, kernel, geometry, forward hint.
template <typename Primitive>
struct Backward {
  typename Primitive::primitive_desc pd;
  Primitive prim;
  static typename Primitive::primitive_desc Describe(const Geometry& g) {
    return typename Primitive::primitive_desc(
        cpu_engine(), dnnl::algorithm::convolution_direct, nhwc(g.src()), any(g.weights()),
        nhwc(g.dst()), g.strides, g.dilation, g.pad_lo, g.pad_hi, ForwardDesc(g),
        UserScratchpad());
  }
  explicit Backward(const Geometry& g) : pd(Describe(g)), prim(pd) {}
};
using BackwardData = Backward<dnnl::convolution_backward_data>;
using BackwardWeights = Backward<dnnl::convolution_backward_weights>;

// The user's HWIO kernel as a oneDNN memory in the layout `want` (reordered if it differs).
memory KernelIn(const Geometry& g, const memory::desc& want, float* data, dnnl::stream& s,
                std::vector<float>& scratch) {
  memory user(g.hwio(), cpu_engine(), data);
  if (want == user.get_desc()) return user;
  scratch.resize(want.get_size() / sizeof(float));
  memory converted(want, cpu_engine(), scratch.data());
  dnnl::reorder(user, converted).execute(s, user, converted);
  return converted;
}

ffi::Error Outcome(const std::string& error) {
  if (error.empty()) return ffi::Error::Success();
  return ffi::Error(ffi::ErrorCode::kInternal, "oneDNN convolution: " + error);
}

#define CONV_ATTRS(binding)                            \
  binding.Attr<ffi::Span<const int64_t>>("strides")    \
      .Attr<ffi::Span<const int64_t>>("padding_lo")    \
      .Attr<ffi::Span<const int64_t>>("padding_hi")    \
      .Attr<ffi::Span<const int64_t>>("dilation")      \
      .Attr<int64_t>("groups")

// Every convolution call: XLA's thread pool, two operands, one result and the attributes.
#define CONV_BINDING \
  CONV_ATTRS(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Ret<F32>())

using F32 = ffi::Buffer<ffi::F32>;
using Span = ffi::Span<const int64_t>;

// Forward and backward-data have the same form: an NHWC image and the kernel in, an NHWC
// image out (x -> y, and dy -> dx). `kIsForward` tells which way round the images are.
template <typename Entry, bool kIsForward, int InArg, int OutArg>
ffi::Error ImageByKernel(ffi::ThreadPool pool, F32 in, F32 w, ffi::ResultBuffer<ffi::F32> out,
                         Span strides, Span pad_lo, Span pad_hi, Span dilation, int64_t groups) {
  static std::map<decltype(Geometry().key()), std::unique_ptr<Entry>> cache;
  static std::mutex mu;
  const auto x_dims = kIsForward ? in.dimensions() : out->dimensions();
  const auto y_dims = kIsForward ? out->dimensions() : in.dimensions();
  const Geometry all = MakeGeometry(x_dims, w.dimensions(), y_dims, strides, pad_lo, pad_hi,
                                    dilation, groups);
  const int64_t x_image = all.h * all.w * all.c, y_image = all.oh * all.ow * all.o;
  const auto parts = BatchParts(all.n, pool);
  return Outcome(RunParts(pool, parts.size(), [&](int p) {
    Geometry g = all;
    g.n = parts[p].second;
    Entry& e = Cached(g, cache, mu);
    dnnl::stream s(cpu_engine());
    std::vector<float> scratch;
    memory kernel = KernelIn(g, e.pd.weights_desc(), w.typed_data(), s, scratch);
    const int64_t first = parts[p].first;
    memory image(nhwc(kIsForward ? g.src() : g.dst()), cpu_engine(),
                 in.typed_data() + first * (kIsForward ? x_image : y_image));
    memory result(nhwc(kIsForward ? g.dst() : g.src()), cpu_engine(),
                  out->typed_data() + first * (kIsForward ? y_image : x_image));
    memory scratchpad(e.pd.scratchpad_desc(), cpu_engine());
    e.prim.execute(s, {{InArg, image}, {DNNL_ARG_WEIGHTS, kernel}, {OutArg, result},
                       {DNNL_ARG_SCRATCHPAD, scratchpad}});
    s.wait();
  }));
}

constexpr auto ConvForward = ImageByKernel<Forward, true, DNNL_ARG_SRC, DNNL_ARG_DST>;
constexpr auto ConvBackwardData =
    ImageByKernel<BackwardData, false, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC>;

// Each part of the batch gives its kernel gradient in HWIO, the first straight into the result;
// the others are added to it in order once all are done.
ffi::Error ConvBackwardWeights(ffi::ThreadPool pool, F32 x, F32 dy,
                               ffi::ResultBuffer<ffi::F32> dw, Span strides, Span pad_lo,
                               Span pad_hi, Span dilation, int64_t groups) {
  static std::map<decltype(Geometry().key()), std::unique_ptr<BackwardWeights>> cache;
  static std::mutex mu;
  const Geometry all = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides,
                                    pad_lo, pad_hi, dilation, groups);
  const auto parts = BatchParts(all.n, pool);
  const size_t size = dw->element_count();
  std::vector<std::vector<float>> partial(parts.size() - 1, std::vector<float>(size));
  const std::string error = RunParts(pool, parts.size(), [&](int p) {
    Geometry g = all;
    g.n = parts[p].second;
    BackwardWeights& b = Cached(g, cache, mu);
    dnnl::stream s(cpu_engine());
    const int64_t first = parts[p].first;
    memory src(b.pd.src_desc(), cpu_engine(), x.typed_data() + first * all.h * all.w * all.c);
    memory diff_dst(b.pd.diff_dst_desc(), cpu_engine(),
                    dy.typed_data() + first * all.oh * all.ow * all.o);
    memory user(g.hwio(), cpu_engine(), p == 0 ? dw->typed_data() : partial[p - 1].data());
    const bool same = b.pd.diff_weights_desc() == user.get_desc();
    memory diff_weights = same ? user : memory(b.pd.diff_weights_desc(), cpu_engine());
    memory scratchpad(b.pd.scratchpad_desc(), cpu_engine());
    b.prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                       {DNNL_ARG_DIFF_WEIGHTS, diff_weights}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
    if (!same) dnnl::reorder(diff_weights, user).execute(s, diff_weights, user);
    s.wait();
  });
  float* sum = dw->typed_data();
  for (const auto& part : partial)
    for (size_t i = 0; i < size; ++i) sum[i] += part[i];
  return Outcome(error);
}

// x -> x. The result shares x's buffer (input_output_aliases), so there is nothing to copy.
ffi::Error Materialize(F32 x, ffi::ResultBuffer<ffi::F32> out) {
  if (out->typed_data() != x.typed_data())
    std::memcpy(out->typed_data(), x.typed_data(), x.size_bytes());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_conv_forward, ConvForward,
                              CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_conv_backward_data, ConvBackwardData,
                              CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_conv_backward_weights, ConvBackwardWeights,
                              CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(convlab_materialize, Materialize,
                              ffi::Ffi::Bind().Arg<F32>().Ret<F32>());

// The implementation oneDNN picks for one pass (0 forward, 1 backward-data, 2 backward-weights)
// of a geometry (arguments as MakeGeometry's), e.g. "brgconv:avx2" or "ref:any" (its unoptimised
// reference code, which research/models/conv.py leaves to XLA), or "error: ..." where oneDNN
// refuses the geometry. The text lives until the calling thread's next call.
extern "C" const char* convlab_conv_implementation(int pass, const int64_t* x_dims,
                                                   const int64_t* w_dims, const int64_t* y_dims,
                                                   const int64_t* strides, const int64_t* pad_lo,
                                                   const int64_t* pad_hi, const int64_t* dilation,
                                                   int64_t groups) {
  static thread_local std::string name;
  try {
    const Geometry g = MakeGeometry(x_dims, w_dims, y_dims, strides, pad_lo, pad_hi, dilation,
                                    groups);
    if (pass == 0) name = ForwardDesc(g).impl_info_str();
    else if (pass == 1) name = BackwardData::Describe(g).impl_info_str();
    else if (pass == 2) name = BackwardWeights::Describe(g).impl_info_str();
    else name = "error: pass " + std::to_string(pass) + " (expected 0, 1 or 2)";
  } catch (const std::exception& e) {  // dnnl::error and allocation failures alike
    name = std::string("error: ") + e.what();
  } catch (...) {
    name = "error: unknown exception";
  }
  return name.c_str();
}
