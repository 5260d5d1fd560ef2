// Paged decode attention for CPU: one query per row, K/V read in place from the token-indexed pool.
//
// Why: the torch reference gathers each row's K/V into a padded batch and then calls SDPA, so every
// key is read, written and read again (and the padding is attended too). Decode attention is
// memory-bound (batch 32 x ~275 keys x 30 layers ~ 200 MB of bf16 K/V per step), so reading each
// key once, in place, through the ReqToToken table is what makes it faster.
//
// Shapes (all row-major, T = float | bf16 bits as uint16_t | fp16 bits as uint16_t):
//   q        [n, H, D]   row stride q_row_stride elements, heads contiguous (stride D)
//   k/v_buf  [num_slots, Hkv, D]
//   table    [max_running, table_stride] int32: table[rows[i], t] = slot of key t of row i
//   rows     [n] int64, lens [n] int64 (keys of row i: t in [0, lens[i]))
//   out      [n, H, D]  contiguous
// Query head h reads kv head h / (H / Hkv) (transformers' repeat_kv order).
//
// Per row and kv head: pass 1 computes the G = H / Hkv scores of every key (q pre-scaled, fp32
// accumulation) into a per-thread scratch [H, max_len], pass 2 turns them into exp(s - max) and
// accumulates V. Rows are spread over OpenMP threads (the runtime torch loaded: same soname).
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

enum Kind { F32 = 0, BF16 = 1 };

template <int K> struct Elem;
template <> struct Elem<F32> {
  using T = float;
  static inline float get(const float* p) { return *p; }
  static inline void put(float* p, float x) { *p = x; }
};
template <> struct Elem<BF16> {
  using T = uint16_t;
  static inline float get(const uint16_t* p) {
    uint32_t u = ((uint32_t)*p) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  static inline void put(uint16_t* p, float x) {  // round to nearest even, as torch's .to(bfloat16)
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { *p = (uint16_t)((u >> 16) | 0x40); return; }  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = (uint16_t)(u >> 16);
  }
};

#if defined(__AVX512F__)
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256((const __m256i*)p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// D = 16 * ND; C query heads (of one kv head) share each loaded key / value vector.
template <int K, int ND, int C>
static void heads_avx512(const float* qs, const typename Elem<K>::T* kb, const typename Elem<K>::T* vb,
                         const int32_t* slots, int64_t L, int64_t tok_stride, float* S, int64_t s_stride,
                         float* o_out) {
  constexpr int D = 16 * ND;
  __m512 qv[C][ND];
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < ND; ++i) qv[c][i] = _mm512_loadu_ps(qs + c * D + 16 * i);
  float mx[C];
  for (int c = 0; c < C; ++c) mx[c] = -INFINITY;
  for (int64_t t = 0; t < L; ++t) {
    const auto* kp = kb + (int64_t)slots[t] * tok_stride;
    __m512 kv[ND];
    for (int i = 0; i < ND; ++i) kv[i] = load16(kp + 16 * i);
    for (int c = 0; c < C; ++c) {
      __m512 a = _mm512_mul_ps(qv[c][0], kv[0]);
      for (int i = 1; i < ND; ++i) a = _mm512_fmadd_ps(qv[c][i], kv[i], a);
      const float s = _mm512_reduce_add_ps(a);
      S[c * s_stride + t] = s;
      mx[c] = s > mx[c] ? s : mx[c];
    }
  }
  float inv[C];
  for (int c = 0; c < C; ++c) {
    float* sc = S + c * s_stride;
    float sum = 0.f;
    for (int64_t t = 0; t < L; ++t) {
      const float e = expf(sc[t] - mx[c]);
      sc[t] = e;
      sum += e;
    }
    inv[c] = 1.f / sum;
  }
  __m512 acc[C][ND];
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < ND; ++i) acc[c][i] = _mm512_setzero_ps();
  for (int64_t t = 0; t < L; ++t) {
    const auto* vp = vb + (int64_t)slots[t] * tok_stride;
    __m512 vv[ND];
    for (int i = 0; i < ND; ++i) vv[i] = load16(vp + 16 * i);
    for (int c = 0; c < C; ++c) {
      const __m512 p = _mm512_set1_ps(S[c * s_stride + t]);
      for (int i = 0; i < ND; ++i) acc[c][i] = _mm512_fmadd_ps(p, vv[i], acc[c][i]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < ND; ++i) _mm512_storeu_ps(o_out + c * D + 16 * i, _mm512_mul_ps(acc[c][i], _mm512_set1_ps(inv[c])));
}
#endif

// Portable path (any D, any CPU): the same two passes, one query head at a time.
template <int K>
static void head_generic(const float* qs, const typename Elem<K>::T* kb, const typename Elem<K>::T* vb,
                         const int32_t* slots, int64_t L, int64_t tok_stride, int64_t D, float* S, float* o_out) {
  float mx = -INFINITY;
  for (int64_t t = 0; t < L; ++t) {
    const auto* kp = kb + (int64_t)slots[t] * tok_stride;
    float s = 0.f;
    for (int64_t d = 0; d < D; ++d) s += qs[d] * Elem<K>::get(kp + d);
    S[t] = s;
    mx = s > mx ? s : mx;
  }
  float sum = 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const float e = expf(S[t] - mx);
    S[t] = e;
    sum += e;
  }
  for (int64_t d = 0; d < D; ++d) o_out[d] = 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const auto* vp = vb + (int64_t)slots[t] * tok_stride;
    const float p = S[t];
    for (int64_t d = 0; d < D; ++d) o_out[d] += p * Elem<K>::get(vp + d);
  }
  const float inv = 1.f / sum;
  for (int64_t d = 0; d < D; ++d) o_out[d] *= inv;
}

