// Python binding of the selective-update GRU CPU kernels (see su_gru_kernels.cpp for the
// kernel itself): checks, output allocation, dtype dispatch.
#include <torch/extension.h>

#include <algorithm>

#include "dense.h"
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
void check_dims(const torch::Tensor& x, const torch::Tensor& h0, const torch::Tensor& wih,
                const torch::Tensor& whh, torch::IntArrayRef g) {
  TORCH_CHECK(x.dim() == 3 && h0.dim() == 2 && h0.size(0) == x.size(0),
              "su_gru_compiled: expected x [B,T,D] and h0 [B,H], got ", x.sizes(), " and ",
              h0.sizes());
  const int64_t B = x.size(0), Tn = x.size(1), D = x.size(2), H = h0.size(1);
  TORCH_CHECK(wih.sizes() == torch::IntArrayRef({3 * H, D}) &&
                  whh.sizes() == torch::IntArrayRef({3 * H, H}),
              "su_gru_compiled: expected w_ih [3H,D] and w_hh [3H,H], got ", wih.sizes(),
              " and ", whh.sizes());
  TORCH_CHECK(g == torch::IntArrayRef({Tn, H}) || g == torch::IntArrayRef({B, Tn, H}),
              "su_gru_compiled: expected g [T,H] or [B,T,H] (no broadcasting), got ", g);
}

void check_shapes(const torch::Tensor& x, const torch::Tensor& h0, const torch::Tensor& wih,
                  const torch::Tensor& whh, const torch::Tensor& g, const torch::Tensor& idx,
                  const torch::Tensor& off, const torch::Tensor& bs) {
  check_dims(x, h0, wih, whh, g.sizes());
  const int64_t B = x.size(0), Tn = x.size(1), H = h0.size(1);
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

// The rows of the batch in length order (int32 [B], a permutation; empty: the batch is
// already in that order), or null. The kernels index with it unchecked: checked here.
const int* perm_of(const torch::Tensor& perm, int64_t B) {
  if (perm.numel() == 0) return nullptr;
  TORCH_CHECK(perm.scalar_type() == torch::kInt32 && perm.is_contiguous() &&
                  perm.device().is_cpu() && perm.numel() == B,
              "su_gru_compiled: expected perm int32 [B] with B=", B, ", got ", perm.sizes());
  const int* p = perm.data_ptr<int>();
  std::vector<char> seen(B, 0);
  bool ok = true;
  for (int64_t b = 0; b < B && ok; ++b) {
    ok = p[b] >= 0 && p[b] < B && !seen[p[b]];
    if (ok) seen[p[b]] = 1;
  }
  TORCH_CHECK(ok, "su_gru_compiled: perm is not a permutation of the batch");
  return p;
}

std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor h0, torch::Tensor wih,
                                   torch::Tensor whh, torch::Tensor bih, torch::Tensor bhh,
                                   torch::Tensor g, torch::Tensor idx, torch::Tensor off,
                                   torch::Tensor bs, torch::Tensor perm, bool save,
                                   int64_t nthreads) {
  const auto dt = x.scalar_type();
  for (auto* p : {&x, &h0, &wih, &whh, &bih, &bhh, &g}) check(*p, "su_gru_compiled", dt);
  check_shapes(x, h0, wih, whh, g, idx, off, bs);
  const int* pm = perm_of(perm, x.size(0));
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
                           off.data_ptr<int64_t>(), bs.data_ptr<int>(), nullptr, pm,
                           out.data_ptr<scalar_t>(),
                           save ? saved.data_ptr<scalar_t>() : nullptr, B, Tn, D, H,
                           static_cast<int>(nthreads));
  });
  return {out, saved};
}

