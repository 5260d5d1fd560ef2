// Native CPU kernels: paged decode attention, and the per-layer elementwise glue of the Llama
// forward (residual add + RMSNorm, SwiGLU, RoPE) fused into one pass each.
//
// Decode attention: one query per row, K/V read in place from the token-indexed pool. Why: the torch reference gathers each row's K/V into a padded batch and then calls SDPA, so every
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
  static inline float round(float x) { return x; }
};
template <typename To, typename From> static inline To bitcast(From x) {
  static_assert(sizeof(To) == sizeof(From), "bitcast between types of one size");
  To y;
  memcpy(&y, &x, sizeof(To));
  return y;
}
static inline uint32_t bits_of(float x) { return bitcast<uint32_t>(x); }
static inline float float_of(uint32_t u) { return bitcast<float>(u); }
// float -> bf16 bits, round to nearest even as torch's .to(bfloat16); NaN stays NaN. Branch-free so
// that loops over it vectorize.
static inline uint16_t bf16_bits(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : rounded);
}
template <> struct Elem<BF16> {
  using T = uint16_t;
  static inline float get(const uint16_t* p) { return float_of(((uint32_t)*p) << 16); }
  static inline void put(uint16_t* p, float x) { *p = bf16_bits(x); }
  static inline float round(float x) { return float_of(((uint32_t)bf16_bits(x)) << 16); }  // x after a bf16 store
};

