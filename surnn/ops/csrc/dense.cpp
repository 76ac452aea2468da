// The backbone's dense parts for inference, fused (surnn/harness/fused.py calls them):
// embedding, layer norms, the residual adds, the GLU feed-forward, pooling and a linear
// head, for float32 on the CPU, without autograd.
//
// Why: at batch 1 a sequence's dense parts are ~30 small torch ops per block, each paying
// Python and dispatch overhead: 0.7 ms per demo ListOps sequence (two blocks of width 64)
// against ~0.1 ms of arithmetic. Here one call runs a block's whole dense tail and ends
// with the next block's norm. The feed-forward's products go to the BLAS sgemm that torch
// links (MKL's, multi-threaded for big batches; looked up once and checked on a known
// product, else at::mm), with the weights transposed once by the caller; everything
// between them is a loop over rows (at::parallel_for, rows in chunks of kRowGrain, so a
// short sequence stays on one thread). Layer norm (two passes, biased variance, rows in
// blocks of 8) and GELU (erf by Abramowitz & Stegun 7.1.26, |error| < 1.5e-7, with the
// vectorised exp of simd.h) are this file's own: results agree with eager torch to float
// rounding, not bit for bit.
#include "dense.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "simd.h"

namespace {

constexpr int64_t kRowGrain = 256;
constexpr int64_t kScratchFloats = int64_t(1) << 20;  // 4 MB of scratch per thread

void check_f32(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
              "surnn fused dense: ", name, " must be a contiguous float32 CPU tensor, got ",
              t.scalar_type(), t.is_contiguous() ? "" : " (not contiguous)");
}

void check_norm(const torch::Tensor& w, const torch::Tensor& b, int64_t D) {
  check_f32(w, "norm weight");
  check_f32(b, "norm bias");
  TORCH_CHECK(w.numel() == D && b.numel() == D, "surnn fused dense: norm of size ", w.numel(),
              " on rows of ", D);
}

// y = (x - mean) / sqrt(var + eps) * w + b over each of n rows of D values (biased
// variance, two passes). Rows go in blocks of 8: the sums of every row of a block first
// (independent dependency chains, which the core overlaps), then their 8 scales at once,
// then the outputs: 2.5x faster than a row at a time at D = 64.
inline void norm_rows(const float* x, const float* w, const float* b, float eps, float* y,
                      int64_t n, int64_t D) {
  using Vf = V<float>::type;
  for (int64_t r0 = 0; r0 < n; r0 += 8) {
    const int nr = static_cast<int>(std::min<int64_t>(8, n - r0));
    float mean[8] = {0}, rstd[8] = {0};
    for (int k = 0; k < nr; ++k) {
      const float* xr = x + (r0 + k) * D;
      Vf s = vset<float>(0.f);
      int64_t i = 0;
      for (; i + 8 <= D; i += 8) s += vload<float>(xr + i);
      float sum = hsum<float>(s);
      for (; i < D; ++i) sum += xr[i];
      mean[k] = sum / static_cast<float>(D);
    }
    for (int k = 0; k < nr; ++k) {
      const float* xr = x + (r0 + k) * D;
      const Vf m = vset<float>(mean[k]);
      Vf q = vset<float>(0.f);
      int64_t i = 0;
      for (; i + 8 <= D; i += 8) {
        const Vf d = vload<float>(xr + i) - m;
        q += d * d;
      }
      float var = hsum<float>(q);
      for (; i < D; ++i) var += (xr[i] - mean[k]) * (xr[i] - mean[k]);
      rstd[k] = var / static_cast<float>(D) + eps;
    }
    for (int k = 0; k < 8; ++k) rstd[k] = 1.f / std::sqrt(k < nr ? rstd[k] : 1.f);
    for (int k = 0; k < nr; ++k) {
      const float* xr = x + (r0 + k) * D;
      float* yr = y + (r0 + k) * D;
      const Vf m = vset<float>(mean[k]), r = vset<float>(rstd[k]);
      int64_t i = 0;
      for (; i + 8 <= D; i += 8)
        vstore<float>(yr + i, (vload<float>(xr + i) - m) * r * vload<float>(w + i) +
                                  vload<float>(b + i));
      for (; i < D; ++i) yr[i] = (xr[i] - mean[k]) * rstd[k] * w[i] + b[i];
    }
  }
}

