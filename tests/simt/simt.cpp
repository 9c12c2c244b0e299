// The SIMT emulator's scheduler (simt.h): a block's threads as fibers on the calling OS thread.
// A fiber starts through makecontext/swapcontext; after that, switches are _setjmp/_longjmp, which
// (unlike swapcontext) make no system call to save and restore the signal mask: most of the
// emulator's time went there in kernels with many barriers. _FORTIFY_SOURCE would turn _longjmp
// into __longjmp_chk, which refuses (aborts) jumps onto the fibers' heap stacks.
#undef _FORTIFY_SOURCE
#include "tests/simt/simt.h"

#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/error.h"

namespace strand::simt {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;  // checked past a launch's dynamic shared memory

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

struct AsyncCopy {  // one cp.async: 16 bytes read at issue, written to shared memory at the wait
  unsigned char* dst;
  unsigned char bytes[16];
  bool landed;  // written at the issue already (odd blocks)
};

struct Fiber {
  jmp_buf jb;  // where it yielded
  bool started = false;
  ThreadState state;
  bool done = false;
  unsigned collectives = 0;  // this thread's warp collectives so far: picks one of two slot buffers
  std::vector<AsyncCopy> open;                 // cp.async since the last commit
  std::vector<std::vector<AsyncCopy>> groups;  // committed, not yet waited for (oldest first)
};

// One block being run.
struct BlockRun {
  std::vector<Fiber> fibers;
  jmp_buf scheduler_jb;  // where the scheduler resumed a fiber
  int current = -1;
  int live = 0;
  Barrier block;
  std::vector<Barrier> warp;
  std::vector<int> warp_lanes;
  std::vector<unsigned char> slots;                   // [warp][2][32 lanes][kSlotBytes]
  std::vector<std::pair<const char*, size_t>> kinds;  // [warp][2][32 lanes]: what each lane posted
  std::vector<int> order;                             // the order of the current pass
  const std::function<void()>* body = nullptr;
  uint64_t progress = 0;  // arrivals and exits: a pass over the fibers without any is a deadlock
  std::exception_ptr error;
};

BlockRun* g_run = nullptr;
uint64_t g_blocks = 0;
unsigned char* shared_buffer() {
  alignas(16) static unsigned char b[kSharedBytes];
  return b;
}
// Thread i of every block runs on worker i: a context with its own stack, made once (getcontext and
// makecontext cost system calls), which runs a thread to its end and then parks until the next
// block's thread i. It is entered once when made (swapcontext, which installs the signal mask
// and FP state just captured) and parks at once; from then on every switch is a _setjmp/_longjmp.
struct Worker {
  ucontext_t ctx;  // the first entry (worker_main)
  jmp_buf park;    // where it waits for its next thread
  std::unique_ptr<unsigned char[]> stack = std::make_unique<unsigned char[]>(kStackBytes);  // kept, not zeroed
};
std::vector<std::unique_ptr<Worker>>& workers() {
  static std::vector<std::unique_ptr<Worker>> w;
  return w;
}
jmp_buf g_made;  // where make_context waits for a new worker to park
void worker_main(int index);
void make_context(Worker& w, int index) {  // (re)starts w at worker_main, parked
  ucontext_t here;
  STRAND_CHECK(getcontext(&w.ctx) == 0, "SIMT emulator: getcontext failed");
  w.ctx.uc_stack.ss_sp = w.stack.get();
  w.ctx.uc_stack.ss_size = kStackBytes;
  w.ctx.uc_link = nullptr;  // worker_main never returns
  makecontext(&w.ctx, reinterpret_cast<void (*)()>(&worker_main), 1, index);
  if (_setjmp(g_made) == 0) STRAND_CHECK(swapcontext(&here, &w.ctx) == 0, "SIMT emulator: swapcontext failed");
}

Fiber& running() {
  STRAND_CHECK(g_run && g_run->current >= 0, "SIMT emulator: a CUDA built-in used outside a kernel");
  return g_run->fibers[static_cast<size_t>(g_run->current)];
}

void yield() {
  if (_setjmp(running().jb) == 0) _longjmp(g_run->scheduler_jb, 1);
}

// Arrives at b, which opens when n threads have arrived; waits (yielding) until it opens.
void wait(Barrier& b, int n) {
  ++g_run->progress;
  const uint64_t gen = b.generation;
  if (++b.arrived >= n) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == gen) yield();
}

