"""Continuous batching over every rank: N clients stream at once, each receives every token,
and each greedy answer equals the same request served alone by the same server.

  test_concurrent_streams.py [--mpirun "mpirun -np 3 ..." --server-args "--tp 3"]
                             [--clients 32] [--max-tokens 16]
"""
import sys
import threading
import time

from http_client import completion_text, kv_usage, post, stream
from serve_fixture import parse_args, require_model, serve


def main():
    args = parse_args(lambda p: (p.add_argument("--clients", type=int, default=32),
                                 p.add_argument("--max-tokens", type=int, default=16)))
    require_model()
    prompts = [f"Write one sentence about the number {i} and the city of {city}."
               for i, city in zip(range(args.clients),
                                  ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito",
                                   "Dakar"] * 8)]
    with serve(args.server_args, args.mpirun) as server:
        def body(prompt):
            return {"model": server.model, "prompt": prompt, "max_tokens": args.max_tokens,
                    "temperature": 0, "ignore_eos": True}

        alone = []
        for prompt in prompts:
            status, answer = post(server.base_url, "/v1/completions", body(prompt))
            assert status == 200, answer
            alone.append(answer["choices"][0]["text"])

        results, errors = [None] * len(prompts), []

        def client(i):
            try:
                events, _ = stream(server.base_url, "/v1/completions",
                                   dict(body(prompts[i]), stream_options={"include_usage": True}))
                token_events = [e for e in events if e["choices"] and e["choices"][0]["text"]]
                usage = events[-1]["usage"]
                results[i] = (completion_text(events), usage["completion_tokens"],
                              len(token_events), events[-2]["choices"][0]["finish_reason"])
            except Exception as e:  # reported below, with the client's index
                errors.append(f"client {i}: {e!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        mismatched = 0
        for i, (text, n_tokens, n_events, finish) in enumerate(results):
            assert n_tokens == args.max_tokens, f"client {i}: {n_tokens} tokens"
            assert finish == "length", f"client {i}: finish_reason {finish}"
            if text != alone[i]:
                mismatched += 1
                print(f"client {i}: streamed {text!r}\n   alone    {alone[i]!r}")
            # One event per token, except where a token ends inside a UTF-8 character.
            assert n_events <= n_tokens, (i, n_events, n_tokens)
        assert mismatched == 0, f"{mismatched} of {len(prompts)} answers differ from alone"
        # Finished sequences free their pages on every rank in the step after their last token.
        deadline = time.monotonic() + 10
        while True:
            usage = kv_usage(server.base_url)
            if (usage and all(v == 0 for v in usage.values())) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert usage and all(v == 0 for v in usage.values()), f"pages still in use: {usage}"
        print(f"{len(prompts)} concurrent streams of {args.max_tokens} tokens each equal their "
              f"answer served alone; KV usage per rank after: {usage}")


if __name__ == "__main__":
    sys.exit(main())
