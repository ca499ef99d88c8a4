// The table of the backend op test, plus its sampling-property and error checks.
//
// backend_op_cases() lists every case: odd sizes, m=1 decode and m>1 prefill, GQA ratios 1/3/8,
// batches of sequences with different n_past over non-contiguous 16-token blocks, strided views,
// in-place aliasing, NaN/Inf inputs. Run one with check_op_case() (backend_op_harness.h).
// expect_sampling_properties() and expect_op_errors() are the checks that are not
// output-vs-reference comparisons. A backend's test instantiates all three: the CPU backend
// against the naive reference (test_backend_ops.cpp), a device backend against the CPU backend.
#pragma once

#include <gtest/gtest.h>

#include <set>

#include "tests/unit/backend_op_builders.h"

namespace parafuse::op_test {

inline std::vector<OpCase> backend_op_cases() {
  std::vector<OpCase> c;
  // gemm: y (m,n) = x (m,k) w (n,k)^T + beta y
  c.push_back(gemm_case("gemm_1x1x1", 1, 1, 1, 0.0f, 101));
  c.push_back(gemm_case("gemm_decode_m1_n257_k96", 1, 257, 96, 0.0f, 102));
  c.push_back(gemm_case("gemm_odd_m7_n33_k65", 7, 33, 65, 0.0f, 103));
  c.push_back(gemm_case("gemm_prefill_m64_n96_k128", 64, 96, 128, 0.0f, 104));
  c.push_back(gemm_case("gemm_prefill_m33_n576_k576", 33, 576, 576, 0.0f, 105));
  c.push_back(gemm_case("gemm_beta1_m5_n17_k300", 5, 17, 300, 1.0f, 106));
  c.push_back(gemm_case("gemm_beta_half_m3_n9_k31", 3, 9, 31, 0.5f, 107));
  c.push_back(gemm_case("gemm_strided_m9_n13_k40", 9, 13, 40, 0.0f, 108, 50, 47, 20));
  c.push_back(gemm_case("gemm_strided_decode_m1_n10_k64", 1, 10, 64, 1.0f, 109, 100, 70, 12));
  c.push_back(gemm_case("gemm_k0_beta_half", 3, 4, 0, 0.5f, 110));
  // rmsnorm
  c.push_back(rmsnorm_case("rmsnorm_decode_d576", 1, 576, true, 1e-5f, 201));
  c.push_back(rmsnorm_case("rmsnorm_odd_m4_d7_no_weight", 4, 7, false, 1e-5f, 202));
  c.push_back(rmsnorm_case("rmsnorm_prefill_m37_d64", 37, 64, true, 1e-6f, 203));
  c.push_back(rmsnorm_case("rmsnorm_strided_m3_d64", 3, 64, true, 1e-5f, 204, false, 80, 70));
  c.push_back(rmsnorm_case("rmsnorm_in_place_m2_d33", 2, 33, true, 1e-5f, 205, true));
  c.push_back(rmsnorm_case("rmsnorm_in_place_m3_d4096", 3, 4096, true, 1e-5f, 207, true));
  c.push_back(rmsnorm_case("rmsnorm_wide_m2_d16384", 2, 16384, false, 1e-5f, 208));
  c.push_back(
      rmsnorm_case("rmsnorm_nan_zero_large_rows", 4, 48, true, 1e-6f, 206, false, -1, -1, true));
  // rope (rotate-half)
  c.push_back(rope_case("rope_decode_h9_d64", 1, 9, 64, 1000, 10000.0f, 301));
  c.push_back(rope_case("rope_prefill_m12_h3_d64", 12, 3, 64, 11, 10000.0f, 302));
  c.push_back(rope_case("rope_d2_m3_h2", 3, 2, 2, 50, 10000.0f, 303));
  c.push_back(rope_case("rope_odd_heads_h5_d6", 6, 5, 6, 8191, 500000.0f, 304));
  c.push_back(rope_case("rope_strided_qkv_view_m4_h4_d16", 4, 4, 16, 300, 10000.0f, 305, 100));
  c.push_back(rope_case("rope_long_positions_d128", 2, 1, 128, 131071, 500000.0f, 306));
  // kv_store: SeqSpec{q_begin, n_new, n_past}
  c.push_back(kv_store_case("kv_store_prefill_20", {{0, 20, 0, {}}}, 192, 401));
  c.push_back(kv_store_case("kv_store_decode_batch_3",
                            {{0, 1, 5, {}}, {1, 1, 16, {}}, {2, 1, 31, {}}}, 64, 402));
  c.push_back(kv_store_case("kv_store_mixed_strided",
                            {{1, 7, 10, {}}, {0, 1, 0, {}}, {8, 2, 47, {}}}, 48, 403, 160));
  // attention: AttentionShape{n_heads, n_kv_heads, head_dim, scale (0 = 1/sqrt(hd))}
  c.push_back(attention_case("attention_decode_gqa1", {{0, 1, 40, {}}}, {4, 4, 64, 0.0f}, 501));
  c.push_back(attention_case("attention_decode_long_gqa4_hd128", {{0, 1, 1001, {}}, {1, 1, 3, {}}},
                             {32, 8, 128, 0.0f}, 512));
  // (decode at batch 1 splits the keys into chunks merged afterwards: 3 kv groups, 700 keys)
  c.push_back(attention_case("attention_decode_smollm2_700_keys", {{0, 1, 699, {}}},
                             {9, 3, 64, 0.0f}, 513));
  c.push_back(attention_case("attention_prefill_gqa3", {{0, 37, 0, {}}}, {6, 2, 32, 0.0f}, 502));
  c.push_back(attention_case("attention_prefill_gqa8", {{0, 20, 0, {}}}, {8, 1, 64, 0.0f}, 503));
  c.push_back(attention_case("attention_batch_3seqs_gqa3",
                             {{4, 5, 0, {}}, {0, 1, 17, {}}, {1, 3, 100, {}}}, {9, 3, 64, 0.0f},
                             504));
  c.push_back(attention_case("attention_chunked_prefill_many_tiles", {{0, 70, 130, {}}},
                             {2, 1, 64, 0.0f}, 505));
  c.push_back(
      attention_case("attention_odd_head_dim17_scale", {{0, 5, 11, {}}}, {3, 3, 17, 0.3f}, 506));
  c.push_back(attention_case("attention_head_dim72_two_seqs", {{0, 3, 30, {}}, {3, 1, 0, {}}},
                             {4, 2, 72, 0.0f}, 507));
  c.push_back(attention_case("attention_strided_q_out", {{0, 4, 9, {}}, {4, 2, 33, {}}},
                             {6, 3, 32, 0.0f}, 508, 1.0f, 6 * 32 * 3, 200));
  c.push_back(
      attention_case("attention_large_scores", {{0, 16, 16, {}}}, {4, 2, 64, 0.0f}, 509, 8.0f));
  c.push_back(attention_case("attention_batch_with_empty_seq", {{0, 2, 5, {}}, {2, 0, 7, {}}},
                             {2, 2, 16, 0.0f}, 510));
  // swiglu
  c.push_back(swiglu_case("swiglu_1x1", 1, 1, 601));
  c.push_back(swiglu_case("swiglu_m3_f100", 3, 100, 602));
  c.push_back(swiglu_case("swiglu_prefill_m5_f1536", 5, 1536, 603));
  c.push_back(swiglu_case("swiglu_strided_m4_f33", 4, 33, 604, 66));
  c.push_back(swiglu_case("swiglu_inf_nan_overflow", 2, 8, 605, -1, true));
  // add
  c.push_back(add_case("add_1x1", 1, 1, 701));
  c.push_back(add_case("add_m4_n577", 4, 577, 702));
  c.push_back(add_case("add_strided_m3_n20", 3, 20, 703, AddAlias::None, 31));
  c.push_back(add_case("add_out_is_a", 5, 64, 704, AddAlias::OutIsA));
  c.push_back(add_case("add_out_is_b_strided", 5, 64, 705, AddAlias::OutIsB, 70));
  c.push_back(add_case("add_inf_nan", 2, 9, 706, AddAlias::None, -1, true));
  // embedding
  c.push_back(embedding_case("embedding_decode", 50, 24, {7}, 0, 801));
  c.push_back(embedding_case("embedding_vocab_parallel_slice", 50, 24,
                             {100, 149, 99, 150, 0, 125, 125, 1000000}, 100, 802));
  c.push_back(embedding_case("embedding_strided", 30, 16, {0, 29, 3}, 0, 803, 20, 19));
  // copy
  c.push_back(copy_case("copy_f32_contiguous", 5, 7, DType::F32, 901));
  c.push_back(copy_case("copy_f32_strided_src", 4, 9, DType::F32, 902, 12));
  c.push_back(copy_case("copy_f32_strided_dst", 4, 9, DType::F32, 903, -1, 15));
  c.push_back(copy_case("copy_i32_strided", 3, 5, DType::I32, 904, 8, 6));
  // sample: sampling(temperature, top_k, top_p, seed, counter)
  c.push_back(sample_case(
      "sample_greedy", 1000,
      {sampling(0, 0, 1, 0, 0), sampling(0, 0, 1, 1, 1), sampling(0, 5, 0.5f, 2, 2)}, 1001));
  c.push_back(sample_case("sample_temperature", 1000,
                          {sampling(0.7f, 0, 1, 11, 0), sampling(1.0f, 0, 1, 11, 1),
                           sampling(1.5f, 0, 1, 12, 7), sampling(0.3f, 0, 1, 99, 123456)},
                          1002));
  c.push_back(sample_case("sample_top_k", 1000,
                          {sampling(1.0f, 1, 1, 5, 0), sampling(1.0f, 5, 1, 5, 1),
                           sampling(2.0f, 40, 1, 5, 2), sampling(1.0f, 999, 1, 5, 3)},
                          1003));
  c.push_back(sample_case("sample_top_p", 1000,
                          {sampling(1.0f, 0, 0.5f, 6, 0), sampling(1.0f, 0, 0.9f, 6, 1),
                           sampling(0.8f, 0, 0.99f, 6, 2), sampling(1.0f, 0, 1e-6f, 6, 3)},
                          1004, 3.0f));
  c.push_back(sample_case("sample_top_k_top_p_vocab37", 37,
                          {sampling(0.8f, 20, 0.8f, 7, 0), sampling(1.2f, 3, 0.95f, 7, 1),
                           sampling(1.0f, 36, 0.5f, 8, 2)},
                          1005, 1.0f, 40));
  return c;
}

// Tokens drawn by `backend` for rows of host logits (rows*vocab) with one params entry per row.
inline std::vector<int32_t> sample_host(Backend& backend, const std::vector<float>& logits,
                                        int64_t vocab, const std::vector<SamplingParams>& params) {
  Buffer buffer;
  const int64_t rows = int64_t(params.size());
  Tensor t = backend.alloc_tensor(buffer, DType::F32, rows, vocab);
  backend.upload_f32(logits.data(), t);
  std::vector<int32_t> ids(size_t(rows), -1);
  backend.sample(t, params.data(), ids.data());
  return ids;
}

// `fn` must throw parafuse::Error whose message contains every one of `needles`.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string_view> needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << *needles.begin() << "'";
  } catch (const Error& e) {
    for (std::string_view n : needles) {
      EXPECT_NE(std::string_view(e.what()).find(n), std::string_view::npos)
          << "error message '" << e.what() << "' does not mention '" << n << "'";
    }
  }
}

