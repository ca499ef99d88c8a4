#include "launcher/calibrate.h"

#include <mpi.h>
#include <unistd.h>  // gethostname, sysconf

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "launcher/commands.h"
#include "parallel/mpi_comm.h"

namespace parafuse {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs before every timed repetition: a barrier over all ranks, so that every rank times the
// same moments and ranks sharing cores or memory see each other's load (none for one rank).
using Sync = std::function<void()>;

// The median time of `reps` synchronized runs of fn, after one untimed warm-up run. The median,
// not the best: with ranks sharing cores the best run is one where a rank had a core alone,
// which a step of the job never has.
double median_seconds(const Sync& sync, int reps, const std::function<void()>& fn) {
  sync();
  fn();
  std::vector<double> times;
  for (int rep = 0; rep < reps; ++rep) {
    sync();
    const double t0 = now();
    fn();
    times.push_back(now() - t0);
  }
  std::nth_element(times.begin(), times.begin() + long(times.size() / 2), times.end());
  return times[times.size() / 2];
}

// Streaming read of 256 MiB: the plain memory rate, printed beside the decode product's.
double read_bandwidth_gbs(const Sync& sync) {
  std::vector<float> data(size_t(64) << 20, 1.0f);
  volatile float sink = 0;
  const double seconds = median_seconds(sync, 5, [&] {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 3 < data.size(); i += 4) {
      s0 += data[i];
      s1 += data[i + 1];
      s2 += data[i + 2];
      s3 += data[i + 3];
    }
    sink = sink + s0 + s1 + s2 + s3;
  });
  return double(data.size() * sizeof(float)) / seconds / 1e9;
}

struct GemmRates {
  double tflops = 0;
  double launch_us = 0;
  double decode_read_gbs = 0;  // weight bytes / time of the backend's M = 1 product
  double overlap = 0;          // compute_memory_overlap (cluster.h)
};

// A decode step's products: x (rows, K) through 32 weights of SmolLM2's FFN shape (112 MiB in
// all, far beyond the caches), one after the other as the layers of a step are, with the
// backend's own GEMM. Seconds of the median of 5 synchronized passes.
struct WeightStream {
  static constexpr int64_t K = 576, N = 1536, kWeights = 32;
  std::vector<Buffer> owners = std::vector<Buffer>(kWeights);
  std::vector<Tensor> weights;
  double bytes() const { return double(kWeights) * double(weights.front().bytes()); }
  double flops(int64_t rows) const { return 2.0 * double(rows * N * K * kWeights); }

  explicit WeightStream(Backend& backend) {
    std::vector<float> host(size_t(N * K), 0.01f);
    for (Buffer& owner : owners) {
      weights.push_back(backend.alloc_tensor(owner, DType::F32, N, K));
      backend.upload_f32(host.data(), weights.back());
    }
  }
  double seconds(Backend& backend, const Sync& sync, int64_t rows) const {
    Buffer xb, yb;
    const Tensor x = backend.alloc_tensor(xb, DType::F32, rows, K);
    const Tensor y = backend.alloc_tensor(yb, DType::F32, rows, N);
    std::vector<float> host(size_t(rows * K), 0.01f);
    backend.upload_f32(host.data(), x);
    return median_seconds(sync, 5, [&] {
      for (const Tensor& w : weights) backend.gemm(x, w, y);
      backend.synchronize();
    });
  }
};

GemmRates measure_backend(const std::string& backend_name, const Sync& sync) {
  BackendOptions options;
  options.threads = 1;
  std::unique_ptr<Backend> backend = make_backend(backend_name, options);
  // A decode-like GEMM: 32 rows through a 576 x 1536 weight (SmolLM2's FFN shape).
  constexpr int64_t M = 32, K = 576, N = 1536;
  Buffer xb, wb, yb, nb, rb;
  const Tensor x = backend->alloc_tensor(xb, DType::F32, M, K);
  const Tensor w = backend->alloc_tensor(wb, DType::F32, N, K);
  const Tensor y = backend->alloc_tensor(yb, DType::F32, M, N);
  std::vector<float> host(size_t(N * K), 0.01f);
  backend->upload_f32(host.data(), w);
  backend->upload_f32(host.data(), x);
  GemmRates r;
  const double gemm_s = median_seconds(sync, 5, [&] {
    for (int i = 0; i < 20; ++i) backend->gemm(x, w, y);
    backend->synchronize();
  });
  r.tflops = 2.0 * M * N * K / (gemm_s / 20) / 1e12;
  // Reads: the 1-row pass. Overlap: how far the 32-row pass falls short of reads + compute
  // (compute at the in-cache rate above), relative to the shorter of the two.
  const WeightStream stream(*backend);
  const double read_s = stream.seconds(*backend, sync, 1);
  const double both_s = stream.seconds(*backend, sync, M);
  const double compute_s = stream.flops(M) / (r.tflops * 1e12);
  r.decode_read_gbs = stream.bytes() / read_s / 1e9;
  r.overlap = std::clamp((read_s + compute_s - both_s) / std::min(read_s, compute_s), 0.0, 1.0);
  // The fixed cost of an op: RMSNorm of one row.
  const Tensor row = backend->alloc_tensor(nb, DType::F32, 1, K);
  const Tensor out = backend->alloc_tensor(rb, DType::F32, 1, K);
  backend->upload_f32(host.data(), row);
  std::vector<double> times;
  for (int rep = 0; rep < 2000; ++rep) {
    const double t0 = now();
    backend->rmsnorm(row, Tensor{}, 1e-5f, out);
    backend->synchronize();
    times.push_back(now() - t0);
  }
  std::nth_element(times.begin(), times.begin() + long(times.size() / 2), times.end());
  r.launch_us = times[times.size() / 2] * 1e6;
  return r;
}