std::vector<torch::Tensor> backward(torch::Tensor x, torch::Tensor h0, torch::Tensor wih,
                                    torch::Tensor whh, torch::Tensor g, torch::Tensor idx,
                                    torch::Tensor off, torch::Tensor bs, torch::Tensor perm,
                                    torch::Tensor out, torch::Tensor saved,
                                    torch::Tensor gout, torch::Tensor dh, bool need_dx,
                                    bool need_w, bool need_dg, int64_t nthreads) {
  const auto dt = x.scalar_type();
  for (auto* p : {&x, &h0, &wih, &whh, &g, &out, &saved, &gout, &dh})
    check(*p, "su_gru_compiled backward", dt);
  check_shapes(x, h0, wih, whh, g, idx, off, bs);
  const int* pm = perm_of(perm, x.size(0));
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
                            off.data_ptr<int64_t>(), bs.data_ptr<int>(), pm,
                            out.data_ptr<scalar_t>(), ptr(saved), gout.data_ptr<scalar_t>(),
                            dh.data_ptr<scalar_t>(), need_dx ? ptr(dx) : nullptr,
                            need_w ? ptr(dwih) : nullptr, need_w ? ptr(dwhh) : nullptr,
                            ptr(dbih), ptr(dbhh), ptr(dgp), ptr(dgs), B, Tn, D, H, nt, need_w);
  });
  return {dx, dwih, dwhh, dbih, dbhh, dgp, dgs};
}

void check_plan_inputs(const torch::Tensor& g, const torch::Tensor& active,
                       const torch::Tensor& lens, int64_t B) {
  TORCH_CHECK(g.device().is_cpu() && g.is_contiguous(), "plan: contiguous CPU gate");
  TORCH_CHECK(g.dim() == 2 || (g.dim() == 3 && g.size(0) == B),
              "su_gru_compiled: expected g [T,H] or [B,T,H] (no broadcasting), got ", g.sizes(),
              " for B=", B);
  if (active.numel() > 0)
    TORCH_CHECK(active.scalar_type() == torch::kBool && active.is_contiguous() &&
                    active.sizes() == g.sizes(),
                "su_gru_compiled: expected active of g's shape ", g.sizes(), " (no "
                "broadcasting), got ", active.sizes());
  if (lens.numel() > 0)
    TORCH_CHECK(lens.scalar_type() == torch::kInt64 && lens.is_contiguous() &&
                    lens.numel() == B,
                "su_gru_compiled: expected lengths [B] with B=", B, ", got ", lens.sizes());
}

// The step plan into scratch kept between calls (capacity T*H: a fresh 0.8 MB buffer
// costs ~100 us of page faults per call): ids in the thread's scratch, off [T+1] and
// bs [T] in the given buffers. Returns the scratch (valid until the next call).
const int* run_plan(const torch::Tensor& g, const torch::Tensor& active,
                    const torch::Tensor& lens, int64_t B, int64_t* off, int* bs) {
  const int Tn = g.size(-2), H = g.size(-1);
  const bool has_a = active.numel() > 0, has_l = lens.numel() > 0;
  thread_local std::vector<int> scratch;
  if (scratch.size() < (size_t)Tn * H) scratch.resize((size_t)Tn * H);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "su_gru_plan", [&] {
    plan_impl<scalar_t>(g.data_ptr<scalar_t>(), has_a ? active.data_ptr<bool>() : nullptr,
                        has_l ? lens.data_ptr<int64_t>() : nullptr, static_cast<int>(B), Tn,
                        H, g.dim() == 3, scratch.data(), off, bs);
  });
  return scratch.data();
}

// (idx int32 [nnz], off int64 [T+1], bs int32 [T]) for gate g ([T,H] or [B,T,H]), the
// optional active mask (bool, like g; empty: none) and lengths (int64 [B]; empty: none).
// The rows of a padded batch in length order (longest first, ties in batch order) into
// perm [B], and the samples still running at each step into bs [Tn] if not null (the first
// bs[t] in that order; a length of 0 or less never runs, one of Tn or more runs every
// step). The
// kernels deal the samples to the threads in this order and read and write the batch
// through perm, in the caller's order.
void length_order(const int64_t* l, int B, int Tn, int* perm, int* bs) {
  for (int b = 0; b < B; ++b) perm[b] = b;
  std::stable_sort(perm, perm + B, [l](int a, int b) { return l[a] > l[b]; });
  if (!bs) return;
  std::vector<int> ends(Tn + 1, 0);  // samples whose (clamped) length is exactly t
  for (int b = 0; b < B; ++b) ++ends[std::max<int64_t>(0, std::min<int64_t>(l[b], Tn))];
  int running = B;
  for (int t = 0; t < Tn; ++t) bs[t] = (running -= ends[t]);
}

