#include "tensor/block_pool.h"

#include <algorithm>
#include <vector>

#include "tensor/error.h"

namespace strand {

namespace {
size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
// f(i, j) for each maximal run [i, j) of pages in [first, last) whose mapped state is `state`, in
// order, until f returns false; false then.
template <class F>
bool for_each_run(const std::vector<bool>& mapped, size_t first, size_t last, bool state, F&& f) {
  for (size_t i = first; i < last;) {
    if (mapped[i] != state) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < last && mapped[j] == state) ++j;
    if (!f(i, j)) return false;
    i = j;
  }
  return true;
}
void set_pages(std::vector<bool>& mapped, size_t i, size_t j, bool state) {
  std::fill(mapped.begin() + static_cast<std::ptrdiff_t>(i), mapped.begin() + static_cast<std::ptrdiff_t>(j), state);
}
}  // namespace

BlockPool::BlockPool(std::string name, RawAlloc alloc, RawFree free, Events events, Vmm vmm)
    : name_(std::move(name)),
      raw_alloc_(std::move(alloc)),
      raw_free_(std::move(free)),
      events_(std::move(events)),
      vmm_(std::move(vmm)) {
  STRAND_ASSERT(!vmm_.map || (vmm_.page > 0 && vmm_.page % kRound == 0 && vmm_.reserve_range && vmm_.unmap),
                "BlockPool: expandable segments need a page size (a multiple of ", kRound, ") and the range calls");
}

BlockPool::~BlockPool() {
  // Segments still holding live blocks belong to tensors that outlive the pool (process exit):
  // only fully free segments are returned; the rest go with the process.
  std::lock_guard<std::mutex> lock(mu_);
  process_events(/*wait=*/true);
  release_free_segments();
  for (const auto& e : expandable_) {  // address space with nothing left on it is returned
    const auto it = blocks_.find(e->base);
    if (it != blocks_.end() && !it->second->allocated && it->second->size == e->size && vmm_.release_range)
      vmm_.release_range(e->base, e->size);
  }
  for (auto& [p, b] : blocks_) delete b;
}

BlockPool::Block* BlockPool::take_free(size_t size, bool small, StreamId stream) {
  FreeSet& fs = pool(small);
  auto it = fs.lower_bound({stream, size, nullptr});
  if (it == fs.end() || std::get<0>(*it) != stream) return nullptr;
  Block* b = blocks_.at(std::get<2>(*it));
  fs.erase(it);
  return b;
}

BlockPool::Block* BlockPool::new_segment(size_t size, bool small, StreamId stream) {
  const size_t seg = small ? kSmallSegment : size < kLargeLimit ? kMidSegment : round_up(size, kSmallSegment);
  void* p = raw_alloc_(seg);
  if (!p) {
    ++stats_.num_oom_retries;
    process_events(/*wait=*/true);  // blocks held back by other streams count as cache too
    release_free_segments();
    p = raw_alloc_(seg);
  }
  if (!p) return nullptr;
  auto* b = new Block(static_cast<char*>(p), seg, small, stream);
  blocks_[b->ptr] = b;
  stats_.reserved_bytes += static_cast<int64_t>(seg);
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  ++stats_.num_segments;
  return b;
}

BlockPool::Block* BlockPool::new_expandable(size_t size, StreamId stream) {
  if (size > vmm_.reserve) return nullptr;  // more than the device holds: out of memory at once
  const size_t n = round_up(vmm_.reserve, vmm_.page);
  void* p = vmm_.reserve_range(n);
  if (!p) return nullptr;
  expandable_.push_back(
      std::make_unique<Expandable>(Expandable{static_cast<char*>(p), n, std::vector<bool>(n / vmm_.page)}));
  auto* b = new Block(static_cast<char*>(p), n, false, stream, expandable_.back().get());
  blocks_[b->ptr] = b;
  ++stats_.num_segments;
  return b;
}

bool BlockPool::map_pages(Block* b) {
  Expandable& e = *b->seg;
  const size_t pg = vmm_.page, off = static_cast<size_t>(b->ptr - e.base);
  return for_each_run(e.mapped, off / pg, (off + b->size + pg - 1) / pg, false, [&](size_t i, size_t j) {
    char* at = e.base + i * pg;
    const size_t n = (j - i) * pg;
    if (!vmm_.map(at, n)) {
      ++stats_.num_oom_retries;
      process_events(/*wait=*/true);
      release_free_segments();
      if (!vmm_.map(at, n)) return false;
    }
    set_pages(e.mapped, i, j, true);
    stats_.reserved_bytes += static_cast<int64_t>(n);
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    return true;
  });
}

void BlockPool::unmap_free_pages(Block* b, bool& synced) {
  // Free neighbours are merged, so a page b shares with a neighbour is under a live block.
  Expandable& e = *b->seg;
  const size_t pg = vmm_.page, off = static_cast<size_t>(b->ptr - e.base);
  for_each_run(e.mapped, (off + pg - 1) / pg, (off + b->size) / pg, true, [&](size_t i, size_t j) {
    // Counted as unmapped first: after a driver error part-way, the next mapping of these pages
    // fails loudly instead of a block landing on pages that are gone.
    set_pages(e.mapped, i, j, false);
    stats_.reserved_bytes -= static_cast<int64_t>((j - i) * pg);
    stats_.unmapped_bytes += static_cast<int64_t>((j - i) * pg);
    if (!synced && vmm_.synchronize) vmm_.synchronize();  // work queued earlier may still use the pages
    synced = true;
    vmm_.unmap(e.base + i * pg, (j - i) * pg);
    return true;
  });
}