// 1 / v: the reciprocal estimate refined by one Newton step (~2 ulp; a division costs
// several times more here).
inline vf8 recip8(vf8 v) {
#ifdef __AVX__
  const vf8 r = (vf8)_mm256_rcp_ps((__m256)v);
  return r * (2.f - v * r);
#else
  return 1.f / v;
#endif
}

// erf(v) by Abramowitz & Stegun 7.1.26: sign(v) (1 - t (a1 + t (a2 + ...)) exp(-v^2)),
// t = 1 / (1 + p |v|), |error| < 1.5e-7. |v| is clamped at 4 first (erf(4) = 1 - 1.5e-8,
// 1 in float), so that exp(-v^2) stays a normal float (a denormal costs ~100 cycles).
inline vf8 erf8(vf8 v) {
  typedef int vi __attribute__((vector_size(32)));
  vi bits, sign;
  std::memcpy(&bits, &v, sizeof(v));
  sign = bits & (int)0x80000000;
  bits &= 0x7fffffff;  // |v|
  vf8 a;
  std::memcpy(&a, &bits, sizeof(a));
#ifdef __AVX__
  a = (vf8)_mm256_min_ps((__m256)a, _mm256_set1_ps(4.f));
#else
  a = a < 4.f ? a : 4.f;
#endif
  const vf8 t = recip8(a * 0.3275911f + 1.f);
  vf8 r = t * 1.061405429f - 1.453152027f;
  r = r * t + 1.421413741f;
  r = r * t - 0.284496736f;
  r = r * t + 0.254829592f;
  const vf8 e = 1.f - r * t * exp8_in_range(-(a * a));
  vi eb;
  std::memcpy(&eb, &e, sizeof(e));
  eb |= sign;  // e >= 0: the sign of v restores erf's
  vf8 out;
  std::memcpy(&out, &eb, sizeof(out));
  return out;
}

// out[j] = (a[j] + ba[j]) * gelu(g[j] + bg[j]) for n values, with
// gelu(v) = v / 2 (1 + erf(v / sqrt 2)): the GLU on a row of the input projection, its
// bias added here.
inline vf8 glu8(vf8 a, vf8 v) {
  return a * (v * 0.5f * (1.f + erf8(v * 0.70710678118654752f)));
}
inline void glu_row(const float* a, const float* g, const float* ba, const float* bg,
                    float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    vstore<float>(out + i, glu8(vload<float>(a + i) + vload<float>(ba + i),
                                vload<float>(g + i) + vload<float>(bg + i)));
  if (i < n) {  // the tail through the same vector code
    float t[4][8] = {{0}};
    const float* src[4] = {a, g, ba, bg};
    for (int k = 0; k < 4; ++k) std::memcpy(t[k], src[k] + i, sizeof(float) * (n - i));
    const vf8 o = glu8(vload<float>(t[0]) + vload<float>(t[2]),
                       vload<float>(t[1]) + vload<float>(t[3]));
    std::memcpy(out + i, &o, sizeof(float) * (n - i));
  }
}

// The BLAS sgemm that torch links (MKL's, or OpenBLAS's), looked up once; null when
// torch exports none or SURNN_DENSE_ATEN_MM=1 is set, and the products go through at::mm.
using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                       const float*, const int*, const float*, const int*, const float*, float*,
                       const int*);
Sgemm blas_sgemm() {
  static const Sgemm f = []() -> Sgemm {
    const char* off = std::getenv("SURNN_DENSE_ATEN_MM");  // the at::mm path, always
    if (off != nullptr && *off != '\0' && std::string(off) != "0") return nullptr;
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    Sgemm g = lib ? reinterpret_cast<Sgemm>(dlsym(lib, "sgemm_")) : nullptr;
    if (g == nullptr) return g;
    // Checked once on a product it must get exactly right (a BLAS with 64-bit integers, an
    // ILP64 build, would read these arguments wrong): [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50].
    const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, one = 1.f, zero = 0.f;
    float c[4] = {0, 0, 0, 0};
    const int two = 2;
    g("N", "N", &two, &two, &two, &one, b, &two, a, &two, &zero, c, &two);
    return c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50 ? g : nullptr;
  }();
  return f;
}