// Runs the current block's thread `index` to its end.
void run_thread(int index) {
  BlockRun& r = *g_run;
  try {
    (*r.body)();
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  Fiber& f = r.fibers[static_cast<size_t>(index)];
  if ((!f.open.empty() || !f.groups.empty()) && !r.error)
    r.error = std::make_exception_ptr(Error("SIMT emulator: thread " + std::to_string(index) +
                                            " ended with cp.async copies it never waited for"));
  f.done = true;
  --r.live;
  ++r.progress;
  if (r.block.arrived > 0 && r.block.arrived >= r.live) {  // the others wait for the live threads only
    r.block.arrived = 0;
    ++r.block.generation;
  }
}

void worker_main(int index) {
  Worker& w = *workers()[static_cast<size_t>(index)];
  if (_setjmp(w.park) == 0) _longjmp(g_made, 1);  // made: park until the first thread
  for (;;) {
    run_thread(index);
    if (_setjmp(w.park) == 0) _longjmp(g_run->scheduler_jb, 1);  // back to the scheduler until the next block
  }
}

void run_block(BlockRun& r, uint3 block, dim3 grid, dim3 dims, size_t smem) {
  const int n = static_cast<int>(dims.x * dims.y * dims.z), warps = (n + 31) / 32;
  r.fibers.assign(static_cast<size_t>(n), Fiber{});
  r.current = -1;
  r.live = n;
  r.block = {};
  r.warp.assign(static_cast<size_t>(warps), Barrier{});
  r.warp_lanes.assign(static_cast<size_t>(warps), 32);
  if (n % 32) r.warp_lanes.back() = n % 32;
  r.slots.assign(static_cast<size_t>(warps) * 2 * 32 * kSlotBytes, 0);
  r.kinds.assign(static_cast<size_t>(warps) * 2 * 32, {nullptr, 0});
  r.order.resize(static_cast<size_t>(n));
  r.progress = 0;
  r.error = nullptr;
  std::memset(shared_buffer(), 0xff, std::min(kSharedBytes, smem + kGuardBytes));
  while (workers().size() < static_cast<size_t>(n)) {
    workers().push_back(std::make_unique<Worker>());
    make_context(*workers().back(), static_cast<int>(workers().size() - 1));
  }
  for (int i = 0; i < n; ++i) {
    const unsigned u = static_cast<unsigned>(i);
    r.fibers[static_cast<size_t>(i)].state = {{u % dims.x, (u / dims.x) % dims.y, u / (dims.x * dims.y)}, block, dims,
                                              grid};
  }
  // a fixed shuffle per block and pass (xorshift), so the order differs between passes and runs alike
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t(block.x) << 32 | uint64_t(block.y) << 16 | block.z);
  auto next = [&rng] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  // Warps drift apart as on a GPU: in three passes of four each warp runs with probability 1/2, so
  // one warp may be several barrier-free steps ahead of another (a buffer refilled before every warp
  // has read it shows); every fourth pass runs them all, and a deadlock is a full pass without
  // progress.
  std::vector<char> runs(static_cast<size_t>(warps), 1);
  uint64_t before = r.progress;
  for (uint64_t pass = 0; r.live > 0 && !r.error; ++pass) {
    const bool full = pass % 4 == 3;
    for (int w = 0; w < warps; ++w) runs[static_cast<size_t>(w)] = full || (next() & 1);
    for (int i = 0; i < n; ++i) r.order[static_cast<size_t>(i)] = i;
    for (int i = n - 1; i > 0; --i)
      std::swap(r.order[static_cast<size_t>(i)], r.order[static_cast<size_t>(next() % uint64_t(i + 1))]);
    for (int k = 0; k < n && !r.error; ++k) {
      const int i = r.order[static_cast<size_t>(k)];
      if (r.fibers[static_cast<size_t>(i)].done || !runs[static_cast<size_t>(i / 32)]) continue;
      r.current = i;
      Fiber& f = r.fibers[static_cast<size_t>(i)];
      if (_setjmp(r.scheduler_jb) == 0) {
        if (f.started) _longjmp(f.jb, 1);
        f.started = true;
        _longjmp(workers()[static_cast<size_t>(i)]->park, 1);
      }
    }
    r.current = -1;
    if (r.error) break;
    if (!full) continue;
    if (r.live > 0 && r.progress == before) {
      int in_warp = 0;
      for (const Barrier& w : r.warp) in_warp += w.arrived;
      try {
        STRAND_CHECK(false, "SIMT emulator: deadlock in block (", block.x, ", ", block.y, ", ", block.z, "): ", r.live,
                     " threads live, ", r.block.arrived, " waiting at __syncthreads, ", in_warp,
                     " in warp collectives that not every lane of the warp reaches");
      } catch (...) {
        r.error = std::current_exception();
      }
    }
    before = r.progress;
  }
  r.current = -1;
  if (r.error) {
    // threads left mid-way (a deadlock, or another thread's exception) are abandoned: their workers
    // start afresh
    for (int i = 0; i < n; ++i)
      if (r.fibers[static_cast<size_t>(i)].started && !r.fibers[static_cast<size_t>(i)].done)
        make_context(*workers()[static_cast<size_t>(i)], i);
    std::rethrow_exception(r.error);
  }
}

}  // namespace

const ThreadState& current() { return running().state; }

void syncthreads() {
  running();  // refuses a call outside a kernel
  wait(g_run->block, g_run->live);
}