// Heads [h0, h0 + C) of one kv head g; qs/o_out already point at head h0 (fp32, [C, D]).
template <int K>
static void heads(const float* qs, const typename Elem<K>::T* kb, const typename Elem<K>::T* vb,
                  const int32_t* slots, int64_t L, int64_t tok_stride, int64_t D, int C, float* S,
                  int64_t s_stride, float* o_out) {
#if defined(__AVX512F__)
  if (D == 64 && C == 4) return heads_avx512<K, 4, 4>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
  if (D == 64 && C == 3) return heads_avx512<K, 4, 3>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
  if (D == 64 && C == 2) return heads_avx512<K, 4, 2>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
  if (D == 64 && C == 1) return heads_avx512<K, 4, 1>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
  if (D == 128 && C == 2) return heads_avx512<K, 8, 2>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
  if (D == 128 && C == 1) return heads_avx512<K, 8, 1>(qs, kb, vb, slots, L, tok_stride, S, s_stride, o_out);
#endif
  for (int c = 0; c < C; ++c)
    head_generic<K>(qs + c * D, kb, vb, slots, L, tok_stride, D, S + c * s_stride, o_out + c * D);
}

// Largest chunk of query heads processed together: divides G, fits the AVX-512 registers.
static int head_chunk(int64_t G, int64_t D) {
  const int max_c = D <= 64 ? 4 : 2;
  for (int c = max_c; c > 1; --c)
    if (G % c == 0) return c;
  return 1;
}

template <int K>
static void decode(const typename Elem<K>::T* q, int64_t q_row_stride, const typename Elem<K>::T* kb,
                   const typename Elem<K>::T* vb, const int32_t* table, int64_t table_stride, const int64_t* rows,
                   const int64_t* lens, int64_t n, int64_t H, int64_t Hkv, int64_t D, float scale,
                   typename Elem<K>::T* out, int64_t max_len, int num_threads) {
  const int64_t G = H / Hkv;
  const int C = head_chunk(G, D);
  const int64_t tok_stride = Hkv * D;
#pragma omp parallel num_threads(num_threads)
  {
    float* S = (float*)malloc(sizeof(float) * (size_t)C * (size_t)(max_len > 0 ? max_len : 1));
    float* qs = (float*)malloc(sizeof(float) * (size_t)(H * D));
    float* os = (float*)malloc(sizeof(float) * (size_t)(H * D));
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      const auto* qi = q + i * q_row_stride;
      for (int64_t j = 0; j < H * D; ++j) qs[j] = Elem<K>::get(qi + j) * scale;
      const int32_t* slots = table + rows[i] * table_stride;
      for (int64_t g = 0; g < Hkv; ++g)
        for (int64_t j = 0; j < G; j += C) {
          const int64_t h = g * G + j;
          heads<K>(qs + h * D, kb + g * D, vb + g * D, slots, lens[i], tok_stride, D, C, S, max_len, os + h * D);
        }
      auto* oi = out + i * H * D;
      for (int64_t j = 0; j < H * D; ++j) Elem<K>::put(oi + j, os[j]);
    }
    free(S);
    free(qs);
    free(os);
  }
}

}  // namespace

extern "C" {
// kind: 0 = float32, 1 = bfloat16 (q, K/V and out share it). Returns 0, or 1 for an unknown kind.
int arborlm_decode_attention(int kind, const void* q, int64_t q_row_stride, const void* k_buf, const void* v_buf,
                             const int32_t* table, int64_t table_stride, const int64_t* rows, const int64_t* lens,
                             int64_t n, int64_t H, int64_t Hkv, int64_t D, float scale, void* out, int64_t max_len,
                             int num_threads) {
  if (kind == F32) {
    decode<F32>((const float*)q, q_row_stride, (const float*)k_buf, (const float*)v_buf, table, table_stride, rows,
                lens, n, H, Hkv, D, scale, (float*)out, max_len, num_threads);
    return 0;
  }
  if (kind == BF16) {
    decode<BF16>((const uint16_t*)q, q_row_stride, (const uint16_t*)k_buf, (const uint16_t*)v_buf, table,
                 table_stride, rows, lens, n, H, Hkv, D, scale, (uint16_t*)out, max_len, num_threads);
    return 0;
  }
  return 1;
}
}