double median_all_reduce_seconds(MpiCollectives& world, size_t floats, int reps) {
  std::vector<float> v(floats, 1.0f);
  const Tensor t{v.data(), DType::F32, 1, int64_t(floats), int64_t(floats)};
  for (int i = 0; i < 5; ++i) world.all_reduce_sum(t);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    world.barrier();
    const double t0 = now();
    world.all_reduce_sum(t);
    times.push_back(now() - t0);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// An all-reduce as a decode step meets it: each rank first reads a 4 MiB weight-like slice (a
// sublayer's shard), so ranks arrive at different times and, when ranks share cores, one may be
// descheduled. Returns the mean extra time per iteration that the all-reduce of `floats` adds to
// the read alone (both loops timed the same way, every rank at once).
double in_step_all_reduce_seconds(MpiCollectives& world, size_t floats, int iterations) {
  std::vector<float> slice(size_t(1) << 20, 1.0f);
  std::vector<float> v(floats, 1.0f);
  const Tensor t{v.data(), DType::F32, 1, int64_t(floats), int64_t(floats)};
  volatile float sink = 0;
  auto read_slice = [&] {
    float s0 = 0, s1 = 0;
    for (size_t i = 0; i + 1 < slice.size(); i += 2) {
      s0 += slice[i];
      s1 += slice[i + 1];
    }
    sink = sink + s0 + s1;
  };
  auto loop = [&](bool with_all_reduce) {
    world.barrier();
    const double t0 = now();
    for (int i = 0; i < iterations; ++i) {
      read_slice();
      if (with_all_reduce) world.all_reduce_sum(t);
    }
    world.barrier();
    return (now() - t0) / iterations;
  };
  loop(true);  // warm-up
  double best_without = 1e30, best_with = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    best_without = std::min(best_without, loop(false));
    best_with = std::min(best_with, loop(true));
  }
  return std::max(0.0, best_with - best_without);
}

double mean_over_ranks(MPI_Comm comm, double value, int size) {
  double sum = 0;
  PF_MPI_CHECK(MPI_Allreduce(&value, &sum, 1, MPI_DOUBLE, MPI_SUM, comm));
  return sum / size;
}

double host_memory_gib() {
  const double pages = double(sysconf(_SC_PHYS_PAGES)), page = double(sysconf(_SC_PAGE_SIZE));
  return pages * page / (1024.0 * 1024.0 * 1024.0);
}

}  // namespace