const unsigned char* warp_post(const void* mine, size_t bytes, const char* kind) {
  STRAND_CHECK(bytes <= kSlotBytes, "SIMT emulator: a warp collective of ", bytes, " bytes (at most ", kSlotBytes, ")");
  Fiber& f = running();
  const unsigned lin = f.state.linear(), w = lin / 32, lane = lin % 32;
  const size_t slot = static_cast<size_t>(w) * 2 + (f.collectives++ & 1);
  unsigned char* base = g_run->slots.data() + slot * 32 * kSlotBytes;
  std::pair<const char*, size_t>* kinds = g_run->kinds.data() + slot * 32;
  std::memcpy(base + lane * kSlotBytes, mine, bytes);
  kinds[lane] = {kind, bytes};
  Barrier& b = g_run->warp[w];
  const int lanes = g_run->warp_lanes[w];
  if (b.arrived + 1 >= lanes)  // the last lane to arrive: every lane has posted
    for (int l = 0; l < lanes; ++l)
      STRAND_CHECK(kinds[l] == kinds[lane], "SIMT emulator: lane ", lane, " of warp ", w, " is at a ", kind, " of ",
                   bytes, " bytes while lane ", l, " is at a ", kinds[l].first ? kinds[l].first : "?", " of ",
                   kinds[l].second, " bytes");
  wait(b, lanes);
  return base;
}

void cp_async16(void* dst, const void* src, int src_bytes) {
  Fiber& f = running();
  auto* d = static_cast<unsigned char*>(dst);
  STRAND_CHECK(reinterpret_cast<uintptr_t>(d) % 16 == 0 && d >= dynamic_shared() && d + 16 <= dynamic_shared() + kSharedBytes,
               "SIMT emulator: cp.async destination not 16-byte aligned in dynamic shared memory");
  STRAND_CHECK(reinterpret_cast<uintptr_t>(src) % 16 == 0 && src_bytes >= 0 && src_bytes <= 16,
               "SIMT emulator: cp.async of ", src_bytes, " bytes from ", src, " (16-byte aligned, at most 16)");
  AsyncCopy c{d, {}, false};
  std::memcpy(c.bytes, src, static_cast<size_t>(src_bytes));  // the rest stays zero, as cp.async fills it
  // the hardware may deliver it any time up to the wait: at once in odd blocks (a missing barrier
  // before the buffer is refilled shows), at the wait in even ones (a read before the wait shows)
  const ThreadState& st = f.state;
  if ((st.block.x + st.grid_dim.x * (st.block.y + st.grid_dim.y * st.block.z)) % 2 == 1) {
    std::memcpy(d, c.bytes, 16);
    c.landed = true;
  }
  f.open.push_back(c);
}
void cp_async_commit() {
  Fiber& f = running();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
void cp_async_wait(int pending) {
  Fiber& f = running();
  while (f.groups.size() > static_cast<size_t>(pending)) {
    for (const AsyncCopy& c : f.groups.front())
      if (!c.landed) std::memcpy(c.dst, c.bytes, 16);
    f.groups.erase(f.groups.begin());
  }
}

void check_width(int width) {
  STRAND_CHECK(width == 32, "SIMT emulator: shuffles over the whole warp only (width 32), got width ", width);
}

void check_launch(dim3 grid, dim3 block, size_t smem) {
  STRAND_CHECK(block.x * block.y * block.z > 0 && block.x * block.y * block.z <= 1024 && block.z <= 64,
               "SIMT emulator: blocks of 1 to 1024 threads (z up to 64), got (", block.x, ", ", block.y, ", ", block.z,
               ")");
  STRAND_CHECK(grid.x > 0 && grid.y > 0 && grid.z > 0 && grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535,
               "SIMT emulator: grid (", grid.x, ", ", grid.y, ", ", grid.z, ") outside CUDA's limits");
  check_shared(smem);
}

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  STRAND_CHECK(!g_run, "SIMT emulator: a launch from inside a kernel");
  check_launch(grid, block, smem);
  // the whole buffer poisoned once per launch and checked after it (each block poisons and checks
  // only its bytes and a guard), so a write anywhere past `smem` shows
  std::memset(shared_buffer(), 0xff, kSharedBytes);
  BlockRun r;
  r.body = &body;
  g_run = &r;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          run_block(r, {x, y, z}, grid, block, smem);
          ++g_blocks;
          const unsigned char* s = shared_buffer();
          for (size_t i = smem; i < std::min(kSharedBytes, smem + kGuardBytes); ++i)
            STRAND_CHECK(s[i] == 0xff, "SIMT emulator: block (", x, ", ", y, ", ", z, ") wrote byte ", i,
                         " of dynamic shared memory; the launch asked for ", smem);
        }
  } catch (...) {
    g_run = nullptr;
    throw;
  }
  g_run = nullptr;
  const unsigned char* s = shared_buffer();
  for (size_t i = smem; i < kSharedBytes; ++i)
    STRAND_CHECK(s[i] == 0xff, "SIMT emulator: a block wrote byte ", i, " of dynamic shared memory; the launch asked for ",
                 smem);
}

uint64_t blocks_run() { return g_blocks; }

unsigned char* dynamic_shared() { return shared_buffer(); }

void check_shared(size_t bytes) {
  STRAND_CHECK(bytes <= kSharedBytes, "SIMT emulator: ", bytes, " bytes of dynamic shared memory asked, ", kSharedBytes,
               " emulated");
}

}  // namespace strand::simt
