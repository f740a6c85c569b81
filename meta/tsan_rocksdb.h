// ThreadSanitizer and RocksDB (docs/testing.md, "Sanitizers").
//
// Debian's librocksdb is not compiled with -fsanitize=thread. TSan sees its
// locks (pthread mutexes and condition variables are intercepted) and the
// memcpy/memcmp/pread/close it calls, but not its atomics: a memtable entry
// written with memcpy and published through the lock-free skip list, an
// index block or a table file freed when an atomic reference count drops, a
// function-local static another thread initialized — each of these looks
// like a race between two threads' accesses made inside RocksDB.
//
// So in TSan builds the memory accesses a psmfs thread makes inside a call to
// RocksDB are not recorded: every such call goes through a RocksCallScope
// (meta/store.cc: the Store and Txn methods, and every iterator they return,
// wrapped in IgnoringIterator). TSan still sees RocksDB's locks (deadlock
// detection included), and every access of psmfs code is recorded, including
// its reads of the keys and values RocksDB hands out. psmfs code that RocksDB
// calls back from inside such a call — the image barrier (meta/barrier_fs.cc)
// and the counter merge operator — opens a PsmCallbackScope, which records
// accesses again while it runs. No report is suppressed (tests/tsan.supp).
//
// What this gives up: RocksDB's own reads of psmfs memory (a key being read
// by RocksDB while another psmfs thread rewrites it would go unreported), as
// the library rules of tests/tsan.supp did before, which in addition hid
// every race any of whose stacks passed through RocksDB.
//
// Everything here is a no-op in other builds. Thread safety: per thread.
#pragma once

#include <rocksdb/iterator.h>

#include <memory>
#include <string>

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace psm::tsan {

#if defined(__SANITIZE_THREAD__)
// Open RocksCallScopes of this thread not undone by a PsmCallbackScope.
inline thread_local int t_ignoring = 0;

class RocksCallScope {
 public:
  RocksCallScope() {
    ++t_ignoring;
    __tsan_ignore_thread_begin();
  }
  ~RocksCallScope() {
    __tsan_ignore_thread_end();
    --t_ignoring;
  }
  RocksCallScope(const RocksCallScope&) = delete;
  RocksCallScope& operator=(const RocksCallScope&) = delete;
};

class PsmCallbackScope {
 public:
  PsmCallbackScope() : undone_(t_ignoring) {
    for (int i = 0; i < undone_; ++i) __tsan_ignore_thread_end();
    t_ignoring = 0;
  }
  ~PsmCallbackScope() {
    for (int i = 0; i < undone_; ++i) __tsan_ignore_thread_begin();
    t_ignoring = undone_;
  }
  PsmCallbackScope(const PsmCallbackScope&) = delete;
  PsmCallbackScope& operator=(const PsmCallbackScope&) = delete;

 private:
  const int undone_;
};

// An iterator whose every call into RocksDB, its destruction included, runs
// in a RocksCallScope.
class IgnoringIterator final : public rocksdb::Iterator {
 public:
  explicit IgnoringIterator(rocksdb::Iterator* it) : it_(it) {}
  ~IgnoringIterator() override {
    RocksCallScope s;
    it_.reset();
  }
  bool Valid() const override {
    RocksCallScope s;
    return it_->Valid();
  }
  void SeekToFirst() override {
    RocksCallScope s;
    it_->SeekToFirst();
  }
  void SeekToLast() override {
    RocksCallScope s;
    it_->SeekToLast();
  }
  void Seek(const rocksdb::Slice& target) override {
    RocksCallScope s;
    it_->Seek(target);
  }
  void SeekForPrev(const rocksdb::Slice& target) override {
    RocksCallScope s;
    it_->SeekForPrev(target);
  }
  void Next() override {
    RocksCallScope s;
    it_->Next();
  }
  void Prev() override {
    RocksCallScope s;
    it_->Prev();
  }
  rocksdb::Slice key() const override {
    RocksCallScope s;
    return it_->key();
  }
  rocksdb::Slice value() const override {
    RocksCallScope s;
    return it_->value();
  }
  rocksdb::Status status() const override {
    RocksCallScope s;
    return it_->status();
  }
  rocksdb::Status Refresh() override {
    RocksCallScope s;
    return it_->Refresh();
  }
  rocksdb::Status GetProperty(std::string prop_name, std::string* prop) override {
    RocksCallScope s;
    return it_->GetProperty(std::move(prop_name), prop);
  }

 private:
  std::unique_ptr<rocksdb::Iterator> it_;
};

// Takes ownership of `it` (made inside a RocksCallScope).
inline rocksdb::Iterator* Wrap(rocksdb::Iterator* it) { return new IgnoringIterator(it); }
#else
class RocksCallScope {
 public:
  RocksCallScope() {}  // user-provided: no unused-variable warning
};
class PsmCallbackScope {
 public:
  PsmCallbackScope() {}
};
inline rocksdb::Iterator* Wrap(rocksdb::Iterator* it) { return it; }
#endif

}  // namespace psm::tsan
