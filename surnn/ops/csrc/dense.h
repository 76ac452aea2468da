// Declarations of the fused dense parts of the backbone (dense.cpp; bound in
// su_gru_bind.cpp, called by surnn/harness/fused.py). float32, CPU, inference only.
#pragma once
#include <torch/extension.h>

#include <string>

namespace surnn {

// (table[tokens], norm(table[tokens])): the embedding rows [..., D] (ids checked against
// the table's size) and the first block's norm of them.
std::tuple<torch::Tensor, torch::Tensor> dense_embed(const torch::Tensor& tokens,
                                                     const torch::Tensor& table,
                                                     const torch::Tensor& norm_w,
                                                     const torch::Tensor& norm_b, double eps);

// LayerNorm over the last dim (weight and bias of that size).
torch::Tensor dense_norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                         double eps);

// A block after its mixer: h = x + y, then h += (a * gelu(g)) W_out^T + b_out with
// (a, g) = norm(h) W_in^T + b_in when the block has a feed-forward (in_wt given); returns
// (h, next_norm(h)), the next block's normed input (or the encoder's final norm). The
// projections come transposed (in_wt [D, 2F], out_wt [F, D], contiguous: MKL's fastest
// layout here, 1.4-2x nn.Linear's at batch 1).
std::tuple<torch::Tensor, torch::Tensor> dense_tail(
    const torch::Tensor& x, const torch::Tensor& y, const c10::optional<torch::Tensor>& norm_w,
    const c10::optional<torch::Tensor>& norm_b, double eps,
    const c10::optional<torch::Tensor>& in_wt, const c10::optional<torch::Tensor>& in_b,
    const c10::optional<torch::Tensor>& out_wt, const c10::optional<torch::Tensor>& out_b,
    const torch::Tensor& next_w, const torch::Tensor& next_b, double next_eps);

// h [B, L, D] pooled over each row's first lengths[b] positions (kind 0 mean, 1 max,
// 2 last), then the linear head when head_w is given: [B, D] or [B, C].
torch::Tensor dense_pool(const torch::Tensor& h, const torch::Tensor& lengths, int64_t kind,
                         const c10::optional<torch::Tensor>& head_w,
                         const c10::optional<torch::Tensor>& head_b);

// What the feed-forward's products call: "sgemm" (the BLAS torch links, found and checked
// at the first call) or "at::mm" (none found, or SURNN_DENSE_ATEN_MM=1).
std::string dense_blas();

}  // namespace surnn