ClusterSpec calibrate_cluster(LaunchContext& launch, const CalibrateOptions& options) {
  const int rank = launch.mpi ? launch.mpi->rank() : 0;
  const int size = launch.mpi ? launch.mpi->size() : 1;
  std::unique_ptr<MpiCollectives> world;
  if (launch.mpi) {
    std::vector<int> ranks(static_cast<size_t>(size));
    std::iota(ranks.begin(), ranks.end(), 0);
    world =
        std::make_unique<MpiCollectives>(MPI_COMM_WORLD, "world", ranks, std::chrono::seconds(120));
    world->barrier();
  }
  auto say = [&](const std::string& line) {
    if (rank == 0 && !options.quiet) fmt::print(stderr, "calibrate: {}\n", line);
  };
  say(fmt::format("measuring {} rank(s) at once", size));
  const Sync sync = [&] {
    if (world) world->barrier();
  };
  double stream = read_bandwidth_gbs(sync);
  GemmRates gemm = measure_backend(options.backend, sync);
  if (world) {
    stream = mean_over_ranks(MPI_COMM_WORLD, stream, size);
    gemm.tflops = mean_over_ranks(MPI_COMM_WORLD, gemm.tflops, size);
    gemm.launch_us = mean_over_ranks(MPI_COMM_WORLD, gemm.launch_us, size);
    gemm.decode_read_gbs = mean_over_ranks(MPI_COMM_WORLD, gemm.decode_read_gbs, size);
    gemm.overlap = mean_over_ranks(MPI_COMM_WORLD, gemm.overlap, size);
  }
  // What the predictor divides weight bytes by: the rate the backend's decode product reads
  // weights at (a GEMV at the bandwidth limit reaches the streaming rate; a packing GEMM does
  // not, and the predictor should see what a step will see).
  const double bandwidth = gemm.decode_read_gbs;
  say(
      fmt::format("streaming read {:.2f} GB/s per rank, decode weight reads {:.2f} GB/s per rank "
                  "({:.0f}% of streaming), GEMM {:.1f} GFLOP/s per rank, compute/read overlap "
                  "{:.2f}, {:.2f} us per op",
                  stream, bandwidth, 100.0 * bandwidth / stream, gemm.tflops * 1e3, gemm.overlap,
                  gemm.launch_us));

  ClusterSpec spec;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  spec.name = fmt::format("{} ({} rank{}, calibrated)", host, size, size > 1 ? "s" : "");
  spec.nodes = 1;
  spec.devices_per_node = size;
  spec.device_name = fmt::format("{} backend rank, 1 thread", options.backend);
  spec.memory_gib = host_memory_gib() / size;
  spec.memory_bandwidth_gbs = bandwidth;
  spec.gemm_tflops_f32 = gemm.tflops;
  spec.kernel_launch_us = gemm.launch_us;
  spec.compute_memory_overlap = gemm.overlap;
  // Without measured all-reduces (one rank) the NCCL-model keys still need values; they are
  // unused at tp 1. With several ranks the measured entry is what the predictor uses.
  spec.intra_allreduce_busbw_gbs = bandwidth;
  spec.intra_p2p_bandwidth_gbs = bandwidth;
  double idle_latency_us = 0;
  if (world && size > 1) {
    const double idle_latency = median_all_reduce_seconds(*world, 2, 2000);
    // What the predictor uses: the all-reduce of one decode row (576 floats) inside a step.
    const double latency = in_step_all_reduce_seconds(*world, 576, 100);
    constexpr size_t kBig = size_t(1) << 20;  // 4 MiB of floats
    const double big = median_all_reduce_seconds(*world, kBig, 20);
    const double traffic = double(kBig * sizeof(float)) * 2.0 * (size - 1) / size;
    const double busbw = traffic / std::max(big - idle_latency, 1e-9) / 1e9;
    spec.allreduce_measured.push_back({size, latency * 1e6, busbw});
    spec.intra_allreduce_busbw_gbs = busbw;
    spec.intra_allreduce_base_latency_us = latency * 1e6;
    spec.intra_p2p_latency_us = latency * 1e6;
    idle_latency_us = idle_latency * 1e6;
    say(
        fmt::format("all-reduce over {} ranks: {:.1f} us in a step ({:.1f} us back to back), "
                    "{:.2f} GB/s bus bandwidth",
                    size, latency * 1e6, idle_latency_us, busbw));
  }
  if (rank == 0 && !options.out_path.empty()) {
    const std::string header = fmt::format(
        "Written by `parafuse predict --calibrate` on {} with {} rank(s): measurements of this "
        "machine, not datasheet numbers (launcher/calibrate.h says how each is measured).",
        host, size);
    const std::string device_source = fmt::format(
        "measured: memory_bandwidth_gbs = weight bytes / time of the {0} backend's 1-row GEMM "
        "through 32 weights of 576x1536 f32 (112 MiB), a plain streaming read of 256 "
        "MiB gave {1:.2f} GB/s, {0} backend GEMM 32x576x1536, "
        "compute_memory_overlap = (t1 + tc - t32) / min(t1, tc) clamped to [0, 1] with t1, t32 "
        "the 1-row and 32-row passes through those weights and tc the 32-row flops at that GEMM "
        "rate, median RMSNorm of one row as the per-op cost; each the median of 5 runs that "
        "every rank starts together, then the mean over {2} rank(s); memory_gib = host memory "
        "/ ranks",
        options.backend, stream, size);
    const std::string intra_source =
        size > 1
            ? fmt::format(
                  "measured with parafuse's MPI all-reduce: latency = the time a 576-float "
                  "all-reduce adds to each rank's 4 MiB read, as in a decode step (back to back "
                  "it takes {:.1f} us); busbw from the median 4 MiB all-reduce (bytes * 2(p-1)/p "
                  "/ (time - back-to-back latency)); p2p uses the in-step latency",
                  idle_latency_us)
            : "one rank: no collective measured; the bandwidths repeat the memory "
              "bandwidth and the latencies are 0 (unused at tp 1)";
    std::ofstream out(options.out_path);
    out << to_cluster_yaml(spec, header, device_source, intra_source);
    PF_CHECK(out.good(), "cannot write --out file '{}'", options.out_path);
    say(fmt::format("wrote {}", options.out_path));
  }
  return spec;
}

}  // namespace parafuse
