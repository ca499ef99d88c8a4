// A read-only mmap of a whole file (RAII). Pages are faulted in only when touched, which is
// what makes sliced reads of a 500 GB checkpoint cheap for each rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace parafuse {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws Error naming the path and errno
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Gives the resident pages wholly inside [p, p + bytes) back to the kernel (MADV_DONTNEED):
  // after a loader has copied a tensor out, its file pages need not count towards the
  // process's memory. The contents stay readable; a later read faults them in again.
  void release(const void* p, size_t bytes) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace parafuse
