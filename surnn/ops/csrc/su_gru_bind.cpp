// Python binding of the selective-update GRU CPU kernels (see su_gru_kernels.cpp for the
// kernel itself): checks, output allocation, dtype dispatch.
#include <torch/extension.h>

#include "su_gru_kernels.h"

namespace {

using surnn::backward_impl;
using surnn::forward_impl;
using surnn::n_threads;
using surnn::plan_impl;

void check(const torch::Tensor& t, const char* name, c10::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == dt, name,
              ": expected a contiguous CPU tensor of the input's dtype");
}

// The kernels index every tensor by (B, T, D, H) and the step plan without bounds checks,
// so shapes are checked here, once per call: a broadcastable tensor (which the reference
// accepts: active [T,H] with a per-sample g, g [1,T,H], lengths [1]) or a plan that is not
// plan()'s would otherwise be read or written out of bounds.
void check_shapes(const torch::Tensor& x, const torch::Tensor& h0, const torch::Tensor& wih,
                  const torch::Tensor& whh, const torch::Tensor& g, const torch::Tensor& idx,
                  const torch::Tensor& off, const torch::Tensor& bs) {
  TORCH_CHECK(x.dim() == 3 && h0.dim() == 2 && h0.size(0) == x.size(0),
              "su_gru_compiled: expected x [B,T,D] and h0 [B,H], got ", x.sizes(), " and ",
              h0.sizes());
  const int64_t B = x.size(0), Tn = x.size(1), D = x.size(2), H = h0.size(1);
  TORCH_CHECK(wih.sizes() == torch::IntArrayRef({3 * H, D}) &&
                  whh.sizes() == torch::IntArrayRef({3 * H, H}),
              "su_gru_compiled: expected w_ih [3H,D] and w_hh [3H,H], got ", wih.sizes(),
              " and ", whh.sizes());
  TORCH_CHECK(g.sizes() == torch::IntArrayRef({Tn, H}) ||
                  g.sizes() == torch::IntArrayRef({B, Tn, H}),
              "su_gru_compiled: expected g [T,H] or [B,T,H] (no broadcasting), got ", g.sizes());
  TORCH_CHECK(idx.scalar_type() == torch::kInt32 && off.scalar_type() == torch::kInt64 &&
                  bs.scalar_type() == torch::kInt32 && idx.is_contiguous() &&
                  off.is_contiguous() && bs.is_contiguous() && off.numel() == Tn + 1 &&
                  bs.numel() == Tn,
              "su_gru_compiled: expected the step plan of plan()");
  const int64_t* o = off.data_ptr<int64_t>();
  const int* b = bs.data_ptr<int>();
  const int* ids = idx.data_ptr<int>();
  bool ok = o[0] == 0 && o[Tn] == idx.numel();
  for (int64_t t = 0; t < Tn && ok; ++t) ok = o[t] <= o[t + 1] && b[t] >= 0 && b[t] <= B;
  for (int64_t j = 0; j < idx.numel() && ok; ++j) ok = ids[j] >= 0 && ids[j] < H;
  TORCH_CHECK(ok, "su_gru_compiled: step plan out of range (expected the plan of plan())");
}

std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor h0, torch::Tensor wih,
                                   torch::Tensor whh, torch::Tensor bih, torch::Tensor bhh,
                                   torch::Tensor g, torch::Tensor idx, torch::Tensor off,
                                   torch::Tensor bs, bool save, int64_t nthreads) {
  const auto dt = x.scalar_type();
  for (auto* p : {&x, &h0, &wih, &whh, &bih, &bhh, &g}) check(*p, "su_gru_compiled", dt);
  check_shapes(x, h0, wih, whh, g, idx, off, bs);
  const int B = x.size(0), Tn = x.size(1), D = x.size(2), H = h0.size(1);
  TORCH_CHECK(bih.numel() == 3 * H && bhh.numel() == 3 * H, "su_gru_compiled: biases [3H]");
  auto out = torch::empty({B, Tn, H}, x.options());
  const int64_t nnz = idx.numel();
  auto saved = save ? torch::empty({nnz, 4, B}, x.options()) : torch::empty({0}, x.options());
  const int64_t gb = g.dim() == 3 ? (int64_t)Tn * H : 0;
  if (out.numel() == 0) return {out, saved};  // B, T or H = 0: nothing to compute
  AT_DISPATCH_FLOATING_TYPES(dt, "su_gru_compiled_forward", [&] {
    forward_impl<scalar_t>(x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                           wih.data_ptr<scalar_t>(), whh.data_ptr<scalar_t>(),
                           bih.data_ptr<scalar_t>(), bhh.data_ptr<scalar_t>(),
                           g.data_ptr<scalar_t>(), gb, idx.data_ptr<int>(),
                           off.data_ptr<int64_t>(), bs.data_ptr<int>(),
                           out.data_ptr<scalar_t>(),
                           save ? saved.data_ptr<scalar_t>() : nullptr, B, Tn, D, H,
                           static_cast<int>(nthreads));
  });
  return {out, saved};
}

