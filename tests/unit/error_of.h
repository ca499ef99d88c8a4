// The message a test expects from a parafuse::Error (test-only).
#pragma once

#include <string>

#include "kernels/core/error.h"

namespace parafuse {

// The message of the Error `fn` throws, or "(no error)" (which matches no expected message).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace parafuse
