#include "meta/sync_point.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>

namespace psm {
namespace {

struct Registry {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> enabled{false};
  std::map<std::string, std::function<void()>> callbacks;
  std::map<std::string, std::vector<std::string>> predecessors;  // B -> [A...]
  std::set<std::string> passed;
};

Registry& Reg() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

void SyncPoint::Process(const char* name) {
  Registry& r = Reg();
  if (!r.enabled.load(std::memory_order_acquire)) return;
  std::function<void()> cb;
  {
    std::unique_lock<std::mutex> l(r.mu);
    auto p = r.predecessors.find(name);
    if (p != r.predecessors.end()) {
      r.cv.wait(l, [&] {
        if (!r.enabled.load()) return true;
        for (const auto& a : p->second) {
          if (!r.passed.count(a)) return false;
        }
        return true;
      });
    }
    auto c = r.callbacks.find(name);
    if (c != r.callbacks.end()) cb = c->second;
  }
  if (cb) cb();
  {
    std::lock_guard<std::mutex> l(r.mu);
    r.passed.insert(name);
  }
  r.cv.notify_all();
}

void SyncPoint::SetCallback(const std::string& name, std::function<void()> fn) {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().callbacks[name] = std::move(fn);
}

void SyncPoint::LoadDependency(const std::vector<std::pair<std::string, std::string>>& deps) {
  std::lock_guard<std::mutex> l(Reg().mu);
  for (const auto& [a, b] : deps) Reg().predecessors[b].push_back(a);
}

void SyncPoint::ClearAll() {
  std::lock_guard<std::mutex> l(Reg().mu);
  Reg().callbacks.clear();
  Reg().predecessors.clear();
  Reg().passed.clear();
  Reg().cv.notify_all();
}

void SyncPoint::Enable() { Reg().enabled.store(true, std::memory_order_release); }

void SyncPoint::Disable() {
  Reg().enabled.store(false, std::memory_order_release);
  Reg().cv.notify_all();
}

}  // namespace psm
