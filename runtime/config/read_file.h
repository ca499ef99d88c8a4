// The one way parafuse reads a whole file into memory (configs, plans, tokenizer files, text).
#pragma once

#include <string>

namespace parafuse {

// The file's bytes. Throws an Error naming `what` ("config file", "fusion plan") and the path
// when it does not exist, is a directory, or cannot be read.
std::string read_file(const std::string& path, const std::string& what = "file");

}  // namespace parafuse