// (idx int32 [nnz], off int64 [T+1], bs int32 [T], perm int32 [B] or empty without lengths).
std::vector<torch::Tensor> plan(torch::Tensor g, torch::Tensor active, torch::Tensor lens,
                                int64_t B) {
  check_plan_inputs(g, active, lens, B);
  const int Tn = g.size(-2);
  auto off = torch::empty({Tn + 1}, torch::kInt64);
  auto bs = torch::empty({Tn}, torch::kInt32);
  const int* ids = run_plan(g, active, lens, B, off.data_ptr<int64_t>(), bs.data_ptr<int>());
  const int64_t nnz = off.data_ptr<int64_t>()[Tn];
  auto idx = torch::empty({nnz}, torch::kInt32);
  if (nnz > 0) std::memcpy(idx.data_ptr<int>(), ids, sizeof(int) * nnz);
  auto perm = torch::empty({lens.numel() > 0 ? B : 0}, torch::kInt32);
  if (lens.numel() > 0)
    length_order(lens.data_ptr<int64_t>(), B, Tn, perm.data_ptr<int>(), nullptr);
  return {idx, off, bs, perm};
}

// Inference in one call (no gradient): the forward sweep without the plan's tensors, the
// saved activations or any Python in between; a time-only gate is not planned at all
// (each step lists its neurons from its row of g as it starts). Takes the layer's
// arguments as given (any layout, absent h0 (zeros) and biases, a bool or float gate, a
// float mask, lengths in any order) and returns (out [B,T,H], h_T [B,H]). A padded batch
// runs in the caller's order: the samples are dealt to the threads in length order
// through a permutation (no sorted copies of x and out), and a sample past its length
// keeps its state. At batch 1 the ATen and Python steps of the general path cost about as much as
// the kernel's sparse sweep; at B=250 the sorted copies cost a fifth of it.
// An inference call's layer arguments as the kernel takes them: contiguous, of x's dtype
// (float32 or float64), absent h0 as zeros and absent biases as zeros; shapes checked
// against g's (the [T,H] or [B,T,H] gate, or a plan's [T,H]).
struct LayerArgs {
  torch::Tensor x, h0, wih, whh, bih, bhh;
};
LayerArgs layer_args(torch::Tensor x, const c10::optional<torch::Tensor>& h0_or_zeros,
                     torch::Tensor wih, torch::Tensor whh,
                     const c10::optional<torch::Tensor>& bih,
                     const c10::optional<torch::Tensor>& bhh, torch::IntArrayRef g) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64,
              "su_gru_compiled: float32 or float64 input expected, got ", dt);
  TORCH_CHECK(x.dim() == 3 && whh.dim() == 2,
              "su_gru_compiled: expected x [B,T,D] and w_hh [3H,H]");
  LayerArgs a;
  a.x = x.contiguous();
  a.wih = wih.contiguous();
  a.whh = whh.contiguous();
  a.h0 = h0_or_zeros.has_value() ? h0_or_zeros->contiguous()
                                 : torch::zeros({x.size(0), whh.size(1)}, x.options());
  check_dims(a.x, a.h0, a.wih, a.whh, g);
  const int64_t H = a.h0.size(1);
  auto bias = [&](const c10::optional<torch::Tensor>& b) {
    if (!b.has_value()) return torch::zeros({3 * H}, x.options());
    TORCH_CHECK(b->numel() == 3 * H, "su_gru_compiled: biases [3H]");
    return b->contiguous();
  };
  a.bih = bias(bih);
  a.bhh = bias(bhh);
  for (auto* p : {&a.x, &a.h0, &a.wih, &a.whh, &a.bih, &a.bhh}) check(*p, "su_gru_compiled", dt);
  return a;
}

// h_T [B,H]: each sample's last output row.
template <typename T>
void last_rows(const T* o, T* h, int B, int Tn, int H) {
  for (int b = 0; b < B; ++b)
    std::memcpy(h + (int64_t)b * H, o + ((int64_t)b * Tn + Tn - 1) * H, sizeof(T) * H);
}

