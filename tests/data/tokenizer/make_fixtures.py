"""Regenerates the small tokenizer.json fixtures of tests/unit/test_tokenizer.cpp.

Needs `pip install tokenizers`. Trains two tiny byte-level BPE vocabularies with the HF
tokenizers library: one with SmolLM2's pre-tokenizer (Digits + ByteLevel), one with Llama-3's
(Split regex + ByteLevel(use_regex=false), ignore_merges). The test's expected ids come from
encoding with these files through the same library (see print_expected below).
"""
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and they'll say we'd won.",
    "Hello, world! Hello again, world. The world is wide and the sea is deep.",
    "def main():\n    return 42\n\nprint(main())  # prints the answer",
    "Numbers like 12345 and 3.14159 appear in the text, as do 1000000 and 7.",
    "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9, \u65e5\u672c\u8a9e and emoji \U0001F600.",
] * 20
SMOLLM_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                   "'system' %}{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}"
                   "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
                   "message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + "
                   "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def train(pre, specials, vocab_size, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write(name, tok, config):
    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"), pretty=False)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)


def main():
    smollm = train(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                     use_regex=True)]),
                   ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 400, False)
    write("smollm_tiny", smollm, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                  "add_bos_token": False, "chat_template": SMOLLM_TEMPLATE})
    llama3 = train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>"], 400, True)
    write("llama3_tiny", llama3, {"bos_token": "<|begin_of_text|>",
                                  "eos_token": {"content": "<|eot_id|>"},
                                  "add_bos_token": True, "chat_template": LLAMA3_TEMPLATE})


def print_expected(texts):
    for name in ("smollm_tiny", "llama3_tiny"):
        tok = Tokenizer.from_file(os.path.join(HERE, name, "tokenizer.json"))
        for text in texts:
            print(name, repr(text), tok.encode(text).ids)


if __name__ == "__main__":
    main()
