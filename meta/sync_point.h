// Named sync points: force a chosen thread interleaving in tests.
//
//   PSM_SYNC_POINT("Scanner::AfterStep");
//
// compiles to nothing unless PSM_SYNC_POINTS is defined (tests and the
// default build define it; `make release` does not). A test installs a
// callback on a name, or a dependency "A before B": a thread reaching B
// waits until some thread has passed A (RocksDB's test_util/sync_point.h,
// reduced to what psmfs needs).
//
// Thread safety: all functions are thread-safe.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace psm {

class SyncPoint {
 public:
  static void Process(const char* name);
  // fn runs (outside the registry lock) each time a thread passes `name`.
  static void SetCallback(const std::string& name, std::function<void()> fn);
  // Each pair {A, B}: a thread reaching B waits until A has been passed.
  static void LoadDependency(const std::vector<std::pair<std::string, std::string>>& deps);
  static void ClearAll();
  static void Enable();
  static void Disable();
};

}  // namespace psm

#ifdef PSM_SYNC_POINTS
#define PSM_SYNC_POINT(name) ::psm::SyncPoint::Process(name)
#else
#define PSM_SYNC_POINT(name) \
  do {                       \
  } while (0)
#endif
