// Declarations of the selective-update GRU CPU kernels (su_gru_kernels.cpp, no torch
// headers there, so a kernel change recompiles in seconds); su_gru_bind.cpp wraps them.
#pragma once
#include <cstdint>

namespace surnn {

template <typename T>
void forward_impl(const T* x, const T* h0, const T* wih, const T* whh, const T* bih,
                  const T* bhh, const T* g, int64_t g_bstride, const int* idx,
                  const int64_t* off, const int* bs, const bool* mask, const int* perm,
                  T* out, T* saved, int B, int Tn, int D, int H, int nthreads);

template <typename T>
void backward_impl(const T* x, const T* h0, const T* wih, const T* whh, const T* g,
                   int64_t g_bstride, const int* idx, const int64_t* off, const int* bs,
                   const int* perm, const T* out, const T* saved, const T* gout, T* dh,
                   T* dx, T* dwih, T* dwhh, T* dbih, T* dbhh, T* dgp, T* dgs, int B, int Tn,
                   int D, int H, int nthreads, bool need_w);

template <typename T>
void plan_impl(const T* g, const bool* active, const int64_t* lens, int B, int Tn, int H,
               bool per_sample, int* idx, int64_t* off, int* bs);

// Threads the kernels use for a batch of B (blocks of 4 samples per thread).
int n_threads(int B, int want);

}  // namespace surnn
