// All-reduce and point-to-point bandwidth, printed the nccl-tests way: size, count, type, time,
// algbw and busbw (all-reduce busbw = algbw * 2(n-1)/n, the figure comparable across rank
// counts), with every result checked while timing (inputs are small integers in floats, so the
// exact sum is known; a wrong element is counted, never hidden). The transport part streams
// a window of messages from rank 0 to rank 1 over each transport ("mpi", "ucx"), osu_bw style.
//
//   mpirun -np 4 build/bench/bench_collectives
//   mpirun -np 2 build/bench/bench_collectives --max-bytes 16MiB --transports ucx --json out.json
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <numeric>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"

using namespace parafuse;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double max_over_ranks(double value, MPI_Comm comm) {
  double result = 0;
  PF_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, comm));
  return result;
}

int64_t sum_over_ranks(int64_t value, MPI_Comm comm) {
  int64_t result = 0;
  PF_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_INT64_T, MPI_SUM, comm));
  return result;
}

struct Options {
  size_t min_bytes = 1 << 10, max_bytes = 64 << 20, transport_max_bytes = 16 << 20;
  int iters = 20, warmup = 3, window = 4;
  int64_t timeout_ms = 60000;
  std::vector<std::string> transports{"mpi", "ucx"};
  std::string json_path;
};

// Element i on rank r is (i mod 4096) + r + 1; the sum over n ranks is exact in F32.
float input(int rank, size_t i) {
  return float(i % 4096 + size_t(rank) + 1);
}
float expected_sum(int n, size_t i) {
  return float(size_t(n) * (i % 4096) + size_t(n * (n + 1) / 2));
}

nlohmann::json bench_all_reduce(const Options& o, int rank, int n) {
  MpiComm comm(MPI_COMM_WORLD, 0, rank);
  std::vector<int> ranks(size_t(n), 0);
  std::iota(ranks.begin(), ranks.end(), 0);
  MpiCollectives world(comm.get(), "world", ranks, std::chrono::milliseconds(o.timeout_ms));
  if (rank == 0) {
    fmt::print("# all_reduce_sum over {} ranks ({}), {} iterations after {} warm-up\n", n,
               world.name(), o.iters, o.warmup);
    fmt::print("#{:>12} {:>12} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}\n", "size(B)", "count", "type",
               "redop", "time(us)", "algbw", "busbw", "#wrong");
    fmt::print("#{:>12} {:>12} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}\n", "", "(elements)", "", "",
               "", "(GB/s)", "(GB/s)", "");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const size_t count = bytes / sizeof(float);
    std::vector<float> pristine(count), data(count);
    for (size_t i = 0; i < count; ++i) pristine[i] = input(rank, i);
    Tensor t{data.data(), DType::F32, 1, int64_t(count), int64_t(count)};
    double timed = 0;
    int64_t wrong = 0;
    for (int it = -o.warmup; it < o.iters; ++it) {
      std::memcpy(data.data(), pristine.data(), bytes);  // in place: restore the inputs
      const auto start = Clock::now();
      world.all_reduce_sum(t);
      if (it >= 0) timed += seconds_since(start);
      for (size_t i = 0; i < count; ++i) wrong += data[i] != expected_sum(n, i);
    }
    const double time = max_over_ranks(timed / o.iters, MPI_COMM_WORLD);
    wrong = sum_over_ranks(wrong, MPI_COMM_WORLD);
    const double algbw = double(bytes) / time / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    if (rank == 0) {
      fmt::print(" {:>12} {:>12} {:>6} {:>6} {:>10.1f} {:>9.3f} {:>9.3f} {:>8}\n", bytes, count,
                 "float", "sum", time * 1e6, algbw, busbw, wrong);
    }
    rows.push_back({{"bytes", bytes},
                    {"count", count},
                    {"type", "float"},
                    {"redop", "sum"},
                    {"time_us", time * 1e6},
                    {"algbw_gbs", algbw},
                    {"busbw_gbs", busbw},
                    {"wrong", wrong}});
  }
  return rows;
}