void* BlockPool::allocate(size_t nbytes, StreamId stream) {
  const size_t size = round_up(std::max<size_t>(nbytes, 1), kRound);
  const bool small = size <= kSmall;
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_.empty()) process_events(/*wait=*/false);
  Block* b = take_free(size, small, stream);
  if (!b && !small && vmm_.map) b = new_expandable(size, stream);
  if (!b) b = new_segment(size, small, stream);
  const auto oom = [&] {
    return detail::concat_message("out of memory on ", name_, " allocating ", nbytes, " bytes (allocated ",
                                  stats_.allocated_bytes, ", reserved ", stats_.reserved_bytes, ", peak allocated ",
                                  stats_.peak_allocated_bytes, " bytes; the cache was emptied and the request retried)");
  };
  STRAND_CHECK(b != nullptr, oom());
  // Split off the remainder when it can serve another request of this pool.
  if (b->size - size >= (small ? kRound : kSmall + 1)) {
    auto* rest = new Block(b->ptr + size, b->size - size, small, stream, b->seg);
    rest->prev = b;
    rest->next = b->next;
    if (b->next) b->next->prev = rest;
    b->next = rest;
    b->size = size;
    blocks_[rest->ptr] = rest;
    pool(small).insert(key(rest));
  }
  b->allocated = true;
  stats_.allocated_bytes += static_cast<int64_t>(b->size);
  if (b->seg) {
    bool mapped = false;
    try {
      mapped = map_pages(b);
    } catch (...) {  // a driver error: the block goes back before the error does
      return_block(b);
      throw;
    }
    if (!mapped) {
      return_block(b);
      STRAND_CHECK(false, oom());
    }
  }
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  ++stats_.num_allocs;
  return b->ptr;
}

BlockPool::Block* BlockPool::live_block(void* p, const char* what) {
  auto it = blocks_.find(static_cast<char*>(p));
  STRAND_ASSERT(it != blocks_.end() && it->second->allocated && it->second->pending_events == 0, "BlockPool::", what,
                " of a pointer that is not a live allocation of ", name_);
  return it->second;
}

void BlockPool::record_stream(void* p, StreamId stream) {
  std::lock_guard<std::mutex> lock(mu_);
  Block* b = live_block(p, "record_stream");
  if (stream == b->stream || std::find(b->uses.begin(), b->uses.end(), stream) != b->uses.end()) return;
  STRAND_CHECK(events_.record != nullptr, "record_stream on ", name_, ", whose backend has no events");
  b->uses.push_back(stream);
}

void BlockPool::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  Block* b = live_block(p, "free");
  if (b->uses.empty()) {
    return_block(b);
    return;
  }
  // Work queued on the other streams may still read or write it: hold it back until an event
  // recorded now on each of them has completed.
  std::vector<void*> evs;
  for (StreamId s : b->uses)
    if (void* e = events_.record(s)) evs.push_back(e);  // nullptr: that stream was waited for
  b->uses.clear();
  if (evs.empty()) {
    return_block(b);
    return;
  }
  for (void* e : evs) pending_.emplace_back(e, b);
  b->pending_events = static_cast<int>(evs.size());
  ++stats_.pending_frees;
}

void BlockPool::process_events(bool wait) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto [ev, b] = *it;
    if (wait) events_.synchronize(ev);
    else if (!events_.done(ev)) {
      ++it;
      continue;
    }
    events_.destroy(ev);
    it = pending_.erase(it);
    if (--b->pending_events == 0) {
      --stats_.pending_frees;
      return_block(b);
    }
  }
}

void BlockPool::return_block(Block* b) {
  b->allocated = false;
  stats_.allocated_bytes -= static_cast<int64_t>(b->size);
  FreeSet& fs = pool(b->small);
  // Merge with free neighbours (same segment, hence same stream, by construction).
  if (b->next && !b->next->allocated) {
    Block* n = b->next;
    fs.erase(key(n));
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    blocks_.erase(n->ptr);
    delete n;
  }
  if (b->prev && !b->prev->allocated) {
    Block* pv = b->prev;
    fs.erase(key(pv));
    pv->size += b->size;
    pv->next = b->next;
    if (b->next) b->next->prev = pv;
    blocks_.erase(b->ptr);
    delete b;
    b = pv;
  }
  fs.insert(key(b));
}

void BlockPool::release_free_segments() {
  bool synced = false;  // one wait for the device before the first unmap, not one per run of pages
  for (FreeSet* fs : {&free_small_, &free_large_}) {
    for (auto it = fs->begin(); it != fs->end();) {
      Block* b = blocks_.at(std::get<2>(*it));
      if (b->seg) {  // an expandable segment keeps its address space and gives back its free pages
        unmap_free_pages(b, synced);
        ++it;
        continue;
      }
      if (b->prev || b->next) {  // part of a segment still in use
        ++it;
        continue;
      }
      raw_free_(b->ptr);
      stats_.reserved_bytes -= static_cast<int64_t>(b->size);
      --stats_.num_segments;
      blocks_.erase(b->ptr);
      delete b;
      it = fs->erase(it);
    }
  }
}

void BlockPool::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  process_events(/*wait=*/true);
  release_free_segments();
}

BlockPoolStats BlockPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockPool::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

}  // namespace strand
