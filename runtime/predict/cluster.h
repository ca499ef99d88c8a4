// What `parafuse predict` knows about a machine: a cluster YAML (configs/clusters/) read by the
// one strict config reader, so a typo or a missing field is one error naming the file and line.
//
// Every number here is a rate or a latency that came from somewhere a reader can check: a vendor
// datasheet, a published microbenchmark (nccl-tests tables, NCCL's own tuning model) or a
// measurement (`parafuse predict --calibrate`). The YAML says which, in `_source` keys beside the
// values; the reader keeps those texts so that `predict` prints each constant with its source.
// Nothing is fitted to the results the predictor is later compared with.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace parafuse {

// One constant as `predict` prints it: "device.memory_bandwidth_gbs = 2935 (source ...)".
struct ClusterConstant {
  std::string key;
  double value = 0;
  std::string source;  // the `_source` text of its section, empty when none
};

// An all-reduce measured on this machine for one rank count (from --calibrate): the time of a
// message of S bytes is latency_us + S * 2(p-1)/p / busbw (nccl-tests' bus bandwidth).
struct MeasuredAllReduce {
  int ranks = 0;
  double latency_us = 0;
  double busbw_gbs = 0;
};

struct ClusterSpec {
  std::string origin;  // the file, for messages
  std::string name;
  int nodes = 1;
  int devices_per_node = 1;

  // One device (a GPU, or one CPU rank for a calibrated file).
  std::string device_name;
  double memory_gib = 0;            // usable memory per device
  double memory_bandwidth_gbs = 0;  // achievable streaming read bandwidth
  // Achievable dense GEMM rate by weight dtype ("bf16", "fp8", "f32"); absent: not known.
  std::optional<double> gemm_tflops_bf16, gemm_tflops_fp8, gemm_tflops_f32;
  double kernel_launch_us = 0;  // the fixed cost of one kernel (op) in a decode step
  // How much of the shorter of weight reads and GEMM compute hides behind the longer, 0..1:
  // 1 is the roofline (a GPU kernel streams weights while its tensor cores compute; the default
  // when the file does not say), 0 means they add up (one CPU thread packs, then computes).
  // `--calibrate` measures it.
  double compute_memory_overlap = 1.0;

  // Collectives inside a node, NCCL's ring model: latency = base + 2(p-1) hops.
  double intra_allreduce_busbw_gbs = 0;
  double intra_allreduce_base_latency_us = 0;
  double intra_hop_latency_us = 0;
  double intra_p2p_bandwidth_gbs = 0;  // one direction, stage-to-stage hand-off
  double intra_p2p_latency_us = 0;

  // Across nodes (needed when nodes > 1): one NIC of nic_bandwidth_gbs per rail.
  int nics_per_node = 0;
  double nic_bandwidth_gbs = 0;
  double inter_hop_latency_us = 0;
  double inter_p2p_latency_us = 0;

  std::vector<MeasuredAllReduce> allreduce_measured;

  // Everything above as printed, in file order, with its source.
  std::vector<ClusterConstant> constants;

  int total_devices() const { return nodes * devices_per_node; }
  // GEMM rate for a weight dtype; throws naming the file and the missing key.
  double gemm_tflops(const std::string& dtype) const;
};

// Throws parafuse::Error "FILE:LINE: ..." for unknown keys (with a did-you-mean), missing keys,
// wrong types and values out of range.
ClusterSpec parse_cluster_yaml(const std::string& text, const std::string& origin);
ClusterSpec load_cluster(const std::string& path);

// The YAML a ClusterSpec reads back as (what --calibrate writes); `sources` become `_source`.
std::string to_cluster_yaml(const ClusterSpec& spec, const std::string& header_comment,
                            const std::string& device_source, const std::string& intra_source);

}  // namespace parafuse
