// StagedCollectives (see staged_collectives.h).
#include "parallel/staged_collectives.h"

#include "kernels/core/error.h"
#include "parallel/mpi_comm.h"
#if defined(PARAFUSE_HAS_CUDA)
#include "parallel/nccl_collectives.h"
#endif

namespace parafuse {
namespace {

Tensor host_view(std::vector<float>& v, int64_t rows, int64_t cols) {
  v.resize(size_t(rows * cols));
  return Tensor{v.data(), DType::F32, rows, cols, cols};
}

}  // namespace

std::unique_ptr<Collectives> make_device_collectives(MpiCollectives& host, Backend& backend,
                                                     bool device_per_rank,
                                                     std::chrono::milliseconds timeout) {
  PF_CHECK(backend.device_memory(),
           "make_device_collectives: backend '{}' keeps tensors in host memory; use the host "
           "collectives",
           backend.name());
#if defined(PARAFUSE_HAS_CUDA)
  if (device_per_rank)
    return make_nccl_collectives(host.comm(), host.name() + " (nccl)", host.world_ranks(), backend,
                                 timeout);
#else
  (void)device_per_rank, (void)timeout;
#endif
  return std::make_unique<StagedCollectives>(host, backend);
}

void StagedCollectives::all_reduce_sum(const Tensor& t) {
  CollectiveTimer timer(stats_);
  ++stats_.all_reduce_calls;
  stats_.bytes += int64_t(t.bytes());
  if (t.numel() == 0) return;
  Tensor h = host_view(staging_, t.rows, t.cols);
  backend_.download_f32(t, staging_.data());
  host_.all_reduce_sum(h);
  backend_.upload_f32(staging_.data(), t);
}

void StagedCollectives::all_gather_rows(const Tensor& local, const Tensor& out) {
  CollectiveTimer timer(stats_);
  ++stats_.all_gather_calls;
  PF_CHECK(local.dtype == out.dtype && local.cols == out.cols && out.rows == local.rows * size(),
           "all_gather on {}: out ({}, {}) must be ({} ranks x {} rows, {})", name(), out.rows,
           out.cols, size(), local.rows, local.cols);
  stats_.bytes += int64_t(out.bytes());
  if (out.numel() == 0) return;
  Tensor h_local = host_view(staging_, local.rows, local.cols);
  Tensor h_out = host_view(staging_out_, out.rows, out.cols);
  backend_.download_f32(local, staging_.data());
  host_.all_gather_rows(h_local, h_out);
  backend_.upload_f32(staging_out_.data(), out);
}

void StagedCollectives::broadcast_bytes(void* data, size_t bytes, int root) {
  CollectiveTimer timer(stats_);
  ++stats_.broadcast_calls;
  stats_.bytes += int64_t(bytes);
  host_.broadcast_bytes(data, bytes, root);
}

void StagedCollectives::barrier() {
  CollectiveTimer timer(stats_);
  ++stats_.barrier_calls;
  host_.barrier();
}

namespace {

class StagedRequest : public TransportRequest {
 public:
  StagedRequest(TransportStats& stats, Backend& backend, const Tensor& device,
                std::unique_ptr<std::vector<float>> host)
      : TransportRequest(stats), backend_(backend), device_(device), host_(std::move(host)) {}
  void start(std::unique_ptr<TransportRequest> inner, bool is_recv) {
    inner_ = std::move(inner);
    is_recv_ = is_recv;
  }

 protected:
  void finish() override {
    if (!inner_) return;
    inner_->wait();
    inner_.reset();
    if (is_recv_) backend_.upload_f32(host_->data(), device_);
  }

 private:
  Backend& backend_;
  Tensor device_;
  std::unique_ptr<std::vector<float>> host_;  // stays put while the host request runs
  std::unique_ptr<TransportRequest> inner_;
  bool is_recv_ = false;
};

class StagedTransport : public Transport {
 public:
  StagedTransport(std::unique_ptr<Transport> host, Backend& backend)
      : host_(std::move(host)), backend_(backend) {}
  std::string name() const override { return host_->name() + " (staged through host)"; }
  int size() const override { return host_->size(); }

 protected:
  std::unique_ptr<TransportRequest> post(const Tensor& t, int peer, uint64_t tag, bool is_send,
                                         const std::string&) override {
    auto host = std::make_unique<std::vector<float>>(size_t(t.numel()));
    const Tensor h{host->data(), DType::F32, t.rows, t.cols, t.cols};
    if (is_send && t.numel() > 0) backend_.download_f32(t, host->data());
    auto request = std::make_unique<StagedRequest>(stats_, backend_, t, std::move(host));
    request->start(is_send ? host_->send(h, peer, tag) : host_->recv(h, peer, tag), !is_send);
    return request;
  }

 private:
  std::unique_ptr<Transport> host_;
  Backend& backend_;
};

}  // namespace

std::unique_ptr<Transport> make_staged_transport(std::unique_ptr<Transport> host,
                                                 Backend& backend) {
  PF_CHECK(host != nullptr, "make_staged_transport: no host transport");
  return std::make_unique<StagedTransport>(std::move(host), backend);
}

}  // namespace parafuse