// c = a b for row-major a [M, K], b [K, N] and c [M, N], all contiguous: the BLAS call
// at::mm makes, without its dispatch and allocation (a few us a call at batch 1).
void product(const float* a, const float* b, float* c, int64_t M, int64_t K, int64_t N) {
  const Sgemm sgemm = blas_sgemm();
  if (sgemm == nullptr || std::max({M, K, N}) > std::numeric_limits<int>::max()) {
    const auto opts = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor out = torch::from_blob(c, {M, N}, opts);
    at::mm_out(out, torch::from_blob(const_cast<float*>(a), {M, K}, opts),
               torch::from_blob(const_cast<float*>(b), {K, N}, opts));
    return;
  }
  // Column-major BLAS sees the row-major matrices transposed: c^T = b^T a^T.
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const float one = 1.f, zero = 0.f;
  sgemm("N", "N", &m, &n, &k, &one, b, &m, a, &k, &zero, c, &m);
}

inline float dot(const float* a, const float* b, int64_t n) {
  V<float>::type s = vset<float>(0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) s += vload<float>(a + i) * vload<float>(b + i);
  float out = hsum<float>(s);
  for (; i < n; ++i) out += a[i] * b[i];
  return out;
}

inline void add_row(const float* x, const float* y, float* out, int64_t D) {
  int64_t i = 0;
  for (; i + 8 <= D; i += 8) vstore<float>(out + i, vload<float>(x + i) + vload<float>(y + i));
  for (; i < D; ++i) out[i] = x[i] + y[i];
}

}  // namespace

namespace surnn {

std::tuple<torch::Tensor, torch::Tensor> dense_embed(const torch::Tensor& tokens,
                                                     const torch::Tensor& table,
                                                     const torch::Tensor& norm_w,
                                                     const torch::Tensor& norm_b, double eps) {
  check_f32(table, "embedding table");
  TORCH_CHECK(tokens.device().is_cpu() && !at::isFloatingType(tokens.scalar_type()) &&
                  !at::isComplexType(tokens.scalar_type()),
              "surnn fused dense: token ids must be an integer CPU tensor, got ",
              tokens.scalar_type());
  const torch::Tensor ids = tokens.to(torch::kLong).contiguous();
  const int64_t N = ids.numel(), V = table.size(0), D = table.size(1);
  check_norm(norm_w, norm_b, D);
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    TORCH_CHECK(id[i] >= 0 && id[i] < V, "surnn fused dense: token id ", id[i],
                " out of range for an embedding of ", V, " rows");
  std::vector<int64_t> shape(ids.sizes().begin(), ids.sizes().end());
  shape.push_back(D);
  torch::Tensor h = torch::empty(shape, table.options());
  torch::Tensor u = torch::empty(shape, table.options());
  const float *e = table.data_ptr<float>(), *nw = norm_w.data_ptr<float>(),
              *nb = norm_b.data_ptr<float>();
  float *ph = h.data_ptr<float>(), *pu = u.data_ptr<float>();
  at::parallel_for(0, N, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::memcpy(ph + r * D, e + id[r] * D, sizeof(float) * D);
    norm_rows(ph + r0 * D, nw, nb, (float)eps, pu + r0 * D, r1 - r0, D);
  });
  return {h, u};
}

torch::Tensor dense_norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                         double eps) {
  check_f32(x, "input");
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  check_norm(w, b, D);
  torch::Tensor y = torch::empty_like(x);
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>(), *pb = b.data_ptr<float>();
  float* py = y.data_ptr<float>();
  at::parallel_for(0, N, kRowGrain, [&](int64_t r0, int64_t r1) {
    norm_rows(px + r0 * D, pw, pb, (float)eps, py + r0 * D, r1 - r0, D);
  });
  return y;
}

