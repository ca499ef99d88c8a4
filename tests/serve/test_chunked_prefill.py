"""Chunked prefill: a prompt of several thousand tokens arrives while 8 streams decode, and the
streams keep going. Each stream's largest gap between two tokens must stay within --max-ratio
times its median gap; the prompt is prefilled in chunks of --max-batch-tokens beside the
decodes instead of in one long step that would stall them all.

  test_chunked_prefill.py [--long-tokens 2500] [--max-ratio 8]
"""
import statistics
import sys
import threading
import time

from http_client import post, stream
from serve_fixture import parse_args, require_model, serve


def main():
    args = parse_args(lambda p: (p.add_argument("--long-tokens", type=int, default=2500),
                                 p.add_argument("--max-ratio", type=float, default=8.0)))
    require_model()
    server_args = ["--max-batch-tokens", "32", "--kv-cache-tokens", "8192", *args.server_args]
    with serve(server_args, args.mpirun) as server:
        decode_tokens = 60
        streams, errors = [None] * 8, []

        def client(i):
            try:
                body = {"prompt": f"Count slowly from {i}:", "max_tokens": decode_tokens,
                        "temperature": 0, "ignore_eos": True}
                streams[i] = stream(server.base_url, "/v1/completions", body)[1]
            except Exception as e:
                errors.append(f"stream {i}: {e!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the 8 streams are decoding
        long_prompt = list(range(1000, 1000 + args.long_tokens))  # token ids
        started = time.monotonic()
        status, answer = post(server.base_url, "/v1/completions",
                              {"prompt": long_prompt, "max_tokens": 1, "temperature": 0})
        long_seconds = time.monotonic() - started
        assert status == 200, answer
        assert answer["usage"]["prompt_tokens"] == args.long_tokens, answer["usage"]
        for t in threads:
            t.join()
        assert not errors, errors
        worst = 0.0
        for i, times in enumerate(streams):
            gaps = [b - a for a, b in zip(times, times[1:])]
            overlap = [g for a, g in zip(times, gaps) if started <= a <= started + long_seconds]
            median, largest = statistics.median(gaps), max(gaps)
            worst = max(worst, largest / median)
            print(f"stream {i}: {len(times)} tokens, median gap {median * 1000:.1f} ms, largest "
                  f"{largest * 1000:.1f} ms ({largest / median:.1f}x), {len(overlap)} tokens "
                  f"while the long prompt was prefilled")
            assert overlap, f"stream {i} produced nothing during the {long_seconds:.1f} s prefill"
        print(f"long prompt: {args.long_tokens} tokens prefilled in {long_seconds:.2f} s beside "
              f"8 streams; worst largest/median gap {worst:.1f}x (allowed {args.max_ratio}x)")
        assert worst <= args.max_ratio, f"a stream stalled: {worst:.1f}x its median gap"


if __name__ == "__main__":
    sys.exit(main())
