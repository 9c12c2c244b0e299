#pragma once
// conv1d through cuDNN (conv_cudnn.cu), for conv.cuh: x [B, L, Cin], out/grad [B, Lout, Cout],
// weights flat [Cout, K, Cin], all contiguous. Each returns false, having written nothing, when
// this build has no cuDNN or cuDNN has no deterministic algorithm for the case.
#include "tensor/tensor.h"

namespace strand::cuda {

bool cudnn_conv_available();  // this build found cuDNN
int64_t cudnn_conv_calls();   // passes cuDNN has run (tests check that it did)
// out = conv(x, w) (+ out when accumulate: the bias rows already written there)
bool conv1d_forward_cudnn(const Tensor& x, const Tensor& wf, int64_t Cout, int64_t K, int64_t pad, const Tensor& out,
                          bool accumulate);
bool conv1d_data_cudnn(const Tensor& grad, const Tensor& wf, int64_t Cout, int64_t K, int64_t pad, const Tensor& gx);
bool conv1d_filter_cudnn(const Tensor& grad, const Tensor& x, int64_t Cout, int64_t K, int64_t pad, const Tensor& gwf);

}  // namespace strand::cuda