// 16-lane vectors (GCC vector extensions): AVX-512 with -march=native on CPUs that have it, and
// narrower vectors or scalar code elsewhere, from the same source.
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));
static inline vf vset(float x) { return vf{} + x; }
static inline vu vbits(vf x) { return bitcast<vu>(x); }
static inline vf vfloat(vu u) { return bitcast<vf>(u); }
static inline vf vload(const float* p) {
  vf x;
  memcpy(&x, p, 64);
  return x;
}
static inline vf vload(const uint16_t* p) {
  vh h;
  memcpy(&h, p, 32);
  return vfloat(__builtin_convertvector(h, vu) << 16);
}
static inline vu vbf16(vf x) {  // bf16_bits, lane-wise
  const vu u = vbits(x);
  const vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return ((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : rounded;
}
static inline void vstore(float* p, vf x) { memcpy(p, &x, 64); }
static inline void vstore(uint16_t* p, vf x) {
  const vh h = __builtin_convertvector(vbf16(x), vh);
  memcpy(p, &h, 32);
}
static inline vf vround(vf x, const float*) { return x; }  // the value after a store to that type
static inline vf vround(vf x, const uint16_t*) { return vfloat(vbf16(x) << 16); }
// e^x to ~1 ulp (Cody-Waite reduction, Cephes' degree-6 polynomial), branch-free so it vectorizes:
// glibc's expf is a scalar call, and 2-3 M of them per decode step (softmax, SiLU) cost more than the
// rest of the glue. exp(x > 88.72) = inf and exp(x < -87.33) = 0, as expf.
static inline vf vexp(vf x) {
  const vf xc = x < -87.33f ? vset(-87.33f) : (x > 88.72f ? vset(88.72f) : x);
  const vf y0 = xc * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(y0, vi), vf);  // trunc
  n = n > y0 ? n - 1.f : n;                                             // floor
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = vset(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vf y = p * vfloat((vu)((__builtin_convertvector(n, vi) + 127) << 23));
  return x > 88.72f ? vset(INFINITY) : (x < -87.33f ? vset(0.f) : y);
}
static inline float exp_fast(float x) { return vexp(vset(x))[0]; }  // for loop tails
static inline float vsum(vf x) {
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += x[l];
  return s;
}

// s[t] = exp(s[t] - mx) for t < L; returns their sum
static inline float exp_and_sum(float* s, int64_t L, float mx) {
  vf acc = vset(0.f);
  int64_t t = 0;
  for (; t + 16 <= L; t += 16) {
    const vf e = vexp(vload(s + t) - mx);
    vstore(s + t, e);
    acc += e;
  }
  float sum = vsum(acc);
  for (; t < L; ++t) {
    s[t] = exp_fast(s[t] - mx);
    sum += s[t];
  }
  return sum;
}

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
    inv[c] = 1.f / exp_and_sum(S + c * s_stride, L, mx[c]);
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
  const float sum = exp_and_sum(S, L, mx);
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


// ---- elementwise glue. Each op rounds to the storage dtype exactly where transformers' Llama
// does (one rounding per torch op), so the bf16 results match it op for op. Inputs under 8K
// elements run on one thread (the OpenMP fork costs more); measured at batch 32 on 2 cores, the
// threaded passes take 6-27 us against 40-70 us for the torch ops.
static bool worth_threads(int64_t elems) { return elems >= (1 << 13); }

// h [rows, n] (+)= delta; x = w * round(h * rsqrt(mean(h^2) + eps)). delta may be null.
template <int K>
static void add_rms_norm(typename Elem<K>::T* h, const typename Elem<K>::T* delta, const typename Elem<K>::T* w,
                         typename Elem<K>::T* x, int64_t rows, int64_t n, float eps, int num_threads) {
  using E = Elem<K>;
  const int64_t nv = n / 16 * 16;
#pragma omp parallel for num_threads(num_threads) if (worth_threads(rows * n))
  for (int64_t r = 0; r < rows; ++r) {
    auto* hr = h + r * n;
    auto* xr = x + r * n;
    const auto* dr = delta ? delta + r * n : nullptr;
    vf acc = vset(0.f);
    for (int64_t j = 0; j < nv; j += 16) {
      vf v = vload(hr + j);
      if (dr) {
        v = vround(v + vload(dr + j), hr);
        vstore(hr + j, v);
      }
      acc += v * v;
    }
    float ss = vsum(acc);
    for (int64_t j = nv; j < n; ++j) {
      float v = E::get(hr + j);
      if (dr) {
        v = E::round(v + E::get(dr + j));
        E::put(hr + j, v);
      }
      ss += v * v;
    }
    const float inv = 1.f / sqrtf(ss / (float)n + eps);
    for (int64_t j = 0; j < nv; j += 16) vstore(xr + j, vload(w + j) * vround(vload(hr + j) * inv, hr));
    for (int64_t j = nv; j < n; ++j) E::put(xr + j, E::get(w + j) * E::round(E::get(hr + j) * inv));
  }
}

// gu [rows, 2 * inter] = [gate | up] -> y [rows, inter] = round(silu(gate)) * up
template <int K>
static void silu_mul(const typename Elem<K>::T* gu, typename Elem<K>::T* y, int64_t rows, int64_t inter,
                     int num_threads) {
  using E = Elem<K>;
  const int64_t nv = inter / 16 * 16;
#pragma omp parallel for num_threads(num_threads) if (worth_threads(rows * inter))
  for (int64_t r = 0; r < rows; ++r) {
    const auto* g = gu + r * 2 * inter;
    const auto* u = g + inter;
    auto* yr = y + r * inter;
    for (int64_t i = 0; i < nv; i += 16) {
      const vf a = vload(g + i);
      vstore(yr + i, vround(a / (1.f + vexp(-a)), yr) * vload(u + i));
    }
    for (int64_t i = nv; i < inter; ++i) {
      const float a = E::get(g + i);
      E::put(yr + i, E::round(a / (1.f + exp_fast(-a))) * E::get(u + i));
    }
  }
}

// In place on x [rows, heads, D] (row stride row_stride): x = x * cos + rotate_half(x) * sin, with
// cos/sin tables [P, D] read at positions[r] (sin_signed already carries rotate_half's sign).
template <int K>
static void rope(typename Elem<K>::T* x, int64_t row_stride, int64_t rows, int64_t heads, int64_t D,
                 const typename Elem<K>::T* cos, const typename Elem<K>::T* sin_signed, const int64_t* positions,
                 int num_threads) {
  using E = Elem<K>;
  const int64_t half = D / 2;
  const int64_t nv = half / 16 * 16;
#pragma omp parallel for num_threads(num_threads) if (worth_threads(rows * heads * D))
  for (int64_t r = 0; r < rows; ++r) {
    const auto* c = cos + positions[r] * D;
    const auto* s = sin_signed + positions[r] * D;
    for (int64_t h = 0; h < heads; ++h) {
      auto* xh = x + r * row_stride + h * D;
      for (int64_t i = 0; i < nv; i += 16) {
        const vf a = vload(xh + i), b = vload(xh + i + half);
        vstore(xh + i, vround(a * vload(c + i), xh) + vround(b * vload(s + i), xh));
        vstore(xh + i + half, vround(b * vload(c + i + half), xh) + vround(a * vload(s + i + half), xh));
      }
      for (int64_t i = nv; i < half; ++i) {
        const float a = E::get(xh + i), b = E::get(xh + i + half);
        E::put(xh + i, E::round(a * E::get(c + i)) + E::round(b * E::get(s + i)));
        E::put(xh + i + half, E::round(b * E::get(c + i + half)) + E::round(a * E::get(s + i + half)));
      }
    }
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

#define ARBORLM_DISPATCH(kind, CALL_F32, CALL_BF16) \
  if ((kind) == F32) { CALL_F32; return 0; }        \
  if ((kind) == BF16) { CALL_BF16; return 0; }      \
  return 1;

int arborlm_add_rms_norm(int kind, void* h, const void* delta, const void* w, void* x, int64_t rows, int64_t n,
                         float eps, int num_threads) {
  ARBORLM_DISPATCH(kind,
                   add_rms_norm<F32>((float*)h, (const float*)delta, (const float*)w, (float*)x, rows, n, eps, num_threads),
                   add_rms_norm<BF16>((uint16_t*)h, (const uint16_t*)delta, (const uint16_t*)w, (uint16_t*)x, rows, n,
                                      eps, num_threads))
}

int arborlm_silu_mul(int kind, const void* gu, void* y, int64_t rows, int64_t inter, int num_threads) {
  ARBORLM_DISPATCH(kind, silu_mul<F32>((const float*)gu, (float*)y, rows, inter, num_threads),
                   silu_mul<BF16>((const uint16_t*)gu, (uint16_t*)y, rows, inter, num_threads))
}

int arborlm_rope(int kind, void* x, int64_t row_stride, int64_t rows, int64_t heads, int64_t D, const void* cos,
                 const void* sin_signed, const int64_t* positions, int num_threads) {
  ARBORLM_DISPATCH(kind,
                   rope<F32>((float*)x, row_stride, rows, heads, D, (const float*)cos, (const float*)sin_signed,
                             positions, num_threads),
                   rope<BF16>((uint16_t*)x, row_stride, rows, heads, D, (const uint16_t*)cos,
                              (const uint16_t*)sin_signed, positions, num_threads))
}
}
