// lowbit/autodiff/tape.hpp -- a small reverse-mode autodiff at matrix granularity (Stan Math's design, one node
// per matrix rather than per scalar): Arena, Var, Tape, NoGrad, StraightThrough.
//
//   * Arena: a bump allocator over doubling blocks (Stan's stack_alloc).  `mark()` / `rewind(mark)` free
//     everything allocated since the mark without returning memory to the system, so a training loop that
//     rewinds after every step allocates nothing once the first step has sized the blocks.
//   * Var<T>: a handle -- value and (when it requires a gradient) adjoint, both row-major [rows, cols] on the
//     arena or in storage the caller owns (parameters, large constants such as a block's weights: no copy).
//   * Tape<T>: the arena plus the backward steps in construction order, which is a topological order;
//     backward(loss) seeds d loss = 1 and runs them in reverse.  Each op (autodiff/ops.hpp, nn.hpp,
//     quant_ops.hpp) computes its forward with Eigen and records one closure that captures only trivially
//     destructible values (Vars, sizes, pointers into the arena), placement-new'd on the arena.  Ops skip
//     operands that require no gradient, as Stan does with is_constant.  The tape is passed explicitly (no
//     global stack): two blocks trained at once never share one.
//   * NoGrad: within its scope ops record nothing and their results require no gradient (evaluation passes).
//   * StraightThrough: OmniQuant's rounding is a straight-through estimator, so the gradient the tape computes is
//     not the derivative of the forward at a rounding step.  It is the derivative of the forward *linearised at
//     the current point*: every rounding offset round(v) - v, every clamp decision, every arg-max of a group held
//     fixed.  A StraightThrough log records those discrete choices in one forward (`record`) and replays them in
//     later forwards (`replay`), which makes the forward that smooth function -- so central finite differences of
//     replayed forwards check the straight-through gradients exactly (autodiff/grad_check.hpp).  Off in training.
//
// T is float for training and double for the gradient checks.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"

namespace lowbit::ad {

class Arena {
 public:
  explicit Arena(std::size_t first_block = std::size_t(1) << 16) : next_size_(first_block) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  struct Mark {
    std::size_t block, used;
  };
  // `bytes` aligned to 64 (cache line, any SIMD width).
  void* alloc(std::size_t bytes) {
    bytes = (bytes + 63) & ~std::size_t(63);
    while (cur_ < blocks_.size()) {
      if (used_ + bytes <= blocks_[cur_].size) {
        void* p = blocks_[cur_].data + used_;
        used_ += bytes;
        return p;
      }
      ++cur_, used_ = 0;  // the next block (kept from an earlier step, or new below)
    }
    while (next_size_ < bytes) next_size_ *= 2;
    Block b;
    b.size = next_size_;
    b.data = static_cast<char*>(::operator new(b.size, std::align_val_t(64)));
    blocks_.push_back(b);
    next_size_ *= 2;
    cur_ = blocks_.size() - 1;
    used_ = bytes;
    return b.data;
  }
  template <class T>
  T* alloc_array(std::int64_t n) {
    static_assert(std::is_trivially_destructible_v<T>, "arena arrays hold trivially destructible values");
    return static_cast<T*>(alloc(std::size_t(std::max<std::int64_t>(n, 1)) * sizeof(T)));
  }
  Mark mark() const { return {cur_, used_}; }
  void rewind(Mark m) { cur_ = m.block, used_ = m.used; }
  std::size_t reserved_bytes() const {
    std::size_t n = 0;
    for (const Block& b : blocks_) n += b.size;
    return n;
  }
  ~Arena() {
    for (Block& b : blocks_) ::operator delete(b.data, std::align_val_t(64));
  }

 private:
  struct Block {
    char* data;
    std::size_t size;
  };
  std::vector<Block> blocks_;
  std::size_t cur_ = 0, used_ = 0, next_size_;
};

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapM = Eigen::Map<Mat<T>, Eigen::Unaligned>;
template <class T>
using MapA = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;  // the storage as one flat array

template <class T>
struct Var {
  T* v = nullptr;  // value
  T* g = nullptr;  // adjoint; null: no gradient wanted
  Eigen::Index rows = 0, cols = 0;

  Eigen::Index size() const { return rows * cols; }
  bool requires_grad() const { return g != nullptr; }
  MapM<T> val() const { return MapM<T>(v, rows, cols); }
  MapM<T> grad() const { return MapM<T>(g, rows, cols); }
  MapA<T> aval() const { return MapA<T>(v, size()); }
  MapA<T> agrad() const { return MapA<T>(g, size()); }
  T scalar() const { return v[0]; }
};

// The log of discrete choices (see the file comment).
template <class T>
struct StraightThrough {
  enum class Mode { off, record, replay };
  Mode mode = Mode::off;
  std::vector<T> values;
  std::size_t pos = 0;
  void put(T x) { values.push_back(x); }
  T get() {
    if (pos >= values.size()) fail("StraightThrough: the replayed forward reads more choices than were recorded");
    return values[pos++];
  }
  void start(Mode m) {
    mode = m, pos = 0;
    if (m == Mode::record) values.clear();
  }
};

template <class T>
class Tape {
 public:
  explicit Tape(std::size_t first_block = std::size_t(1) << 20) : arena_(first_block) {}
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  Arena& arena() { return arena_; }
  bool recording() const { return no_grad_ == 0; }
  StraightThrough<T>& straight_through() { return st_; }

