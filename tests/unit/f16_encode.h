// Float -> IEEE half for the tests' F16 fixtures: kernels/core/dtype.h's f32_to_f16 (round to
// nearest even, NaN stays NaN, overflow becomes Inf), which the quantizers use too.
#pragma once

#include "kernels/core/dtype.h"