// Rank 0 streams `window` messages at a time to rank 1, which acknowledges each window;
// time per message and bandwidth are rank 0's. Other ranks only take part in construction.
nlohmann::json bench_transport(const Options& o, const std::string& kind, int rank) {
  auto transport = make_transport(kind, MPI_COMM_WORLD, std::chrono::milliseconds(o.timeout_ms));
  if (rank == 0) {
    fmt::print("\n# {} transport, rank 0 -> rank 1, {} messages in flight, {} iterations\n",
               transport->name(), o.window, o.iters);
    fmt::print("#{:>12} {:>12} {:>10} {:>9} {:>8}\n", "size(B)", "count", "time(us)", "bw",
               "#wrong");
    fmt::print("#{:>12} {:>12} {:>10} {:>9} {:>8}\n", "", "(elements)", "/message", "(GB/s)", "");
  }
  nlohmann::json rows = nlohmann::json::array();
  const int w = o.window;
  for (size_t bytes = o.min_bytes; bytes <= o.transport_max_bytes; bytes *= 2) {
    const size_t count = bytes / sizeof(float);
    std::vector<std::vector<float>> buffers(size_t(rank <= 1 ? w : 0),
                                            std::vector<float>(count, -1.0f));
    float ack_value = 0;
    Tensor ack{&ack_value, DType::F32, 1, 1, 1};
    double timed = 0;
    int64_t wrong = 0;
    for (int it = -o.warmup; it < o.iters && rank <= 1; ++it) {
      const uint64_t base = uint64_t(it + o.warmup) * uint64_t(w + 1);
      std::vector<std::unique_ptr<TransportRequest>> requests;
      const auto start = Clock::now();
      for (int k = 0; k < w; ++k) {
        Tensor t{buffers[size_t(k)].data(), DType::F32, 1, int64_t(count), int64_t(count)};
        if (rank == 0) {
          for (size_t i = 0; i < count; i += 1024) buffers[size_t(k)][i] = float(base + k + i);
          requests.push_back(transport->send(t, 1, base + uint64_t(k)));
        } else {
          requests.push_back(transport->recv(t, 0, base + uint64_t(k)));
        }
      }
      for (auto& r : requests) r->wait();
      if (rank == 0) {
        transport->recv(ack, 1, base + uint64_t(w))->wait();
        if (it >= 0) timed += seconds_since(start);
      } else {
        for (int k = 0; k < w; ++k) {
          for (size_t i = 0; i < count; i += 1024) {
            wrong += buffers[size_t(k)][i] != float(base + k + i);
          }
        }
        transport->send(ack, 0, base + uint64_t(w))->wait();
      }
    }
    const double per_message =
        max_over_ranks(rank == 0 ? timed / o.iters / w : 0.0, MPI_COMM_WORLD);
    wrong = sum_over_ranks(wrong, MPI_COMM_WORLD);
    const double bw = double(bytes) / per_message / 1e9;
    if (rank == 0) {
      fmt::print(" {:>12} {:>12} {:>10.1f} {:>9.3f} {:>8}\n", bytes, count, per_message * 1e6, bw,
                 wrong);
    }
    rows.push_back({{"transport", kind},
                    {"bytes", bytes},
                    {"time_us", per_message * 1e6},
                    {"bw_gbs", bw},
                    {"wrong", wrong}});
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  Options o;
  CLI::App app{"parafuse collective and transport bandwidth (run under mpirun)"};
  app.add_option("--min-bytes", o.min_bytes, "Smallest message (e.g. 1KiB)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "Largest all-reduce (e.g. 64MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--transport-max-bytes", o.transport_max_bytes, "Largest send/recv message")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--iters", o.iters, "Timed iterations per size")->capture_default_str();
  app.add_option("--warmup", o.warmup, "Untimed iterations first")->capture_default_str();
  app.add_option("--window", o.window, "Messages in flight (transport)")->capture_default_str();
  app.add_option("--transports", o.transports, "Transports to measure (mpi, ucx; none: skip)")
      ->capture_default_str();
  app.add_option("--timeout-ms", o.timeout_ms, "Timeout of every call")->capture_default_str();
  app.add_option("--json", o.json_path, "Rank 0 writes the results as JSON here");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return mpi.rank() == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
  }
  try {
    PF_CHECK(o.min_bytes >= sizeof(float) && o.min_bytes <= o.max_bytes && o.iters >= 1 &&
                 o.warmup >= 0 && o.window >= 1,
             "bad sizes or counts: min {} max {} iters {} warmup {} window {}", o.min_bytes,
             o.max_bytes, o.iters, o.warmup, o.window);
    nlohmann::json result = {{"benchmark", "bench_collectives"}, {"ranks", mpi.size()}};
    result["all_reduce"] = bench_all_reduce(o, mpi.rank(), mpi.size());
    result["transport"] = nlohmann::json::array();
    for (const std::string& kind : o.transports) {
      if (kind == "none") continue;
      if (mpi.size() < 2) {
        if (mpi.rank() == 0) fmt::print("\n# {} transport: skipped, needs 2 ranks\n", kind);
        continue;
      }
      for (auto& row : bench_transport(o, kind, mpi.rank())) result["transport"].push_back(row);
    }
    int64_t wrong = 0;
    for (const auto& row : result["all_reduce"]) wrong += row["wrong"].get<int64_t>();
    for (const auto& row : result["transport"]) wrong += row["wrong"].get<int64_t>();
    if (mpi.rank() == 0 && !o.json_path.empty()) {
      std::ofstream(o.json_path) << result.dump(2) << "\n";
      fmt::print("wrote {}\n", o.json_path);
    }
    if (wrong != 0) {
      if (mpi.rank() == 0) fmt::print(stderr, "error: {} wrong results\n", wrong);
      return 1;
    }
  } catch (const Error& e) {
    fmt::print(stderr, "error: {} ({})\n", e.what(), e.where());
    MpiSession::abort(1);
  }
  return 0;
}
