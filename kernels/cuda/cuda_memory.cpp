// DevicePool and PinnedStaging (see cuda_memory.h).
#include "kernels/cuda/cuda_memory.h"

#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"

namespace parafuse::cuda {

size_t DevicePool::round_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
  if (bytes == 0) bytes = 1;
  if (bytes <= kSmallLimit) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

DevicePool::~DevicePool() {
  // Errors are ignored here: at process exit the CUDA context may already be gone.
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) cudaFree(p);
  }
}

Buffer DevicePool::allocate(size_t bytes) {
  const size_t rounded = round_size(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(rounded);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= rounded;
      ++stats_.reuses;
    }
  }
  if (!p) {
    PF_CUDA_CHECK(cudaSetDevice(device_));
    cudaError_t rc = cudaMalloc(&p, rounded);
    if (rc == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the (non-sticky) allocation error; retry on an empty cache
      trim();
      rc = cudaMalloc(&p, rounded);
    }
    if (rc != cudaSuccess) {
      cudaGetLastError();
      const Stats s = stats();
      PF_THROW("cuda backend: cannot allocate {} bytes on device {}: {} ({} bytes in use)", bytes,
               device_, cudaGetErrorString(rc), s.bytes_in_use);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.cuda_mallocs;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bytes_in_use += rounded;
  }
  std::shared_ptr<DevicePool> self = shared_from_this();
  return Buffer(p, bytes, [self, rounded](void* q) { self->release(q, rounded); });
}

void DevicePool::release(void* p, size_t rounded) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_[rounded].push_back(p);
  stats_.bytes_in_use -= rounded;
  stats_.bytes_cached += rounded;
}

void DevicePool::trim() {
  std::map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks.swap(free_);
    stats_.bytes_cached = 0;
  }
  for (auto& [size, list] : blocks) {
    for (void* p : list) PF_CUDA_CHECK(cudaFree(p));
  }
}

DevicePool::Stats DevicePool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

PinnedStaging::PinnedStaging(DevicePool& pool, size_t slot_bytes, int n_slots)
    : slot_bytes_(slot_bytes), slots_(size_t(n_slots)) {
  PF_CHECK(slot_bytes > 0 && n_slots > 0, "pinned staging: bad size {} x {}", n_slots, slot_bytes);
  for (Slot& s : slots_) {
    PF_CUDA_CHECK(cudaMallocHost(&s.host, slot_bytes));
    device_buffers_.push_back(pool.allocate(slot_bytes));
    s.device = device_buffers_.back().data();
    PF_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  }
}

PinnedStaging::~PinnedStaging() {
  for (Slot& s : slots_) {
    if (s.done) {
      cudaEventSynchronize(s.done);
      cudaEventDestroy(s.done);
    }
    if (s.host) cudaFreeHost(s.host);
  }
}

PinnedStaging::Slot& PinnedStaging::acquire() {
  Slot& s = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  PF_CUDA_CHECK(cudaEventSynchronize(s.done));
  return s;
}

void PinnedStaging::release(Slot& slot, cudaStream_t stream) {
  PF_CUDA_CHECK(cudaEventRecord(slot.done, stream));
}

}  // namespace parafuse::cuda
