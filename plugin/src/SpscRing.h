// Lock-free single-producer/single-consumer ring of trivially copyable items. The producer only
// writes `head_`, the consumer only `tail_`; acquire/release on them publishes the items. No
// allocation after construction, no locks, no syscalls: safe on the audio thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

template <typename T>
class SpscRing {
  static_assert(std::is_trivially_copyable<T>::value, "ring items are memcpy'd");

 public:
  explicit SpscRing(size_t minCapacity = 0) { allocate(minCapacity); }

  // Not thread-safe: only while neither side runs.
  void allocate(size_t minCapacity) {
    size_t cap = 1;
    while (cap < minCapacity + 1) cap <<= 1;  // one slot stays empty to tell full from empty
    buf_.assign(cap, T{});
    mask_ = cap - 1;
    clear();
  }
  void clear() {
    head_.store(0, std::memory_order_relaxed);
    tail_.store(0, std::memory_order_relaxed);
  }
  size_t capacity() const { return mask_; }

  // Producer side.
  size_t writable() const {
    return mask_ - ((head_.load(std::memory_order_relaxed) - tail_.load(std::memory_order_acquire)) & mask_);
  }
  bool write(const T* items, size_t n) {
    if (n > writable()) return false;
    size_t h = head_.load(std::memory_order_relaxed);
    copyIn(h & mask_, items, n);
    head_.store((h + n) & mask_, std::memory_order_release);
    return true;
  }

  // Consumer side.
  size_t readable() const {
    return (head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_relaxed)) & mask_;
  }
  bool read(T* items, size_t n) {
    if (n > readable()) return false;
    size_t t = tail_.load(std::memory_order_relaxed);
    if (items != nullptr) copyOut(t & mask_, items, n);
    tail_.store((t + n) & mask_, std::memory_order_release);
    return true;
  }
  bool skip(size_t n) { return read(nullptr, n); }
  // The next item without consuming it (consumer side; false when empty).
  bool peek(T& item, size_t offset = 0) const {
    if (offset >= readable()) return false;
    item = buf_[(tail_.load(std::memory_order_relaxed) + offset) & mask_];
    return true;
  }

 private:
  void copyIn(size_t at, const T* src, size_t n) {
    size_t first = std::min(n, buf_.size() - at);
    std::memcpy(&buf_[at], src, first * sizeof(T));
    if (n > first) std::memcpy(&buf_[0], src + first, (n - first) * sizeof(T));
  }
  void copyOut(size_t at, T* dst, size_t n) const {
    size_t first = std::min(n, buf_.size() - at);
    std::memcpy(dst, &buf_[at], first * sizeof(T));
    if (n > first) std::memcpy(dst + first, &buf_[0], (n - first) * sizeof(T));
  }

  std::vector<T> buf_;
  size_t mask_ = 0;
  alignas(64) std::atomic<size_t> head_{0};
  alignas(64) std::atomic<size_t> tail_{0};
};
