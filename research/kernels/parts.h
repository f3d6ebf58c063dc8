// Splitting one FFI call's work over XLA's intra-op thread pool (shared by the kernels here).
//
// A call's work comes in `total` parts that the calling thread and the pool's threads claim
// one at a time: a pool thread that starts late finds nothing left, so no thread waits on a
// queue, and the caller never blocks on work that has not started. Each part runs with
// OpenMP limited to one thread, so oneDNN primitives run single-threaded inside it.
#ifndef CONVLAB_KERNELS_PARTS_H_
#define CONVLAB_KERNELS_PARTS_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "xla/ffi/api/ffi.h"

namespace convlab {

struct Parts {
  Parts(int total, std::function<void(int)> work) : total(total), work(std::move(work)) {}
  const int total;
  const std::function<void(int)> work;
  std::atomic<int> next{0};
  int finished = 0;  // guarded by mu, as is error
  std::string error;
  std::mutex mu;
  std::condition_variable all_finished;

  void ClaimAndRun() {
    for (int i; (i = next.fetch_add(1)) < total;) {
      std::string failure;
      const int threads = omp_get_max_threads();
      omp_set_num_threads(1);  // oneDNN reads this thread's OpenMP setting; restored below
      try {
        work(i);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      omp_set_num_threads(threads);
      std::lock_guard<std::mutex> lock(mu);
      if (!failure.empty() && error.empty()) error = failure;
      if (++finished == total) all_finished.notify_all();
    }
  }
};

// Runs work(0), ..., work(total - 1) on this thread and XLA's pool; returns the first error.
inline std::string RunParts(xla::ffi::ThreadPool& pool, int total, std::function<void(int)> work) {
  auto parts = std::make_shared<Parts>(total, std::move(work));
  for (int i = 1; i < total; ++i) pool.Schedule([parts] { parts->ClaimAndRun(); });
  parts->ClaimAndRun();
  std::unique_lock<std::mutex> lock(parts->mu);
  parts->all_finished.wait(lock, [&] { return parts->finished == parts->total; });
  return parts->error;
}

// The batch [0, n) as contiguous (first, count) ranges, one per pool thread, sizes within 1.
inline std::vector<std::pair<int64_t, int64_t>> BatchParts(int64_t n,
                                                           xla::ffi::ThreadPool& pool) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(n, pool.num_threads()));
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t p = 0, first = 0; p < parts; ++p) {
    const int64_t count = n / parts + (p < n % parts);
    ranges.emplace_back(first, count);
    first += count;
  }
  return ranges;
}

}  // namespace convlab

#endif  // CONVLAB_KERNELS_PARTS_H_