std::vector<torch::Tensor> infer(torch::Tensor x, c10::optional<torch::Tensor> h0_or_zeros,
                                 torch::Tensor wih, torch::Tensor whh,
                                 c10::optional<torch::Tensor> bih,
                                 c10::optional<torch::Tensor> bhh, torch::Tensor g,
                                 c10::optional<torch::Tensor> active,
                                 c10::optional<torch::Tensor> lengths, int64_t nthreads) {
  const auto dt = x.scalar_type();
  LayerArgs a = layer_args(x, h0_or_zeros, wih, whh, bih, bhh, g.sizes());  // checks dt
  g = g.to(dt).contiguous();
  const torch::Tensor none = torch::empty({0}, torch::kInt64);  // plan(): empty = absent
  const torch::Tensor act = active.has_value() ? active->to(torch::kBool).contiguous() : none;
  const torch::Tensor lens = lengths.has_value()
                                 ? lengths->to(torch::kCPU, torch::kInt64).contiguous()
                                 : none;
  check(g, "su_gru_compiled", dt);
  const int B = a.x.size(0), Tn = a.x.size(1), D = a.x.size(2), H = a.h0.size(1);
  check_plan_inputs(g, act, lens, B);
  auto out = torch::empty({B, Tn, H}, a.x.options());
  auto hT = torch::empty({B, H}, a.x.options());
  if (out.numel() == 0) return {out, hT};
  const bool padded = lens.numel() > 0;
  std::vector<int> perm(padded ? B : 0), bs(padded ? Tn : 0);
  if (padded) length_order(lens.data_ptr<int64_t>(), B, Tn, perm.data(), bs.data());
  // A time-only gate: each step lists its own neurons inside the sweep (no plan pass).
  // A per-sample gate: the plan's union over the running samples first (its running
  // counts are bs again).
  const bool per_sample = g.dim() == 3;
  std::vector<int64_t> off(per_sample ? Tn + 1 : 0);
  std::vector<int> plan_bs(per_sample ? Tn : 0);
  const int* ids = per_sample ? run_plan(g, act, lens, B, off.data(), plan_bs.data()) : nullptr;
  const bool* mask = !per_sample && act.numel() ? act.data_ptr<bool>() : nullptr;
  const int* running = padded ? bs.data() : nullptr;  // null: every sample every step
  const int64_t gb = per_sample ? (int64_t)Tn * H : 0;
  AT_DISPATCH_FLOATING_TYPES(dt, "su_gru_compiled_infer", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    forward_impl<scalar_t>(a.x.data_ptr<scalar_t>(), a.h0.data_ptr<scalar_t>(),
                           a.wih.data_ptr<scalar_t>(), a.whh.data_ptr<scalar_t>(),
                           a.bih.data_ptr<scalar_t>(), a.bhh.data_ptr<scalar_t>(),
                           g.data_ptr<scalar_t>(), gb, ids, off.data(), running, mask,
                           padded ? perm.data() : nullptr, o, nullptr, B, Tn, D, H,
                           static_cast<int>(nthreads));
    last_rows(o, hT.data_ptr<scalar_t>(), B, Tn, H);
  });
  return {out, hT};
}

// A time-only gate's steps as the kernel runs them, made once per table view that
// surnn/ops/step_tables.py serves and checked here once: the neurons each step computes
// (g != 0 or active; none kept when every step computes every neuron with g = 1) and a copy
// of g when some listed neuron's value is not 1. Inference with it (infer_plan) reads
// neither g nor the mask per step and lists no neurons: for a served gate, the work of a
// step is its neurons' and the output row's.
struct StepPlan {
  int64_t T = 0, H = 0, nnz = 0;
  bool every = false;
  std::vector<int> idx;
  std::vector<int64_t> off;
  torch::Tensor g;  // undefined: g is 1 at every listed neuron
};

StepPlan make_plan(torch::Tensor g, c10::optional<torch::Tensor> active) {
  TORCH_CHECK(g.dim() == 2 && (g.scalar_type() == torch::kFloat32 ||
                               g.scalar_type() == torch::kFloat64),
              "StepPlan: expected a time-only gate g [T,H] of float32 or float64, got ",
              g.sizes(), " ", g.scalar_type());
  g = g.contiguous();
  const torch::Tensor none = torch::empty({0}, torch::kInt64);
  const torch::Tensor act = active.has_value() ? active->to(torch::kBool).contiguous() : none;
  check_plan_inputs(g, act, none, 1);
  StepPlan p;
  p.T = g.size(0);
  p.H = g.size(1);
  p.off.resize(p.T + 1);
  std::vector<int> bs(p.T);
  const int* ids = run_plan(g, act, none, 1, p.off.data(), bs.data());
  p.nnz = p.off[p.T];
  bool unit = true;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "su_gru_step_plan", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t j = p.off[t]; j < p.off[t + 1]; ++j) unit &= gp[t * p.H + ids[j]] == 1;
  });
  p.every = unit && p.nnz == p.T * p.H;
  if (!p.every) p.idx.assign(ids, ids + p.nnz);
  if (!unit) p.g = g.clone();  // its own copy: the plan stays what it was checked as
  return p;
}