  // A new value on the arena; with a zeroed adjoint when `grad` (and the tape records).
  Var<T> make(Eigen::Index rows, Eigen::Index cols, bool grad) {
    Var<T> x;
    x.rows = rows, x.cols = cols;
    x.v = arena_.alloc_array<T>(rows * cols);
    if (grad && recording()) {
      x.g = arena_.alloc_array<T>(rows * cols);
      // zeroed in fixed chunks on all threads (a weight's adjoint is tens of MB; one thread would leave the others
      // waiting)
      constexpr std::int64_t kChunk = std::int64_t(1) << 16;
      const std::int64_t n = rows * cols;
      T* g = x.g;
      parallel_for((n + kChunk - 1) / kChunk, [g, n](std::int64_t i) {
        const std::int64_t b = i * kChunk;
        std::memset(static_cast<void*>(g + b), 0, std::size_t(n - b < kChunk ? n - b : kChunk) * sizeof(T));
      }, kChunk / 8);
    }
    return x;
  }
  // A constant copied onto the arena.
  template <class Derived>
  Var<T> constant(const Eigen::MatrixBase<Derived>& m) {
    Var<T> x = make(m.rows(), m.cols(), false);
    x.val() = m.template cast<T>();
    return x;
  }
  // A constant viewed where it is (no copy): the caller keeps it alive and unchanged until backward is done.
  Var<T> view(const T* data, Eigen::Index rows, Eigen::Index cols) {
    Var<T> x;
    x.v = const_cast<T*>(data);  // never written through: ops write only their own results
    x.rows = rows, x.cols = cols;
    return x;
  }
  // A parameter: value and gradient in storage the caller owns (the optimiser's); the gradient accumulates.
  Var<T> parameter(T* value, T* grad, Eigen::Index rows, Eigen::Index cols) {
    Var<T> x;
    x.v = value, x.g = recording() ? grad : nullptr;
    x.rows = rows, x.cols = cols;
    return x;
  }

  // Records fn() to run in the backward pass.  fn must be trivially destructible (captures of Vars, sizes and
  // arena pointers): the arena never runs destructors.
  template <class Fn>
  void record(Fn&& fn) {
    using F = std::decay_t<Fn>;
    static_assert(std::is_trivially_destructible_v<F>, "a backward step may capture only trivially destructible values");
    if (!recording()) return;
    void* mem = arena_.alloc(sizeof(Step<F>));
    nodes_.push_back(new (mem) Step<F>(std::forward<Fn>(fn)));
  }

  struct Mark {
    Arena::Mark arena;
    std::size_t nodes;
  };
  Mark mark() const { return {arena_.mark(), nodes_.size()}; }
  // Frees every value and backward step made since m (their memory is reused by the next step).
  void rewind(Mark m) {
    arena_.rewind(m.arena);
    nodes_.resize(m.nodes);
  }

  // d loss / d x for every x that requires a gradient (accumulated into parameters' gradient storage).
  void backward(Var<T> loss) {
    if (loss.size() != 1) fail("backward: the loss is ", loss.rows, "x", loss.cols, ", not a scalar");
    if (!loss.requires_grad()) fail("backward: the loss does not depend on any parameter");
    loss.g[0] += T(1);
    for (std::size_t i = nodes_.size(); i-- > 0;) nodes_[i]->run();
  }
  std::size_t steps() const { return nodes_.size(); }

 private:
  struct Node {
    virtual void run() = 0;
  };
  template <class F>
  struct Step final : Node {
    explicit Step(F f) : fn(std::move(f)) {}
    void run() override { fn(); }
    F fn;
  };
  template <class>
  friend class NoGrad;
  Arena arena_;
  std::vector<Node*> nodes_;
  int no_grad_ = 0;
  StraightThrough<T> st_;
};

// Within its scope the tape records nothing (Adept's paused recording).
template <class T>
class NoGrad {
 public:
  explicit NoGrad(Tape<T>& t) : t_(t) { ++t_.no_grad_; }
  ~NoGrad() { --t_.no_grad_; }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Tape<T>& t_;
};

// Whether an op's result needs an adjoint: the tape records and some operand requires one.
template <class T, class... V>
bool any_grad(const Tape<T>& t, const V&... v) {
  return t.recording() && (v.requires_grad() || ...);
}

}  // namespace lowbit::ad