std::tuple<torch::Tensor, torch::Tensor> dense_tail(
    const torch::Tensor& x, const torch::Tensor& y, const c10::optional<torch::Tensor>& norm_w,
    const c10::optional<torch::Tensor>& norm_b, double eps,
    const c10::optional<torch::Tensor>& in_wt, const c10::optional<torch::Tensor>& in_b,
    const c10::optional<torch::Tensor>& out_wt, const c10::optional<torch::Tensor>& out_b,
    const torch::Tensor& next_w, const torch::Tensor& next_b, double next_eps) {
  check_f32(x, "block input");
  check_f32(y, "mixer output");
  TORCH_CHECK(x.sizes() == y.sizes(), "surnn fused dense: mixer output ", y.sizes(),
              " does not match the block input ", x.sizes());
  const int64_t D = x.size(-1), N = D ? x.numel() / D : 0;
  check_norm(next_w, next_b, D);
  torch::Tensor h = torch::empty_like(x);
  torch::Tensor u = torch::empty_like(x);
  const float *px = x.data_ptr<float>(), *py = y.data_ptr<float>();
  const float *xw = next_w.data_ptr<float>(), *xb = next_b.data_ptr<float>();
  float *ph = h.data_ptr<float>(), *pu = u.data_ptr<float>();
  const bool ffn = in_wt && in_wt->defined();
  if (!ffn) {
    at::parallel_for(0, N, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) add_row(px + r * D, py + r * D, ph + r * D, D);
      norm_rows(ph + r0 * D, xw, xb, (float)next_eps, pu + r0 * D, r1 - r0, D);
    });
    return {h, u};
  }
  TORCH_CHECK(norm_w && norm_b && out_wt && out_wt->defined() && in_b && out_b,
              "surnn fused dense: a feed-forward needs its norm, both projections and their "
              "biases");
  check_norm(*norm_w, *norm_b, D);
  check_f32(*in_wt, "input projection");
  check_f32(*out_wt, "output projection");
  check_f32(*in_b, "input projection bias");
  check_f32(*out_b, "output projection bias");
  const int64_t F2 = in_wt->size(1), F = F2 / 2;
  TORCH_CHECK(in_wt->dim() == 2 && in_wt->size(0) == D && F2 % 2 == 0 && in_b->numel() == F2,
              "surnn fused dense: expected the GLU input projection transposed, [", D,
              ", 2F], and its bias [2F]; got ", in_wt->sizes(), " and ", in_b->sizes());
  TORCH_CHECK(out_wt->dim() == 2 && out_wt->size(0) == F && out_wt->size(1) == D &&
                  out_b->numel() == D,
              "surnn fused dense: expected the GLU output projection transposed, [", F, ", ",
              D, "], and its bias [", D, "]; got ", out_wt->sizes(), " and ", out_b->sizes());
  const float *nw = norm_w->data_ptr<float>(), *nb = norm_b->data_ptr<float>();
  const float *wi = in_wt->data_ptr<float>(), *bi = in_b->data_ptr<float>();
  const float *wo = out_wt->data_ptr<float>(), *bo = out_b->data_ptr<float>();
  // Rows go in chunks whose scratch (p = u W_in^T [rows, 2F]: the a and gate halves, bias
  // added in the GLU; g = a * gelu(gate) [rows, F]; q = g W_out^T [rows, D]) fits in
  // kScratchFloats, kept by this thread between calls: a batch-1 sequence is one chunk,
  // a big batch's chunks stay in cache and allocate nothing. In each chunk, u holds
  // norm2(x + y) until the feed-forward has read it, then the next norm's output.
  const int64_t chunk = std::max<int64_t>(64, kScratchFloats / (F2 + F + D));
  thread_local std::vector<float> scratch;
  const int64_t rows = std::min(chunk, N);
  const size_t need = static_cast<size_t>(rows * (F2 + F + D));
  if (scratch.size() < need) scratch.resize(need);
  float *pp = scratch.data(), *pg = pp + rows * F2, *pq = pg + rows * F;
  for (int64_t c0 = 0; c0 < N; c0 += chunk) {
    const int64_t n = std::min(chunk, N - c0);
    const float *cx = px + c0 * D, *cy = py + c0 * D;
    float *ch = ph + c0 * D, *cu = pu + c0 * D;
    at::parallel_for(0, n, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) add_row(cx + r * D, cy + r * D, ch + r * D, D);
      norm_rows(ch + r0 * D, nw, nb, (float)eps, cu + r0 * D, r1 - r0, D);
    });
    product(cu, wi, pp, n, D, F2);
    at::parallel_for(0, n, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        glu_row(pp + r * F2, pp + r * F2 + F, bi, bi + F, pg + r * F, F);
    });
    product(pg, wo, pq, n, F, D);
    at::parallel_for(0, n, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        add_row(pq + r * D, bo, pq + r * D, D);
        add_row(ch + r * D, pq + r * D, ch + r * D, D);
      }
      norm_rows(ch + r0 * D, xw, xb, (float)next_eps, cu + r0 * D, r1 - r0, D);
    });
  }
  return {h, u};
}

