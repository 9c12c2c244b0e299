#include "tensor/tensor.h"

#include <algorithm>
#include <iomanip>
#include <sstream>
#include <vector>

#include "tensor/generator.h"

namespace strand {

TensorImpl::~TensorImpl() = default;

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& sizes) {
  Shape st(sizes.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(sizes[i], 1);
  }
  return st;
}

Tensor Tensor::empty(const Shape& sizes, TensorOptions opts) {
  for (int64_t d : sizes) STRAND_CHECK(d >= 0, "negative dimension in shape ", shape_str(sizes));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(sizes)) * dtype_size(opts.dtype),
                                            opts.device);
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = opts.dtype;
  Tensor t(std::move(impl));
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& sizes, DType dtype, std::shared_ptr<void> owner) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, static_cast<size_t>(shape_numel(sizes)) * dtype_size(dtype),
                                            Device::cpu(), std::move(owner));
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

void Tensor::set_data(const Tensor& other) const {
  STRAND_CHECK(other.defined(), "set_data: the new data is undefined");
  STRAND_CHECK(!requires_grad() || is_floating(other.dtype()), "set_data: a tensor that requires grad cannot take ",
               dtype_name(other.dtype()), " data");
  impl_->storage = other.impl_->storage;
  impl_->offset = other.impl_->offset;
  impl_->sizes = other.impl_->sizes;
  impl_->strides = other.impl_->strides;
  impl_->dtype = other.impl_->dtype;
  if (impl_->autograd && impl_->autograd->grad.defined() &&
      (impl_->autograd->grad.sizes() != impl_->sizes || impl_->autograd->grad.device() != device() ||
       impl_->autograd->grad.dtype() != impl_->dtype))
    impl_->autograd->grad = Tensor();  // a gradient of the old shape, device or dtype is meaningless now
  if (impl_->autograd) impl_->autograd->recipe.reset();  // it would recompute the old data
}

Tensor Tensor::make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  STRAND_ASSERT(sizes.size() == strides.size());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl_->storage;
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

int64_t Tensor::wrap_dim(int64_t d, const char* op) const {
  int64_t n = dim();
  STRAND_CHECK((d >= -n && d < n) || (n == 0 && (d == 0 || d == -1)), op, ": dimension ", d,
               " out of range for a tensor of shape ", shape_str(sizes()));
  return d < 0 ? d + n : d;
}

int64_t Tensor::size(int64_t d) const { return impl_->sizes[wrap_dim(d, "size")]; }
int64_t Tensor::stride(int64_t d) const { return impl_->strides[wrap_dim(d, "stride")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to address: any strides describe it
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->sizes[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->sizes[i];
  }
  return true;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  const int64_t off = static_cast<int64_t>(shape.size()) - t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) st[off + d] = t.size(d) == 1 ? 0 : t.stride(d);
  return st;
}

AutogradMeta& autograd_meta(const Tensor& t) {
  auto* impl = t.impl();
  if (!impl->autograd) impl->autograd = std::make_unique<AutogradMeta>();
  return *impl->autograd;
}

bool Tensor::requires_grad() const { return impl_->autograd && impl_->autograd->requires_grad; }

const Tensor& Tensor::set_requires_grad(bool r) const {
  STRAND_CHECK(!r || is_floating(dtype()), "requires_grad needs a floating dtype, got ", dtype_name(dtype()));
  STRAND_CHECK(is_leaf(), "requires_grad can only be changed on a leaf tensor (this one has a grad_fn); "
                          "use detach() first");
  autograd_meta(*this).requires_grad = r;
  return *this;
}

bool Tensor::is_leaf() const { return !impl_->autograd || !impl_->autograd->grad_fn; }

bool Tensor::is_parameter() const { return impl_->autograd && impl_->autograd->is_parameter; }

Tensor Tensor::grad() const { return impl_->autograd ? impl_->autograd->grad : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined()) {
    STRAND_CHECK(g.sizes() == sizes(), "set_grad: gradient shape ", shape_str(g.sizes()),
                 " does not match tensor shape ", shape_str(sizes()));
  }
  autograd_meta(*this).grad = g;
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<autograd::Node> kNone;
  return impl_->autograd ? impl_->autograd->grad_fn : kNone;
}

uint32_t Tensor::output_nr() const { return impl_->autograd ? impl_->autograd->output_nr : 0; }

void Tensor::register_hook(GradHook hook) const {
  STRAND_CHECK(requires_grad(), "register_hook on a tensor that does not require grad");
  STRAND_CHECK(is_leaf(), "register_hook: only leaf hooks are supported (they fire when the "
                          "leaf's gradient is final)");
  autograd_meta(*this).hooks.push_back(std::move(hook));
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor" << shape_str(sizes()) << " " << dtype_name(dtype()) << " " << device().str();
  if (requires_grad()) os << " requires_grad";
  return os.str();
}

namespace {
double read_as_double(const char* p, DType dt) {
  return dispatch_all(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return static_cast<double>(static_cast<acc_t<T>>(*reinterpret_cast<const T*>(p)));
  });
}

void print_rec(std::ostream& os, const char* base, const Tensor& t, int64_t d, int64_t off,
               int64_t max_per_dim) {
  const int64_t n = t.size(d), es = static_cast<int64_t>(t.element_size());
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_per_dim && i == max_per_dim / 2) {
      os << "..., ";
      i = n - max_per_dim / 2;
    }
    int64_t o = off + i * t.stride(d);
    if (d + 1 == t.dim()) {
      os << read_as_double(base + o * es, t.dtype());
    } else {
      print_rec(os, base, t, d + 1, o, max_per_dim);
    }
    if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n ");
  }
  os << "]";
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  os << t.str();
  if (!t.defined()) return os;
  os << "\n";
  const char* base = static_cast<const char*>(t.storage()->data());
  std::vector<char> host;
  if (t.is_cuda()) {
    host.resize(t.storage()->nbytes());
    cuda_rt::memcpy(host.data(), base, host.size(), cuda_rt::CopyKind::DeviceToHost);
    base = host.data();
  }
  auto flags = os.flags();
  os << std::setprecision(6);
  if (t.dim() == 0) {
    os << read_as_double(base + t.storage_offset() * t.element_size(), t.dtype());
  } else {
    print_rec(os, base, t, 0, t.storage_offset(), 8);
  }
  os.flags(flags);
  return os;
}

Generator& default_generator() {
  static Generator g;
  return g;
}
void manual_seed(uint64_t seed) {
  default_generator().seed = seed;
  default_generator().offset = 0;
}

}  // namespace strand
