# Independent float64 numpy forward pass of a llama-arch GGUF (dequantized by the PyPI 'gguf'
# package), used by hand to check parafuse's logits:
#   python3 tests/reference/llama_reference.py 1,504,34294 [MODEL.gguf]
# prints the reference perplexity of the ids and saves the logits to /tmp/ref_logits.npy.
# Needs: pip install gguf numpy. Not run by CI (an extra download); see tests/README.md.
import numpy as np, sys
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[2] if len(sys.argv) > 2 else '.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf')
T = {t.name: t for t in r.tensors}
def W(name):
    t = T[name]
    a = dequantize(t.data, t.tensor_type).astype(np.float64)
    return a.reshape([int(x) for x in reversed(t.shape)]) if len(t.shape) > 1 else a.reshape(-1)
f = {k: v for k, v in r.fields.items()}
def meta(k): return int(f[k].parts[f[k].data[0]][0])
nh, nkv, L = meta("llama.attention.head_count"), meta("llama.attention.head_count_kv"), meta("llama.block_count")
H = meta("llama.embedding_length"); hd = H // nh
theta = float(f["llama.rope.freq_base"].parts[f["llama.rope.freq_base"].data[0]][0])
def unpermute(w, n):  # llama.cpp permutes q/k rows for interleaved rope
    return w.reshape(n, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
ids = [int(x) for x in sys.argv[1].split(',')]
n = len(ids)
emb = W('token_embd.weight')
x = emb[ids]
inv = theta ** (-np.arange(0, hd, 2) / hd)
pos = np.arange(n)[:, None] * inv[None, :]
cos, sin = np.cos(pos), np.sin(pos)
def rope(v):  # (n, heads, hd)
    a, b = v[..., :hd//2], v[..., hd//2:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a*c - b*s, b*c + a*s], -1)
def norm(v, g): return v / np.sqrt((v*v).mean(-1, keepdims=True) + 1e-5) * g
for l in range(L):
    p = f'blk.{l}.'
    h = norm(x, W(p+'attn_norm.weight'))
    q = (h @ unpermute(W(p+'attn_q.weight'), nh).T).reshape(n, nh, hd)
    k = (h @ unpermute(W(p+'attn_k.weight'), nkv).T).reshape(n, nkv, hd)
    v = (h @ W(p+'attn_v.weight').T).reshape(n, nkv, hd)
    q, k = rope(q), rope(k)
    out = np.zeros((n, nh, hd))
    for hh in range(nh):
        kv = hh // (nh // nkv)
        s = q[:, hh] @ k[:, kv].T / np.sqrt(hd)
        s = s + np.triu(np.full((n, n), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        out[:, hh] = s @ v[:, kv]
    x = x + out.reshape(n, -1) @ W(p+'attn_output.weight').T
    h = norm(x, W(p+'ffn_norm.weight'))
    g = h @ W(p+'ffn_gate.weight').T; u = h @ W(p+'ffn_up.weight').T
    x = x + (g / (1 + np.exp(-g)) * u) @ W(p+'ffn_down.weight').T
logits = norm(x, W('output_norm.weight')) @ emb.T
np.save('/tmp/ref_logits.npy', logits.astype(np.float32))
lp = logits - logits.max(-1, keepdims=True); lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
nll = -np.mean([lp[i, ids[i+1]] for i in range(n-1)])
print('ref ppl', np.exp(nll), 'argmax last', logits[-1].argmax())
