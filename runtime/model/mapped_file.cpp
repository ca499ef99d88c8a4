// MappedFile: one read-only mmap per weight file. Sliced reads touch only the pages they need,
// so a rank that owns 1/64 of a checkpoint never reads the rest from disk.
#include "runtime/model/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kernels/core/error.h"

namespace parafuse {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  PF_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int saved = errno;
    ::close(fd);
    PF_THROW("{}: cannot stat: {}", path, std::strerror(saved));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    PF_THROW("{}: not a regular file", path);
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {  // mmap of length 0 is EINVAL; an empty file is a valid (empty) mapping
    void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      const int saved = errno;
      ::close(fd);
      PF_THROW("{}: cannot mmap {} bytes: {}", path, size_, std::strerror(saved));
    }
    data_ = static_cast<const uint8_t*>(mapped);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release(const void* p, size_t bytes) const {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  const uintptr_t map_begin = reinterpret_cast<uintptr_t>(data_);
  if (data_ == nullptr || begin >= end || begin < map_begin || end > map_begin + size_) return;
  // Advice only: a failure leaves the pages resident, which is never wrong.
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace parafuse