inline void expect_sampling_properties(Backend& be) {
  std::mt19937_64 rng(77);
  const int64_t vocab = 1000;
  // Greedy is argmax, lowest index on ties; an all-equal row gives token 0.
  {
    const int64_t rows = 32;
    auto logits = random_normal(rng, rows * vocab);
    std::fill(logits.begin() + vocab, logits.begin() + 2 * vocab, -3.0f);
    logits[size_t(2 * vocab + 500)] = logits[size_t(2 * vocab + 400)] = 40.0f;
    std::vector<SamplingParams> params(size_t(rows), sampling(0, 0, 1, 0, 0));
    auto ids = sample_host(be, logits, vocab, params);
    for (int64_t r = 0; r < rows; ++r) {
      auto row = logits.begin() + r * vocab;
      EXPECT_EQ(ids[size_t(r)], std::max_element(row, row + vocab) - row) << "row " << r;
    }
    EXPECT_EQ(ids[1], 0);
    EXPECT_EQ(ids[2], 400);
  }
  auto row = random_normal(rng, vocab, 1.5f);
  const int32_t greedy = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
  auto draw = [&](SamplingParams p) { return sample_host(be, row, vocab, {p})[0]; };
  // Temperature sampling is a pure function of (seed, counter), wherever the row sits in a batch.
  {
    std::set<int32_t> distinct;
    for (uint64_t counter = 0; counter < 64; ++counter) {
      const int32_t a = draw(sampling(1.0f, 0, 1, 42, counter));
      EXPECT_EQ(a, draw(sampling(1.0f, 0, 1, 42, counter))) << "counter " << counter;
      distinct.insert(a);
    }
    EXPECT_GT(distinct.size(), 10u) << "64 counters at temperature 1 gave too few distinct tokens";
    std::vector<float> batch(row);
    batch.insert(batch.end(), row.begin(), row.end());
    auto ids =
        sample_host(be, batch, vocab, {sampling(0, 0, 1, 0, 0), sampling(1.0f, 0, 1, 42, 5)});
    EXPECT_EQ(ids[1], draw(sampling(1.0f, 0, 1, 42, 5)));
    EXPECT_NE(draw(sampling(1.0f, 0, 1, 42, 5)) == draw(sampling(1.0f, 0, 1, 43, 5)) &&
                  draw(sampling(1.0f, 0, 1, 44, 5)) == draw(sampling(1.0f, 0, 1, 45, 5)) &&
                  draw(sampling(1.0f, 0, 1, 42, 5)) == draw(sampling(1.0f, 0, 1, 44, 5)),
              true)
        << "four seeds drew the same token: the seed is ignored";
  }
  // top_k = 1 and a tiny top_p are greedy at any temperature.
  for (float t : {0.5f, 1.0f, 2.0f}) {
    for (uint64_t counter = 0; counter < 20; ++counter) {
      EXPECT_EQ(draw(sampling(t, 1, 1, 3, counter)), greedy) << "top_k 1, T " << t;
      EXPECT_EQ(draw(sampling(t, 0, 1e-6f, 3, counter)), greedy) << "top_p 1e-6, T " << t;
    }
  }
  // Empirical frequencies over many counters follow the filtered softmax (4-token vocab).
  {
    const std::vector<float> logits4 = {1.0f, 0.5f, -0.3f, 2.0f};
    auto softmax = [&](double t, std::vector<int> keep) {
      std::vector<double> p(4, 0.0);
      double z = 0.0;
      for (int i : keep) z += p[size_t(i)] = std::exp(logits4[size_t(i)] / t);
      for (double& x : p) x /= z;
      return p;
    };
    struct Expectation {
      SamplingParams params;
      std::vector<double> probs;
    };
    // T=1 probabilities: 0.2175, 0.1319, 0.0593, 0.5913; top-p 0.8 keeps {3, 0} (0.809).
    const std::vector<Expectation> expectations = {
        {sampling(1.0f, 0, 1, 1234, 0), softmax(1.0, {0, 1, 2, 3})},
        {sampling(2.0f, 0, 1, 99, 0), softmax(2.0, {0, 1, 2, 3})},
        {sampling(0.5f, 2, 1, 5, 0), softmax(0.5, {0, 3})},
        {sampling(1.0f, 0, 0.8f, 6, 0), softmax(1.0, {0, 3})},
        {sampling(1.0f, 3, 0.7f, 6, 0), softmax(1.0, {0, 3})},
    };
    const int64_t n = 40000;  // binomial sd <= 0.0025: a 0.01 tolerance is 4 sd
    std::vector<float> logits;
    for (int64_t i = 0; i < n; ++i) logits.insert(logits.end(), logits4.begin(), logits4.end());
    for (const Expectation& e : expectations) {
      std::vector<SamplingParams> params(size_t(n), e.params);
      for (int64_t i = 0; i < n; ++i) params[size_t(i)].counter = uint64_t(i);
      auto ids = sample_host(be, logits, 4, params);
      std::vector<double> freq(4, 0.0);
      for (int32_t id : ids) {
        ASSERT_TRUE(id >= 0 && id < 4) << id;
        freq[size_t(id)] += 1.0 / double(n);
      }
      for (int i = 0; i < 4; ++i) {
        EXPECT_NEAR(freq[size_t(i)], e.probs[size_t(i)], 0.01)
            << "token " << i << " T " << e.params.temperature << " top_k " << e.params.top_k
            << " top_p " << e.params.top_p;
      }
    }
  }
  // Bad inputs are errors naming the op, never a crash or a silent token.
  for (const SamplingParams& bad :
       {sampling(-1.0f, 0, 1, 0, 0), sampling(std::numeric_limits<float>::quiet_NaN(), 0, 1, 0, 0),
        sampling(std::numeric_limits<float>::infinity(), 0, 1, 0, 0), sampling(1.0f, -1, 1, 0, 0),
        sampling(1.0f, 0, 0.0f, 0, 0), sampling(1.0f, 0, 1.5f, 0, 0),
        sampling(1.0f, 0, std::numeric_limits<float>::quiet_NaN(), 0, 0)}) {
    expect_error([&] { draw(bad); }, {"sample"});
  }
  auto with_nan = row;
  with_nan[17] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { sample_host(be, with_nan, vocab, {sampling(1.0f, 0, 1, 0, 0)}); },
               {"sample", "NaN"});
  auto all_neg_inf = filled(vocab, -std::numeric_limits<float>::infinity());
  expect_error([&] { sample_host(be, all_neg_inf, vocab, {sampling(1.0f, 0, 1, 0, 0)}); },
               {"sample"});
  Buffer buffer;
  Tensor t = be.alloc_tensor(buffer, DType::F32, 1, vocab);
  int32_t id = 0;
  expect_error([&] { be.sample(t, nullptr, &id); }, {"sample"});
}

