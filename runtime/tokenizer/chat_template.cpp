// Chat templates: the fixed formats of the models we ship configs for, not a Jinja engine.
//
// A model's template text (GGUF tokenizer.chat_template, tokenizer_config.json) is only read to
// pick the format: "<|im_start|>" means ChatML (SmolLM2, Qwen), "<|start_header_id|>" means
// Llama-3 (Llama-3.x, Nemotron). ChatML templates that open with a fixed system turn when the
// conversation has none (SmolLM2's "You are a helpful AI assistant named SmolLM...") carry that
// text as a literal, which is lifted out here so the rendered prompt matches the template's.
#include <string>
#include <string_view>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse::tokenizer_detail {
namespace {

// The literal system text of "<|im_start|>system\n...<|im_end|>" in the template, or "" when
// the template builds the system turn from messages only.
std::string default_system_text(const std::string& text) {
  const std::string marker = "<|im_start|>system";
  for (size_t pos = text.find(marker); pos != std::string::npos; pos = text.find(marker, pos + 1)) {
    size_t p = pos + marker.size();
    if (text.compare(p, 1, "\n") == 0) {
      p += 1;
    } else if (text.compare(p, 2, "\\n") == 0) {
      p += 2;  // the newline written as an escape inside a Jinja string literal
    } else {
      continue;
    }
    const size_t end = text.find("<|im_end|>", p);
    if (end == std::string::npos) break;
    const std::string_view body(text.data() + p, end - p);
    if (body.empty() || body.find_first_of("'\"{}+") != std::string_view::npos) continue;
    std::string system;
    for (size_t i = 0; i < body.size(); ++i) {
      if (body[i] == '\\' && i + 1 < body.size() && body[i + 1] == 'n') {
        system += '\n';
        ++i;
      } else {
        system += body[i];
      }
    }
    return system;
  }
  return "";
}

// Jinja's `trim` filter, which the Llama-3 templates apply to each message's content.
std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

}  // namespace

ChatTemplate detect_chat_template(const std::string& template_text, bool vocab_has_im_start,
                                  bool vocab_has_start_header) {
  ChatTemplate chat;
  if (!template_text.empty()) {
    if (template_text.find("<|im_start|>") != std::string::npos) {
      chat.format = ChatFormat::kChatMl;
      chat.default_system = default_system_text(template_text);
    } else if (template_text.find("<|start_header_id|>") != std::string::npos) {
      chat.format = ChatFormat::kLlama3;
    } else {
      chat.missing_reason =
          "tokenizer: the model's chat template is not a format parafuse knows (supported: "
          "chatml, marked by <|im_start|>; llama3, marked by <|start_header_id|>)";
    }
    return chat;
  }
  if (vocab_has_im_start) {
    chat.format = ChatFormat::kChatMl;
  } else if (vocab_has_start_header) {
    chat.format = ChatFormat::kLlama3;
  } else {
    chat.missing_reason =
        "tokenizer: the model has no chat template (none in the file, and its vocabulary has "
        "neither <|im_start|> nor <|start_header_id|>)";
  }
  return chat;
}

std::string render_chat(const ChatTemplate& chat, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string out;
  switch (chat.format) {
    case ChatFormat::kChatMl:
      if (!chat.default_system.empty() && !messages.empty() && messages[0].role != "system") {
        out += "<|im_start|>system\n" + chat.default_system + "<|im_end|>\n";
      }
      for (const auto& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::kLlama3:
      out += "<|begin_of_text|>";
      for (const auto& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::kNone:
      break;
  }
  PF_THROW("{}", chat.missing_reason);
}

std::string chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kChatMl:
      return "chatml";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kNone:
      break;
  }
  return "none";
}

}  // namespace parafuse::tokenizer_detail

namespace parafuse {

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const {
  return tokenizer_detail::render_chat(impl_->chat, messages, add_generation_prompt);
}

std::string Tokenizer::chat_format_name() const {
  return tokenizer_detail::chat_format_name(impl_->chat.format);
}

}  // namespace parafuse
