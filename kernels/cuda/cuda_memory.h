// Device memory for the CUDA backend: a caching pool and pinned host staging.
//
// DevicePool: cudaMalloc is slow (and synchronizes the device), so freed blocks are cached by
// rounded size and handed out again; with one stream per backend, reuse is stream-ordered and
// needs no events. Sizes round to 512 B up to 1 MiB and to 2 MiB above, so the repeated shapes
// of a serving loop hit the cache exactly. On an out-of-memory the cache is released and the
// allocation retried once; then it fails naming the request and what the pool holds.
// Buffers keep the pool alive (shared_ptr), so a Buffer may outlive its backend.
// PinnedStaging: a ring of page-locked host slots, each with a device scratch slot of the same
// size and an event, through which uploads and downloads are chunked: the caller's pageable
// memory is copied to a pinned slot by the CPU and moved by the copy engine asynchronously; a
// slot is reused only after the event recorded after its last use has completed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/backend.h"

namespace parafuse::cuda {

class DevicePool : public std::enable_shared_from_this<DevicePool> {
 public:
  struct Stats {
    size_t bytes_in_use = 0, bytes_cached = 0, cuda_mallocs = 0, reuses = 0;
  };
  explicit DevicePool(int device) : device_(device) {}
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // A Buffer of at least `bytes` (never empty, also for 0 bytes) that returns to the pool.
  Buffer allocate(size_t bytes);
  // Frees every cached block (cudaFree).
  void trim();
  Stats stats() const;
  static size_t round_size(size_t bytes);

 private:
  void release(void* p, size_t rounded);
  int device_;
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;  // rounded size -> cached blocks
  Stats stats_;
};

class PinnedStaging {
 public:
  struct Slot {
    void* host = nullptr;    // page-locked, `bytes` long
    void* device = nullptr;  // device scratch, `bytes` long
    cudaEvent_t done = nullptr;
  };
  PinnedStaging(DevicePool& pool, size_t slot_bytes, int n_slots);
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  size_t slot_bytes() const { return slot_bytes_; }
  // The next slot, once its previous use has finished on the device.
  Slot& acquire();
  // Marks the slot busy until the work queued on `stream` so far completes.
  void release(Slot& slot, cudaStream_t stream);

 private:
  size_t slot_bytes_;
  std::vector<Slot> slots_;
  std::vector<Buffer> device_buffers_;
  size_t next_ = 0;
};

}  // namespace parafuse::cuda
