// strand-smoke: trains a tiny two-layer regressor with the engine's autograd on synthetic data and
// prints the loss falling: the smallest end-to-end use of tensor, kernels and autograd.
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <string>

#include "autograd/functional.h"

using namespace strand;

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: strand-smoke [--steps N] [--lr F] [--seed S]\n"
               "Fits y = tanh(x·a) + noise with Linear -> LayerNorm -> GELU -> Linear by gradient descent\n"
               "and prints the training loss. Exits 1 if the loss does not fall by half.\n"
               "  --steps N   optimisation steps (default 300)\n"
               "  --lr F      learning rate (default 0.05)\n"
               "  --seed S    random seed (default 0)\n");
}
double parse_num(const char* flag, const char* v) {
  char* end = nullptr;
  double d = std::strtod(v, &end);
  if (!end || *end != '\0') {
    std::fprintf(stderr, "strand-smoke: bad value '%s' for %s\n", v, flag);
    std::exit(2);
  }
  return d;
}
}  // namespace

int main(int argc, char** argv) {
  int steps = 300;
  double lr = 0.05;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "strand-smoke: unknown or incomplete argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
    const char* v = argv[++i];
    if (!std::strcmp(a, "--steps")) steps = static_cast<int>(parse_num(a, v));
    else if (!std::strcmp(a, "--lr")) lr = parse_num(a, v);
    else if (!std::strcmp(a, "--seed")) seed = static_cast<uint64_t>(parse_num(a, v));
    else {
      std::fprintf(stderr, "strand-smoke: unknown argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (steps <= 0 || lr <= 0) {
    std::fprintf(stderr, "strand-smoke: --steps and --lr must be positive (got %d, %g)\n", steps, lr);
    return 2;
  }
  try {
    manual_seed(seed);
    const int64_t n = 512, d_in = 16, d_hid = 32;
    Tensor x = ops::randn({n, d_in});
    Tensor a = ops::mul(ops::randn({d_in, 1}), 0.5);
    Tensor y = ops::add(ops::unary(UnaryOp::tanh, ops::matmul(x, a)), ops::mul(ops::randn({n, 1}), 0.05));

    Tensor w1 = ops::add(ops::mul(ops::rand({d_hid, d_in}), 2.0 / std::sqrt(d_in)), -1.0 / std::sqrt(d_in));
    Tensor b1 = ops::zeros({d_hid});
    Tensor g = ops::ones({d_hid}), be = ops::zeros({d_hid});
    Tensor w2 = ops::add(ops::mul(ops::rand({1, d_hid}), 2.0 / std::sqrt(d_hid)), -1.0 / std::sqrt(d_hid));
    Tensor b2 = ops::zeros({1});
    std::vector<Tensor> params = {w1, b1, g, be, w2, b2};
    for (Tensor& p : params) p.set_requires_grad(true);

    double first = 0, last = 0;
    for (int step = 1; step <= steps; ++step) {
      Tensor h = gelu(layer_norm(linear(x, w1, b1), g, be));
      Tensor loss = mse_loss(linear(h, w2, b2), y);
      backward(loss);
      {
        NoGradGuard ng;
        for (Tensor& p : params) {
          ops::add_(p, p.grad(), -lr);
          p.set_grad(Tensor());
        }
      }
      last = ops::item(loss);
      if (step == 1) first = last;
      if (step == 1 || step % 50 == 0 || step == steps)
        std::printf("step %4d/%d  loss %.6f\n", step, steps, last);
    }
    const auto stats = cpu_allocator_stats();
    std::printf("strand-smoke: loss %.6f -> %.6f; peak CPU memory %.2f MiB\n", first, last,
                static_cast<double>(stats.peak_bytes) / (1 << 20));
    if (!(last < 0.5 * first)) {
      std::fprintf(stderr, "strand-smoke: the loss did not halve; something is wrong\n");
      return 1;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "strand-smoke: %s\n", e.what());
    return 2;
  }
  return 0;
}