// Shape and argument errors every backend must report (with the op's name) instead of
// computing garbage. Q4_0 stands for a dtype no backend computes in (GGUF quantization is
// dequantized on load).
inline void expect_op_errors(Backend& be) {
  std::vector<Buffer> buffers;
  auto f32 = [&](int64_t rows, int64_t cols) {
    buffers.emplace_back();
    Tensor t = be.alloc_tensor(buffers.back(), DType::F32, rows, cols);
    be.upload_f32(filled(rows * cols, 0.5f).data(), t);
    return t;
  };
  auto i32 = [&](std::vector<int32_t> values) {
    buffers.emplace_back();
    Tensor t = be.alloc_tensor(buffers.back(), DType::I32, int64_t(values.size()), 1);
    be.upload_i32(values.data(), t);
    return t;
  };
  Tensor x = f32(4, 8), w = f32(6, 8), y = f32(4, 6);
  expect_error([&] { be.gemm(x, f32(6, 7), y); }, {"gemm"});
  expect_error([&] { be.gemm(x, w, f32(4, 5)); }, {"gemm"});
  Tensor x_q = x;
  x_q.dtype = DType::Q4_0;
  expect_error([&] { be.gemm(x_q, w, y); }, {"gemm", "Q4_0"});
  expect_error([&] { be.rmsnorm(x, f32(1, 9), 1e-5f, x); }, {"rmsnorm"});
  expect_error([&] { be.rmsnorm(x, Tensor{}, 1e-5f, f32(3, 8)); }, {"rmsnorm"});
  Tensor inv_freq = f32(1, 4);
  expect_error([&] { be.rope(x, i32({0, 1, 2, 3}), inv_freq, 1, 7); }, {"rope"});
  expect_error([&] { be.rope(x, i32({0, 1, 2}), inv_freq, 1, 8); }, {"rope"});
  expect_error([&] { be.rope(x, i32({0, 1, -3, 2}), inv_freq, 1, 8); }, {"rope", "-3"});
  expect_error([&] { be.swiglu(x, f32(4, 7), f32(4, 8)); }, {"swiglu"});
  expect_error([&] { be.add(x, x, f32(5, 8)); }, {"add"});
  expect_error([&] { be.copy(x, f32(4, 9)); }, {"copy"});
  Tensor table = f32(10, 8), out = f32(3, 8);
  expect_error([&] { be.embedding(table, i32({1, -5, 2}), 0, out); }, {"embedding", "-5"});
  expect_error([&] { be.embedding(f32(10, 7), i32({1, 2, 3}), 0, out); }, {"embedding"});
  // Paged attention: 2 blocks of 16 slots.
  const std::vector<int32_t> table_ok = {1, 0}, table_bad = {5, 0};
  Tensor cache_k = f32(32, 16), cache_v = f32(32, 16), q = f32(4, 32), o = f32(4, 32);
  Tensor k = f32(4, 16), v = f32(4, 16);
  AttentionBatch batch;
  batch.seqs = {{0, 4, 10, table_ok.data()}};
  const AttentionShape shape{2, 1, 16, 0.25f};
  expect_error(
      [&] {
        be.attention(q, cache_k, cache_v, batch, {3, 2, 16, 0.25f}, o);
      },
      {"attention"});
  expect_error(
      [&] {
        be.attention(q, cache_k, cache_v, batch, {2, 1, 8, 0.25f}, o);
      },
      {"attention"});
  AttentionBatch bad_slot = batch;
  bad_slot.seqs[0].block_table = table_bad.data();
  expect_error([&] { be.attention(q, cache_k, cache_v, bad_slot, shape, o); },
               {"attention", "slot"});
  AttentionBatch rows_out = batch;
  rows_out.seqs[0].q_begin = 2;
  expect_error([&] { be.kv_store(k, v, cache_k, cache_v, rows_out); }, {"kv_store"});
  expect_error([&] { be.kv_store(k, f32(4, 8), cache_k, cache_v, batch); }, {"kv_store"});
}

}  // namespace parafuse::op_test
