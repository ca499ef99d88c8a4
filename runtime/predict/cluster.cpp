// Cluster YAML <-> ClusterSpec, through the strict config reader (runtime/config): every key is
// asked for with its rule, so the list of known keys is this code and unknown ones are refused
// with a did-you-mean. `_source` keys are free text and are kept for printing.
#include "runtime/predict/cluster.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>  // writing the calibrated file

#include "kernels/core/error.h"
#include "runtime/config/config_reader.h"
#include "runtime/config/read_file.h"
#include "runtime/config/value_rules.h"

namespace parafuse {
namespace {

const NumberRule kRate{0.0, std::nullopt, false};  // > 0
const NumberRule kTime{0.0, std::nullopt, true};   // >= 0
const IntRule kCount{1, 1 << 20};

std::string source_of(const ConfigMap& map) {
  const auto s = map.get("_source");
  return s ? s->text("a text saying where the numbers come from") : std::string();
}

struct SectionReader {
  const ConfigMap& map;
  std::string section;
  std::string source;
  ClusterSpec& spec;

  double number(std::string_view key, const NumberRule& rule) {
    const double v = map.require(key).number(rule);
    spec.constants.push_back({fmt::format("{}.{}", section, key), v, source});
    return v;
  }
  std::optional<double> optional_number(std::string_view key, const NumberRule& rule) {
    const auto value = map.get(key);
    if (!value) return std::nullopt;
    const double v = value->number(rule);
    spec.constants.push_back({fmt::format("{}.{}", section, key), v, source});
    return v;
  }
};

}  // namespace

double ClusterSpec::gemm_tflops(const std::string& dtype) const {
  const std::optional<double>& rate = dtype == "fp8"    ? gemm_tflops_fp8
                                      : dtype == "bf16" ? gemm_tflops_bf16
                                                        : gemm_tflops_f32;
  PF_CHECK(rate.has_value(),
           "{}: device.gemm_tflops has no '{}' entry, which --dtype {} needs (known: the "
           "dtypes the file lists)",
           origin, dtype, dtype);
  return *rate;
}

ClusterSpec parse_cluster_yaml(const std::string& text, const std::string& origin) {
  const ConfigDocument doc = ConfigDocument::from_yaml(text, origin, UnknownKeys::Refuse);
  const ConfigMap top = doc.root().map();
  ClusterSpec spec;
  spec.origin = origin;
  spec.name = top.require("name").text("a cluster name");
  spec.nodes = int(top.require("nodes").integer(kCount));
  spec.devices_per_node = int(top.require("devices_per_node").integer(kCount));
  (void)source_of(top);

  {
    const ConfigMap device = top.require("device").map();
    SectionReader r{device, "device", source_of(device), spec};
    spec.device_name = device.require("name").text("a device name");
    spec.memory_gib = r.number("memory_gib", kRate);
    spec.memory_bandwidth_gbs = r.number("memory_bandwidth_gbs", kRate);
    const ConfigMap gemm = device.require("gemm_tflops").map();
    SectionReader g{gemm, "device.gemm_tflops", r.source, spec};
    spec.gemm_tflops_bf16 = g.optional_number("bf16", kRate);
    spec.gemm_tflops_fp8 = g.optional_number("fp8", kRate);
    spec.gemm_tflops_f32 = g.optional_number("f32", kRate);
    if (!spec.gemm_tflops_bf16 && !spec.gemm_tflops_fp8 && !spec.gemm_tflops_f32)
      gemm.value().fail("must give at least one of bf16, fp8, f32");
    spec.kernel_launch_us = r.number("kernel_launch_us", kTime);
    spec.compute_memory_overlap =
        r.optional_number("compute_memory_overlap", NumberRule{0.0, 1.0, true}).value_or(1.0);
  }
  {
    const ConfigMap intra = top.require("intra_node").map();
    SectionReader r{intra, "intra_node", source_of(intra), spec};
    spec.intra_allreduce_busbw_gbs = r.number("allreduce_busbw_gbs", kRate);
    spec.intra_allreduce_base_latency_us = r.number("allreduce_base_latency_us", kTime);
    spec.intra_hop_latency_us = r.number("hop_latency_us", kTime);
    spec.intra_p2p_bandwidth_gbs = r.number("p2p_bandwidth_gbs", kRate);
    spec.intra_p2p_latency_us = r.number("p2p_latency_us", kTime);
  }
  if (const auto inter_value = top.get("inter_node")) {
    const ConfigMap inter = inter_value->map();
    SectionReader r{inter, "inter_node", source_of(inter), spec};
    spec.nics_per_node = int(inter.require("nics_per_node").integer(kCount));
    spec.constants.push_back({"inter_node.nics_per_node", double(spec.nics_per_node), r.source});
    spec.nic_bandwidth_gbs = r.number("nic_bandwidth_gbs", kRate);
    spec.inter_hop_latency_us = r.number("hop_latency_us", kTime);
    spec.inter_p2p_latency_us = r.number("p2p_latency_us", kTime);
  } else if (spec.nodes > 1) {
    top.value().fail(fmt::format(
        "needs an 'inter_node' section: nodes is {}, so ranks talk across nodes", spec.nodes));
  }
  if (const auto measured = top.get("allreduce_measured")) {
    for (const ConfigValue& item : measured->list("a list of {ranks, latency_us, busbw_gbs}")) {
      const ConfigMap m = item.map();
      MeasuredAllReduce a;
      a.ranks = int(m.require("ranks").integer(IntRule{2, 1 << 20}));
      a.latency_us = m.require("latency_us").number(kTime);
      a.busbw_gbs = m.require("busbw_gbs").number(kRate);
      const std::string src = source_of(m);
      spec.constants.push_back(
          {fmt::format("allreduce_measured[ranks={}].latency_us", a.ranks), a.latency_us, src});
      spec.constants.push_back(
          {fmt::format("allreduce_measured[ranks={}].busbw_gbs", a.ranks), a.busbw_gbs, src});
      spec.allreduce_measured.push_back(a);
    }
  }
  doc.finish();
  return spec;
}

ClusterSpec load_cluster(const std::string& path) {
  return parse_cluster_yaml(read_file(path, "cluster file"), path);
}

std::string to_cluster_yaml(const ClusterSpec& spec, const std::string& header_comment,
                            const std::string& device_source, const std::string& intra_source) {
  YAML::Emitter out;
  out << YAML::Comment(header_comment);
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << spec.name;
  out << YAML::Key << "nodes" << YAML::Value << spec.nodes;
  out << YAML::Key << "devices_per_node" << YAML::Value << spec.devices_per_node;
  out << YAML::Key << "device" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "_source" << YAML::Value << device_source;
  out << YAML::Key << "name" << YAML::Value << spec.device_name;
  out << YAML::Key << "memory_gib" << YAML::Value << spec.memory_gib;
  out << YAML::Key << "memory_bandwidth_gbs" << YAML::Value << spec.memory_bandwidth_gbs;
  out << YAML::Key << "gemm_tflops" << YAML::Value << YAML::BeginMap;
  if (spec.gemm_tflops_f32) out << YAML::Key << "f32" << YAML::Value << *spec.gemm_tflops_f32;
  if (spec.gemm_tflops_bf16) out << YAML::Key << "bf16" << YAML::Value << *spec.gemm_tflops_bf16;
  if (spec.gemm_tflops_fp8) out << YAML::Key << "fp8" << YAML::Value << *spec.gemm_tflops_fp8;
  out << YAML::EndMap;
  out << YAML::Key << "kernel_launch_us" << YAML::Value << spec.kernel_launch_us;
  out << YAML::Key << "compute_memory_overlap" << YAML::Value << spec.compute_memory_overlap;
  out << YAML::EndMap;
  out << YAML::Key << "intra_node" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "_source" << YAML::Value << intra_source;
  out << YAML::Key << "allreduce_busbw_gbs" << YAML::Value << spec.intra_allreduce_busbw_gbs;
  out << YAML::Key << "allreduce_base_latency_us" << YAML::Value
      << spec.intra_allreduce_base_latency_us;
  out << YAML::Key << "hop_latency_us" << YAML::Value << spec.intra_hop_latency_us;
  out << YAML::Key << "p2p_bandwidth_gbs" << YAML::Value << spec.intra_p2p_bandwidth_gbs;
  out << YAML::Key << "p2p_latency_us" << YAML::Value << spec.intra_p2p_latency_us;
  out << YAML::EndMap;
  if (!spec.allreduce_measured.empty()) {
    out << YAML::Key << "allreduce_measured" << YAML::Value << YAML::BeginSeq;
    for (const MeasuredAllReduce& a : spec.allreduce_measured) {
      out << YAML::BeginMap;
      out << YAML::Key << "_source" << YAML::Value << intra_source;
      out << YAML::Key << "ranks" << YAML::Value << a.ranks;
      out << YAML::Key << "latency_us" << YAML::Value << a.latency_us;
      out << YAML::Key << "busbw_gbs" << YAML::Value << a.busbw_gbs;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace parafuse
