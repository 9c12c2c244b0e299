#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

// Rows are reduced in order with a double (or int64) accumulator: deterministic and independent of
// the thread count, since threads split rows, never a row.
void reduce_rows(RowReduce r, const Tensor& x, int64_t rows, int64_t n, const Tensor& out) {
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, int64_t>) {
      STRAND_ASSERT(r == RowReduce::sum);
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      parallel_for(rows, n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          int64_t s = 0;
          for (int64_t j = 0; j < n; ++j) s += xp[i * n + j];
          op[i] = s;
        }
      });
    } else if constexpr (std::is_integral_v<T>) {
      STRAND_ASSERT(false, "reduce_rows on ", dtype_name(x.dtype()));
    } else {
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      parallel_for(rows, n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const T* row = xp + i * n;
          double s = 0;
          for (int64_t j = 0; j < n; ++j) s += static_cast<double>(acc_t<T>(row[j]));
          if (r == RowReduce::sum) {
            op[i] = T(static_cast<acc_t<T>>(s));
            continue;
          }
          const double m = n > 0 ? s / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
          if (r == RowReduce::mean) {
            op[i] = T(static_cast<acc_t<T>>(m));
            continue;
          }
          double v = 0;
          for (int64_t j = 0; j < n; ++j) {
            double d = static_cast<double>(acc_t<T>(row[j])) - m;
            v += d * d;
          }
          op[i] = T(static_cast<acc_t<T>>(n > 0 ? v / static_cast<double>(n) : m));
        }
      });
    }
  });
}

void reduce_middle(RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, int64_t>) {
      STRAND_ASSERT(false, "reduce_middle on ", dtype_name(x.dtype()));
    } else {
      // Integer sums stay exact in int64; floating ones accumulate in double, each column over n in
      // order (deterministic for any thread count: threads split columns, never a column).
      using Acc = std::conditional_t<std::is_same_v<T, int64_t>, int64_t, double>;
      auto val = [](T v) {
        if constexpr (std::is_same_v<T, int64_t>) return v;
        else return static_cast<double>(acc_t<T>(v));
      };
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      constexpr int64_t kCols = 256;  // columns per task: accumulators stay in L1
      const int64_t chunks = (inner + kCols - 1) / kCols;
      parallel_for(outer * chunks, n * kCols, [&](int64_t b, int64_t e) {
        std::vector<Acc> acc(kCols), sq(kCols);
        for (int64_t task = b; task < e; ++task) {
          const int64_t o = task / chunks, c0 = (task % chunks) * kCols, w = std::min(kCols, inner - c0);
          const T* base = xp + o * n * inner + c0;
          std::fill(acc.begin(), acc.begin() + w, Acc(0));
          for (int64_t j = 0; j < n; ++j)
            for (int64_t i = 0; i < w; ++i) acc[i] += val(base[j * inner + i]);
          T* dst = op + o * inner + c0;
          if (r == RowReduce::sum) {
            for (int64_t i = 0; i < w; ++i) dst[i] = T(static_cast<acc_t<T>>(acc[i]));
            continue;
          }
          if constexpr (!std::is_same_v<T, int64_t>) {
            const double inv = n > 0 ? 1.0 / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
            for (int64_t i = 0; i < w; ++i) acc[i] = n > 0 ? acc[i] / static_cast<double>(n) : acc[i] * inv;
            if (r == RowReduce::mean) {
              for (int64_t i = 0; i < w; ++i) dst[i] = T(static_cast<acc_t<T>>(acc[i]));
              continue;
            }
            std::fill(sq.begin(), sq.begin() + w, 0.0);
            for (int64_t j = 0; j < n; ++j)
              for (int64_t i = 0; i < w; ++i) {
                const double d = val(base[j * inner + i]) - acc[i];
                sq[i] += d * d;
              }
            for (int64_t i = 0; i < w; ++i) dst[i] = T(static_cast<acc_t<T>>(n > 0 ? sq[i] * inv : acc[i]));
          }
        }
      });
    }
  });
}

void max_rows(const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices) {
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    parallel_for(rows, n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T* row = xp + i * n;
        int64_t best = 0;
        A bv = A(row[0]);
        for (int64_t j = 1; j < n && bv == bv; ++j) {  // the first NaN wins, as in PyTorch
          A v = A(row[j]);
          if (v > bv || v != v) {
            bv = v;
            best = j;
          }
        }
        vp[i] = row[best];
        ip[i] = best;
      }
    });
  });
}

}  // namespace strand::cpu
