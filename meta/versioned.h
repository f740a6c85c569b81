// Versioned writes: the one place that applies DESIGN §2/§4's rule for
// replacing a record version in the live tree.
//
// Writing record `prefix` at the live epoch E:
//  - if its newest version was written at E, it is overwritten in place (no
//    snapshot can see it);
//  - otherwise that version dies at E. If some snapshot still present (active
//    or being deleted) has an epoch in [birth, E) it can see the version, so
//    it stays and a `dead` entry (death E, birth) records it for snapshot
//    deletion; otherwise it is removed at once.
// A tombstone is only written when an older version remains that a read at E
// would otherwise find.
//
// Thread safety: the caller holds the lock that protects `prefix` (the
// inode's lock) and the volume lock shared, so E and the snapshot set do not
// change during the call.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "meta/keys.h"
#include "meta/status.h"
#include "meta/store.h"

namespace psm {

// The set of snapshot epochs still present (active or deleting).
class EpochSet {
 public:
  virtual ~EpochSet() = default;
  // True when some present snapshot has an epoch s with lo <= s < hi.
  virtual bool AnyIn(Epoch lo, Epoch hi) const = 0;
};

// Writes `payload` (nullopt = delete) as the live version of `prefix` at
// epoch `e`.
Status PutVersion(Txn* txn, Cf cf, std::string_view prefix, Epoch e,
                  const std::optional<std::string_view>& payload, const EpochSet& snaps);

// Removes version key `versioned_key` (found unreachable by snapshot GC), and
// a tombstone left with nothing older under it if that tombstone is older
// than `live`, the live epoch. A tombstone born at the live epoch may be
// overwritten in place by a writer at any moment (PutVersion), and this
// Txn commits without the writer's locks: deleting it could delete the
// writer's new record instead. Offline callers pass kNoWriters.
constexpr Epoch kNoWriters = ~Epoch{0};
Status DropVersion(Txn* txn, Cf cf, std::string_view versioned_key, Epoch live);

}  // namespace psm