std::vector<torch::Tensor> backward(torch::Tensor x, torch::Tensor h0, torch::Tensor wih,
                                    torch::Tensor whh, torch::Tensor g, torch::Tensor idx,
                                    torch::Tensor off, torch::Tensor bs, torch::Tensor out,
                                    torch::Tensor saved, torch::Tensor gout,
                                    torch::Tensor dh, bool need_dx, bool need_w,
                                    bool need_dg, int64_t nthreads) {
  const auto dt = x.scalar_type();
  for (auto* p : {&x, &h0, &wih, &whh, &g, &out, &saved, &gout, &dh})
    check(*p, "su_gru_compiled backward", dt);
  check_shapes(x, h0, wih, whh, g, idx, off, bs);
  const int B = x.size(0), Tn = x.size(1), D = x.size(2), H = h0.size(1);
  const int nt = n_threads(B, static_cast<int>(nthreads));
  const int64_t nnz = idx.numel();
  const std::vector<int64_t> bth = {B, Tn, H};
  TORCH_CHECK(out.sizes() == bth && gout.sizes() == bth &&
                  dh.sizes() == torch::IntArrayRef({B, H}) &&
                  (nnz == 0 || saved.sizes() == torch::IntArrayRef({nnz, 4, B})),
              "su_gru_compiled backward: expected out, gout [B,T,H], dh [B,H], saved [nnz,4,B]");
  auto o = x.options();
  auto dx = need_dx ? torch::zeros({B, Tn, D}, o) : torch::empty({0}, o);
  auto dwih = need_w ? torch::zeros({nt, 3 * H, D}, o) : torch::empty({0}, o);
  auto dwhh = need_w ? torch::zeros({nt, 3 * H, H}, o) : torch::empty({0}, o);
  auto dbih = torch::zeros({nt, 3 * H}, o), dbhh = torch::zeros({nt, 3 * H}, o);
  const bool per_sample = g.dim() == 3;
  auto dgp = need_dg && !per_sample ? torch::zeros({nt, nnz}, o) : torch::empty({0}, o);
  auto dgs = need_dg && per_sample ? torch::zeros({nnz, B}, o) : torch::empty({0}, o);
  const int64_t gb = per_sample ? (int64_t)Tn * H : 0;
  if (out.numel() == 0) return {dx, dwih, dwhh, dbih, dbhh, dgp, dgs};  // nothing ran
  AT_DISPATCH_FLOATING_TYPES(dt, "su_gru_compiled_backward", [&] {
    auto ptr = [](torch::Tensor& t) { return t.numel() ? t.data_ptr<scalar_t>() : nullptr; };
    backward_impl<scalar_t>(x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                            wih.data_ptr<scalar_t>(), whh.data_ptr<scalar_t>(),
                            g.data_ptr<scalar_t>(), gb, idx.data_ptr<int>(),
                            off.data_ptr<int64_t>(), bs.data_ptr<int>(),
                            out.data_ptr<scalar_t>(), ptr(saved), gout.data_ptr<scalar_t>(),
                            dh.data_ptr<scalar_t>(), need_dx ? ptr(dx) : nullptr,
                            need_w ? ptr(dwih) : nullptr, need_w ? ptr(dwhh) : nullptr,
                            ptr(dbih), ptr(dbhh), ptr(dgp), ptr(dgs), B, Tn, D, H, nt, need_w);
  });
  return {dx, dwih, dwhh, dbih, dbhh, dgp, dgs};
}

// (idx int32 [nnz], off int64 [T+1], bs int32 [T]) for gate g ([T,H] or [B,T,H]), the
// optional active mask (bool, like g; empty: none) and lengths (int64 [B]; empty: none).
std::vector<torch::Tensor> plan(torch::Tensor g, torch::Tensor active, torch::Tensor lens,
                                int64_t B) {
  TORCH_CHECK(g.device().is_cpu() && g.is_contiguous(), "plan: contiguous CPU gate");
  TORCH_CHECK(g.dim() == 2 || (g.dim() == 3 && g.size(0) == B),
              "su_gru_compiled: expected g [T,H] or [B,T,H] (no broadcasting), got ", g.sizes(),
              " for B=", B);
  const bool per_sample = g.dim() == 3;
  const int Tn = g.size(-2), H = g.size(-1);
  const bool has_a = active.numel() > 0, has_l = lens.numel() > 0;
  if (has_a)
    TORCH_CHECK(active.scalar_type() == torch::kBool && active.is_contiguous() &&
                    active.sizes() == g.sizes(),
                "su_gru_compiled: expected active of g's shape ", g.sizes(), " (no "
                "broadcasting), got ", active.sizes());
  if (has_l)
    TORCH_CHECK(lens.scalar_type() == torch::kInt64 && lens.is_contiguous() &&
                    lens.numel() == B,
                "su_gru_compiled: expected lengths [B] with B=", B, ", got ", lens.sizes());
  // Scratch of capacity T*H kept between calls (a fresh 0.8 MB buffer costs ~100 us of
  // page faults per call); the result is copied out at its exact size.
  thread_local std::vector<int> scratch;
  if (scratch.size() < (size_t)Tn * H) scratch.resize((size_t)Tn * H);
  auto off = torch::empty({Tn + 1}, torch::kInt64);
  auto bs = torch::empty({Tn}, torch::kInt32);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "su_gru_plan", [&] {
    plan_impl<scalar_t>(g.data_ptr<scalar_t>(), has_a ? active.data_ptr<bool>() : nullptr,
                        has_l ? lens.data_ptr<int64_t>() : nullptr, static_cast<int>(B), Tn,
                        H, per_sample, scratch.data(), off.data_ptr<int64_t>(),
                        bs.data_ptr<int>());
  });
  const int64_t nnz = off.data_ptr<int64_t>()[Tn];
  auto idx = torch::empty({nnz}, torch::kInt32);
  if (nnz > 0) std::memcpy(idx.data_ptr<int>(), scratch.data(), sizeof(int) * nnz);
  return {idx, off, bs};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective-update GRU forward (whole sequence)");
  m.def("plan", &plan, "active neurons per step (union over running samples)");
  m.def("backward", &backward, "selective-update GRU backward (whole reverse sweep)");
}
