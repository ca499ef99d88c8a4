// The reference (scalar) definitions of the block formats in quant.h.
#include "kernels/core/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/core/error.h"

namespace parafuse {

void dequantize_block(DType type, const void* block, float* out) {
  switch (type) {
    case DType::Q8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(block);
      const float d = f16_to_f32(b->d);
      for (int i = 0; i < 32; ++i) out[i] = float(b->q[i]) * d;
      return;
    }
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(block);
      const float d = f16_to_f32(b->d);
      for (int i = 0; i < 16; ++i) {
        out[i] = float(int(b->q[i] & 0x0f) - 8) * d;
        out[i + 16] = float(int(b->q[i] >> 4) - 8) * d;
      }
      return;
    }
    case DType::Q4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(block);
      const float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
      for (int i = 0; i < 16; ++i) {
        out[i] = float(b->q[i] & 0x0f) * d + m;
        out[i + 16] = float(b->q[i] >> 4) * d + m;
      }
      return;
    }
    default:
      PF_THROW("dequantize_block: dtype {} is not block-quantized", dtype_name(type));
  }
}

void dequantize_row(DType type, const void* row, int64_t n, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(row);
  switch (type) {
    case DType::F32:
      std::memcpy(out, row, size_t(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1: {
      const size_t per_block = dtype_block_bytes(type);
      PF_CHECK(n % kQuantBlockElements == 0,
               "dequantize_row: {} elements of {} are not whole "
               "blocks",
               n, dtype_name(type));
      for (int64_t b = 0; b < n / kQuantBlockElements; ++b)
        dequantize_block(type, bytes + size_t(b) * per_block, out + b * kQuantBlockElements);
      return;
    }
    default:
      PF_THROW("dequantize_row: dtype {} is not a weight type", dtype_name(type));
  }
}

void quantize_row(DType type, const float* x, int64_t n, void* out) {
  auto* bytes = static_cast<uint8_t*>(out);
  switch (type) {
    case DType::F32:
      std::memcpy(out, x, size_t(n) * sizeof(float));
      return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    default:
      break;
  }
  PF_CHECK(dtype_is_quantized(type), "quantize_row: dtype {} is not a weight type",
           dtype_name(type));
  PF_CHECK(n % kQuantBlockElements == 0, "quantize_row: {} elements of {} are not whole blocks", n,
           dtype_name(type));
  for (int64_t b = 0; b < n / kQuantBlockElements; ++b) {
    const float* v = x + b * kQuantBlockElements;
    uint8_t* dst = bytes + size_t(b) * dtype_block_bytes(type);
    if (type == DType::Q8_0) {
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      BlockQ8_0 blk;
      blk.d = f32_to_f16(d);
      for (int i = 0; i < 32; ++i) blk.q[i] = int8_t(std::lround(v[i] * id));
      std::memcpy(dst, &blk, sizeof blk);
    } else if (type == DType::Q4_0) {
      float amax = 0.0f, max = 0.0f;
      for (int i = 0; i < 32; ++i) {
        if (std::fabs(v[i]) > amax) {
          amax = std::fabs(v[i]);
          max = v[i];
        }
      }
      const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      BlockQ4_0 blk;
      blk.d = f32_to_f16(d);
      for (int i = 0; i < 16; ++i) {
        const int lo = std::min(15, int(v[i] * id + 8.5f));
        const int hi = std::min(15, int(v[i + 16] * id + 8.5f));
        blk.q[i] = uint8_t(lo | (hi << 4));
      }
      std::memcpy(dst, &blk, sizeof blk);
    } else {
      float lo_v = v[0], hi_v = v[0];
      for (int i = 1; i < 32; ++i) {
        lo_v = std::min(lo_v, v[i]);
        hi_v = std::max(hi_v, v[i]);
      }
      const float d = (hi_v - lo_v) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      BlockQ4_1 blk;
      blk.d = f32_to_f16(d);
      blk.m = f32_to_f16(lo_v);
      for (int i = 0; i < 16; ++i) {
        const int lo = std::min(15, int((v[i] - lo_v) * id + 0.5f));
        const int hi = std::min(15, int((v[i + 16] - lo_v) * id + 0.5f));
        blk.q[i] = uint8_t(lo | (hi << 4));
      }
      std::memcpy(dst, &blk, sizeof blk);
    }
  }
}

void quantize_activations(const float* x, int64_t n, ActivationBlock* out) {
  for (int64_t b = 0; b < n / kQuantBlockElements; ++b) {
    const float* v = x + b * kQuantBlockElements;
    float amax = 0.0f;
    bool finite = true;
    for (int i = 0; i < 32; ++i) {
      amax = std::max(amax, std::fabs(v[i]));
      finite = finite && std::isfinite(v[i]);
    }
    if (!finite) {  // NaN / Inf: the block's products become NaN, as F32 ones would
      out[b].d = std::numeric_limits<float>::quiet_NaN();
      out[b].sum = out[b].d;
      std::memset(out[b].q, 0, sizeof out[b].q);
      continue;
    }
    // A subnormal d (amax < ~4e-34) would make 1/d overflow: such a block quantizes to zeros.
    const float d = amax / 32767.0f;
    const float id = d >= std::numeric_limits<float>::min() ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      // |v * id| <= 32767 * (1 + 2^-22): rounds to at most 32767, no clamp needed.
      const int q = int(std::nearbyint(v[i] * id));
      out[b].q[i] = int16_t(q);
      sum += q;
    }
    out[b].d = d;
    out[b].sum = d * float(sum);
  }
}

}  // namespace parafuse
