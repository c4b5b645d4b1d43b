// A sharded, byte-bounded LRU cache of immutable values keyed by uint64_t.
// Thread safe. Values are shared_ptr<const V>, so a reader keeps its value
// alive after eviction; memory held by the cache itself never exceeds the
// capacity (plus one value per shard).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace cryptex {

template <typename V>
class LruCache final {
 public:
  explicit LruCache(size_t capacity_bytes, size_t shards = 16)
      : shards_(shards), per_shard_(std::max<size_t>(capacity_bytes / shards, 1)) {}
  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;

  // True if `key` is cached; does not count as a use.
  bool Contains(uint64_t key) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mu);
    return s.map.count(key) != 0;
  }

  std::shared_ptr<const V> Get(uint64_t key) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) return nullptr;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return it->second->value;
  }

  void Put(uint64_t key, std::shared_ptr<const V> value, size_t charge) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mu);
    if (auto it = s.map.find(key); it != s.map.end()) return;  // first writer wins
    s.lru.push_front(Entry{key, std::move(value), charge});
    s.map.emplace(key, s.lru.begin());
    s.used += charge;
    while (s.used > per_shard_ && s.lru.size() > 1) {
      Entry& victim = s.lru.back();
      s.used -= victim.charge;
      s.map.erase(victim.key);
      s.lru.pop_back();
    }
  }

  size_t capacity() const { return per_shard_ * shards_.size(); }

 private:
  struct Entry {
    uint64_t key;
    std::shared_ptr<const V> value;
    size_t charge;
  };
  struct Shard {
    std::mutex mu;
    std::list<Entry> lru;  // GUARDED_BY(mu), most recent first
    std::unordered_map<uint64_t, typename std::list<Entry>::iterator> map;  // GUARDED_BY(mu)
    size_t used = 0;                                                        // GUARDED_BY(mu)
  };
  Shard& shard(uint64_t key) {
    return shards_[(key * 0x9E3779B97F4A7C15ull >> 32) % shards_.size()];
  }

  std::vector<Shard> shards_;
  size_t per_shard_;
};

}  // namespace cryptex
