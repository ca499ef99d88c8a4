// GPT-2 byte<->unicode table and the small UTF-8 helpers the tokenizer needs.
//
// Byte-level BPE never sees raw bytes: each byte is first replaced by a printable code point
// (GPT-2's bytes_to_unicode), so token strings are valid UTF-8 whatever bytes they stand for.
// The UTF-8 checks follow RFC 3629 exactly as PCRE2 does, because only text that PCRE2 would
// also accept may be handed to it with PCRE2_NO_UTF_CHECK.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse::tokenizer_detail {
namespace {

struct ByteTable {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<uint32_t, int> to_byte;

  ByteTable() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : next++;
      utf8_append(to_unicode[b], cp);
      to_byte[cp] = b;
    }
  }
};

const ByteTable& table() {
  static const ByteTable t;
  return t;
}

bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

// The allowed range of the second byte after a lead byte (RFC 3629 table 3-7); the other
// continuation bytes are 0x80..0xBF.
bool second_byte_ok(unsigned char lead, unsigned char second) {
  switch (lead) {
    case 0xE0:
      return second >= 0xA0 && second <= 0xBF;
    case 0xED:
      return second >= 0x80 && second <= 0x9F;
    case 0xF0:
      return second >= 0x90 && second <= 0xBF;
    case 0xF4:
      return second >= 0x80 && second <= 0x8F;
    default:
      return is_continuation(second);
  }
}

// Sequence length announced by a lead byte, 0 for bytes that cannot lead.
size_t lead_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// How many bytes from s[i] agree with a well-formed sequence (stops at the first that does
// not, or at the end of s); `need` receives the announced length.
size_t matching_prefix(std::string_view s, size_t i, size_t& need) {
  const auto lead = static_cast<unsigned char>(s[i]);
  need = lead_length(lead);
  if (need == 0) return 0;
  size_t k = 1;
  while (k < need && i + k < s.size()) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? !second_byte_ok(lead, c) : !is_continuation(c)) break;
    ++k;
  }
  return k;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() {
  return table().to_unicode;
}

int unicode_to_byte(uint32_t code_point) {
  const auto& m = table().to_byte;
  auto it = m.find(code_point);
  return it == m.end() ? -1 : it->second;
}

size_t utf8_valid_length(std::string_view s, size_t i) {
  size_t need = 0;
  const size_t k = matching_prefix(s, i, need);
  return (need != 0 && k == need) ? need : 0;
}

size_t utf8_incomplete_prefix(std::string_view s, size_t i) {
  size_t need = 0;
  const size_t k = matching_prefix(s, i, need);
  return (need > 1 && k < need && i + k == s.size()) ? k : 0;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t need = 0;
    const size_t k = matching_prefix(s, i, need);
    if (need != 0 && k == need) {
      out.append(s.substr(i, k));
      i += k;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal ill-formed subpart
      i += k == 0 ? 1 : k;
    }
  }
  return out;
}

uint32_t utf8_decode(std::string_view s, size_t i, size_t len) {
  const auto b = [&](size_t k) {
    return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]));
  };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace parafuse::tokenizer_detail
