"""`parafuse serve` through the official openai Python client (from .cache/venv).

What a user of the OpenAI API would notice: the same greedy text as `parafuse generate` for
the same prompt, a stream that adds up to the non-streamed answer, token-id prompts, usage
counts, the model list, streamed and non-streamed requests alternating on one kept-alive
connection, and a wrong API key refused. One server (started with --api-key) serves
every case; `--mpirun "mpirun -np 3 ..." --server-args "--tp 3"` runs the same cases across ranks.

    .cache/venv/bin/python tests/serve/test_openai_client.py   (PF_BINARY=build/parafuse)
"""
import os
import subprocess
import sys
import unittest

import serve_fixture

try:
    import openai
except ImportError:
    serve_fixture.skip("no openai package: run cluster/setup.sh (it makes .cache/venv)")

API_KEY = "test-key-1234"
COMPLETION_PROMPT = "The capital of France is"
COMPLETION_PROMPT_IDS = [504, 3575, 282, 4649, 314]  # the same text in SmolLM2's vocabulary
CHAT_QUESTION = "What is the capital of France?"
server = None  # serve_fixture.Server, set by main()


# The server's --weight-dtype, if given, for the reference runs too.
WEIGHT_ARGS = []


def generate(*args):
    """The greedy text `parafuse generate` prints for the same request (its trailing newline
    removed): the server must agree with it token for token."""
    result = subprocess.run(
        [serve_fixture.BINARY, "generate", "-m", serve_fixture.MODEL, "-q", *WEIGHT_ARGS, *args],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    return result.stdout.removesuffix("\n")


class OpenAIClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY,
                                   max_retries=0, timeout=120)

    def check_usage(self, usage, max_completion_tokens=None):
        self.assertGreater(usage.prompt_tokens, 0)
        self.assertGreater(usage.completion_tokens, 0)
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        if max_completion_tokens is not None:
            self.assertLessEqual(usage.completion_tokens, max_completion_tokens)

    def test_models_list(self):
        ids = [model.id for model in self.client.models.list()]
        self.assertIn(server.model, ids)

    def test_completion(self):
        response = self.client.completions.create(
            model=server.model, prompt=COMPLETION_PROMPT, max_tokens=8, temperature=0)
        self.assertEqual(response.object, "text_completion")
        self.assertEqual(len(response.choices), 1)
        choice = response.choices[0]
        self.assertEqual(choice.text, generate("-p", COMPLETION_PROMPT, "-n", "8"))
        self.assertIn("Paris", choice.text)
        self.assertEqual(choice.finish_reason, "length")
        self.check_usage(response.usage, max_completion_tokens=8)
        self.assertEqual(response.usage.completion_tokens, 8)

    def test_completion_token_ids(self):
        by_ids = self.client.completions.create(
            model=server.model, prompt=COMPLETION_PROMPT_IDS, max_tokens=8, temperature=0)
        by_text = self.client.completions.create(
            model=server.model, prompt=COMPLETION_PROMPT, max_tokens=8, temperature=0)
        self.assertEqual(by_ids.usage.prompt_tokens, len(COMPLETION_PROMPT_IDS))
        self.assertEqual(by_ids.choices[0].text, by_text.choices[0].text)
        self.assertTrue(by_ids.choices[0].text)

    def chat(self, max_tokens=64, **kwargs):
        return self.client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": CHAT_QUESTION}],
            temperature=0, max_tokens=max_tokens, **kwargs)

    def test_chat(self):
        response = self.chat()
        self.assertEqual(response.object, "chat.completion")
        choice = response.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertTrue(choice.message.content)
        self.assertIn("Paris", choice.message.content)
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assertEqual(choice.message.content,
                         generate("--chat", "-p", CHAT_QUESTION, "-n", "64"))
        self.check_usage(response.usage, max_completion_tokens=64)

    def test_chat_stream(self):
        expected = self.chat()
        chunks = list(self.chat(stream=True, stream_options={"include_usage": True}))
        self.assertTrue(chunks, "no chunks")
        for chunk in chunks:
            self.assertEqual(chunk.object, "chat.completion.chunk")
        choice_chunks = [c for c in chunks if c.choices]
        usage_chunks = [c for c in chunks if not c.choices]
        self.assertEqual(choice_chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
        self.assertEqual(text, expected.choices[0].message.content)
        finish_reasons = [c.choices[0].finish_reason for c in choice_chunks]
        self.assertEqual(finish_reasons[-1], expected.choices[0].finish_reason)
        self.assertEqual([r for r in finish_reasons if r], [finish_reasons[-1]],
                         "finish_reason only on the last choice chunk")
        # include_usage: exactly one last chunk with no choices and the whole request's usage.
        self.assertEqual(len(usage_chunks), 1)
        self.assertIs(chunks[-1], usage_chunks[0])
        self.assertEqual(usage_chunks[0].usage.completion_tokens, expected.usage.completion_tokens)
        self.assertEqual(usage_chunks[0].usage.prompt_tokens, expected.usage.prompt_tokens)

    def test_keep_alive_alternating_stream(self):
        # The client keeps its connection open, so a streamed request follows a non-streamed
        # one on the same socket: every request of a long alternation must be answered.
        def complete(**kwargs):
            return self.client.completions.create(
                model=server.model, prompt=COMPLETION_PROMPT, max_tokens=1, temperature=0,
                **kwargs)
        expected = complete().choices[0].text
        for i in range(50):
            whole = complete().choices[0].text
            streamed = "".join(c.choices[0].text for c in complete(stream=True) if c.choices)
            self.assertEqual((whole, streamed), (expected, expected), f"round {i}")

    def test_wrong_api_key(self):
        wrong = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong-key",
                              max_retries=0, timeout=30)
        with self.assertRaises(openai.AuthenticationError):
            wrong.completions.create(model=server.model, prompt="Hi", max_tokens=1)
        with self.assertRaises(openai.AuthenticationError):
            wrong.models.list()


def main():
    serve_fixture.require_model()
    args = serve_fixture.parse_args()
    if "--weight-dtype" in args.server_args:
        at = args.server_args.index("--weight-dtype")
        WEIGHT_ARGS.extend(args.server_args[at:at + 2])

    def set_server(started):
        global server
        server = started

    return serve_fixture.run_test_cases(set_server, ["--api-key", API_KEY, *args.server_args], args.mpirun)


if __name__ == "__main__":
    sys.exit(main())