// Inference of an unpadded batch with a step plan (make_plan): (out [B,T,H], h_T [1,B,H],
// a one-layer h_n as the layer returns it), the same arithmetic as infer() with the plan's
// gate.
std::vector<torch::Tensor> infer_plan(torch::Tensor x, c10::optional<torch::Tensor> h0_or_zeros,
                                      torch::Tensor wih, torch::Tensor whh,
                                      c10::optional<torch::Tensor> bih,
                                      c10::optional<torch::Tensor> bhh, const StepPlan& plan,
                                      int64_t nthreads) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(x.dim() == 3 && x.size(1) == plan.T,
              "su_gru_compiled: the plan is for T=", plan.T, ", got x ", x.sizes());
  TORCH_CHECK(!plan.g.defined() || plan.g.scalar_type() == dt,
              "su_gru_compiled: the plan's gate is ", plan.g.defined() ? plan.g.scalar_type() : dt,
              ", the input ", dt);
  LayerArgs a = layer_args(x, h0_or_zeros, wih, whh, bih, bhh, {plan.T, plan.H});
  const int B = a.x.size(0), Tn = a.x.size(1), D = a.x.size(2), H = a.h0.size(1);
  auto out = torch::empty({B, Tn, H}, a.x.options());
  auto hT = torch::empty({1, B, H}, a.x.options());
  if (out.numel() == 0) return {out, hT};
  static const int kNoIds = 0;  // a plan that lists nothing still passes a plan (not null)
  const int* ids = plan.every ? nullptr : plan.idx.empty() ? &kNoIds : plan.idx.data();
  AT_DISPATCH_FLOATING_TYPES(dt, "su_gru_compiled_infer_plan", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    forward_impl<scalar_t>(a.x.data_ptr<scalar_t>(), a.h0.data_ptr<scalar_t>(),
                           a.wih.data_ptr<scalar_t>(), a.whh.data_ptr<scalar_t>(),
                           a.bih.data_ptr<scalar_t>(), a.bhh.data_ptr<scalar_t>(),
                           plan.g.defined() ? plan.g.data_ptr<scalar_t>() : nullptr, 0,
                           ids, plan.off.data(), nullptr,
                           nullptr, nullptr, o, nullptr, B, Tn, D, H, static_cast<int>(nthreads));
    last_rows(o, hT.data_ptr<scalar_t>(), B, Tn, H);
  });
  return {out, hT};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective-update GRU forward (whole sequence)");
  m.def("plan", &plan, "active neurons per step (union over running samples)");
  m.def("backward", &backward, "selective-update GRU backward (whole reverse sweep)");
  m.def("infer", &infer, "selective-update GRU inference: plan and forward in one call");
  py::class_<StepPlan>(m, "StepPlan", "a time-only gate's steps as the kernel runs them")
      .def(py::init(&make_plan), py::arg("g"), py::arg("active") = py::none())
      .def_readonly("T", &StepPlan::T)
      .def_readonly("H", &StepPlan::H)
      .def_readonly("nnz", &StepPlan::nnz)
      .def_readonly("every", &StepPlan::every)
      .def_property_readonly("unit", [](const StepPlan& p) { return !p.g.defined(); });
  m.def("infer_plan", &infer_plan, "selective-update GRU inference with a StepPlan");
  m.def("dense_embed", &surnn::dense_embed, "embedding rows and their norm (fused dense parts)");
  m.def("dense_norm", &surnn::dense_norm, "layer norm over the last dim (fused dense parts)");
  m.def("dense_tail", &surnn::dense_tail, "a block after its mixer: residual, GLU, the next norm");
  m.def("dense_blas", &surnn::dense_blas, "what the fused feed-forward's products call");
  m.def("dense_pool", &surnn::dense_pool, "pooling over valid positions, then a linear head");
}
