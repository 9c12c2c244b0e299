#pragma once
// Tensor: a cheap handle (shared_ptr to TensorImpl) = storage + offset + sizes + strides + dtype +
// autograd meta. Copying a Tensor copies the handle, never the data. Views share storage.
// Computation lives in kernels/ops.h (non-differentiable, strand::ops) and autograd/functional.h
// (differentiable, strand::); this header only describes and addresses memory.
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/storage.h"

namespace strand {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& sizes);

namespace autograd {
class Node;
}

class Tensor;
using GradHook = std::function<void(const Tensor& grad)>;

struct AutogradMeta;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape sizes, strides;
  DType dtype = DType::f32;
  std::unique_ptr<AutogradMeta> autograd;
  ~TensorImpl();
};

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
  TensorOptions() = default;
  TensorOptions(DType d) : dtype(d) {}  // NOLINT: `zeros({2}, DType::f64)` reads naturally
  TensorOptions(DType d, Device dev, bool rg = false) : dtype(d), device(dev), requires_grad(rg) {}
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised memory. Factories that fill values live in kernels/ops.h.
  static Tensor empty(const Shape& sizes, TensorOptions opts = {});
  // A contiguous CPU tensor over memory owned by `owner` (no copy).
  static Tensor from_blob(void* data, const Shape& sizes, DType dtype, std::shared_ptr<void> owner);
  // A tensor over existing storage (a view); no autograd meta.
  static Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset);

  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl_->sizes; }
  const Shape& strides() const { return impl_->strides; }
  int64_t dim() const { return static_cast<int64_t>(impl_->sizes.size()); }
  int64_t size(int64_t d) const;    // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl_->sizes); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device(); }
  bool is_cuda() const { return device().is_cuda(); }
  int64_t storage_offset() const { return impl_->offset; }
  size_t element_size() const { return dtype_size(impl_->dtype); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl_->storage; }
  TensorImpl* impl() const { return impl_.get(); }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  // No other handle, view or saved copy refers to this tensor's memory, and strand allocated it.
  bool unshared() const {
    return impl_.use_count() == 1 && impl_->storage.use_count() == 1 && impl_->storage->owns_memory();
  }

  void* raw_data() const {
    return static_cast<char*>(impl_->storage->data()) + impl_->offset * static_cast<int64_t>(element_size());
  }
  template <class T>
  T* data() const {
    STRAND_CHECK(dtype_of<T>::value == dtype(), "data<", dtype_name(dtype_of<T>::value),
                 ">() on a tensor of dtype ", dtype_name(dtype()));
    return static_cast<T*>(raw_data());
  }
  // Normalises a possibly negative dim against this tensor's rank; error names op and dim.
  int64_t wrap_dim(int64_t d, const char* op = "dim") const;

  // ---- autograd state (the engine is in autograd/) ----
  bool requires_grad() const;
  // Only leaves of floating dtype may be marked; returns *this for chaining.
  const Tensor& set_requires_grad(bool r) const;
  bool is_leaf() const;
  // A module's parameter (nn::Module::register_parameter): held for the model's lifetime, so
  // keeping it for backward costs no memory.
  bool is_parameter() const;
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  uint32_t output_nr() const;
  // Registers a hook called with the final gradient of this leaf, after it is accumulated.
  void register_hook(GradHook hook) const;
  uint64_t version() const { return impl_->storage->version(); }
  void bump_version() const { impl_->storage->bump_version(); }

  // Makes this handle address `other`'s data (storage, offset, sizes, strides, dtype) while keeping
  // its identity and autograd state, so every copy of the handle (a module's member, an
  // optimizer's list) sees the new data. Used by Module::to and checkpoint loading.
  void set_data(const Tensor& other) const;

  std::string str() const;  // "Tensor[2, 3] f32 cpu"

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves: created lazily by the engine
  std::vector<GradHook> hooks;
  bool is_parameter = false;
  // A tensor no gradient flows to (grad_fn null) that can still be recomputed, by a node outside
  // the graph: autocast's cast of a frozen parameter (autograd::FnNode::set_recipe).
  std::shared_ptr<autograd::Node> recipe;
};
AutogradMeta& autograd_meta(const Tensor& t);  // creates it on first use

// Strides of `t` read as if expanded to `shape` (0 where t broadcasts), in elements.
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// Prints the header and up to `max_per_dim` values per dimension (device tensors are copied).
std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace strand
