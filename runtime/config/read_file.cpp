#include "runtime/config/read_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/core/error.h"

namespace parafuse {

std::string read_file(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  PF_CHECK(fs::exists(status), "{} '{}' does not exist", what, path);
  PF_CHECK(!fs::is_directory(status), "{} '{}' is a directory, not a file", what, path);
  std::ifstream in(path, std::ios::binary);
  PF_CHECK(in.good(), "cannot open {} '{}': {}", what, path, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  PF_CHECK(!in.bad(), "cannot read {} '{}': {}", what, path, std::strerror(errno));
  return text.str();
}

}  // namespace parafuse