std::string dense_blas() { return blas_sgemm() != nullptr ? "sgemm" : "at::mm"; }

torch::Tensor dense_pool(const torch::Tensor& h, const torch::Tensor& lengths, int64_t kind,
                         const c10::optional<torch::Tensor>& head_w,
                         const c10::optional<torch::Tensor>& head_b) {
  check_f32(h, "encoder output");
  TORCH_CHECK(h.dim() == 3, "surnn fused dense: expected [B, L, D] to pool, got ", h.sizes());
  TORCH_CHECK(kind >= 0 && kind <= 2, "surnn fused dense: pool kind ", kind,
              " (0 mean, 1 max, 2 last)");
  const int64_t B = h.size(0), L = h.size(1), D = h.size(2);
  const torch::Tensor lens = lengths.to(torch::kLong).contiguous();
  TORCH_CHECK(lens.device().is_cpu() && lens.numel() == B, "surnn fused dense: ",
              lens.numel(), " lengths for ", B, " rows");
  const int64_t* pl = lens.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(pl[b] >= 0 && pl[b] <= L, "surnn fused dense: length ", pl[b], " outside 0..",
                L);
  torch::Tensor pooled = torch::empty({B, D}, h.options());
  const float* ph = h.data_ptr<float>();
  float* po = pooled.data_ptr<float>();
  at::parallel_for(0, B, kRowGrain / std::max<int64_t>(L, 1) + 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* o = po + b * D;
      const float* rows = ph + b * L * D;
      const int64_t n = pl[b];
      if (kind == 2) {  // the last valid position (position 0 for an empty row)
        std::memcpy(o, rows + std::max<int64_t>(n - 1, 0) * D, sizeof(float) * D);
        continue;
      }
      std::fill(o, o + D, kind == 0 ? 0.f : -std::numeric_limits<float>::infinity());
      for (int64_t t = 0; t < n; ++t) {
        const float* r = rows + t * D;
        if (kind == 0)
          add_row(o, r, o, D);
        else
          for (int64_t i = 0; i < D; ++i) o[i] = std::max(o[i], r[i]);
      }
      if (kind == 0) {
        const float count = static_cast<float>(std::max<int64_t>(n, 1));
        for (int64_t i = 0; i < D; ++i) o[i] /= count;
      }
    }
  });
  if (!(head_w && head_w->defined())) return pooled;
  // The head: a few rows of D values against C classes; MKL's fixed cost for a product this
  // small is several times its arithmetic, so the dots are done here.
  check_f32(*head_w, "head weight");
  const int64_t C = head_w->size(0);
  TORCH_CHECK(head_w->dim() == 2 && head_w->size(1) == D, "surnn fused dense: head weight ",
              head_w->sizes(), " on pooled rows of ", D);
  const bool bias = head_b && head_b->defined();
  if (bias) {
    check_f32(*head_b, "head bias");
    TORCH_CHECK(head_b->numel() == C, "surnn fused dense: head bias of size ", head_b->numel(),
                " for ", C, " outputs");
  }
  torch::Tensor out = torch::empty({B, C}, h.options());
  const float* hw = head_w->data_ptr<float>();
  const float* hb = bias ? head_b->data_ptr<float>() : nullptr;
  float* pout = out.data_ptr<float>();
  at::parallel_for(0, B, kRowGrain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t c = 0; c < C; ++c)
        pout[b * C + c] = dot(po + b * D, hw + c * D, D) + (bias ? hb[c] : 0.f);
  });
  return out;
}

}  // namespace surnn
