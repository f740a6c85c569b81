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

// PutVersion's delete of a record whose versions the caller has read
// already, holding the record's lock since: its newest version's key and
// whether that is a tombstone, and whether an older version remains under
// it (needed only when the newest was born at `e`, or no present snapshot
// can see it; pass false otherwise). Writes what PutVersion would.
void DeleteVersionRead(Txn* txn, Cf cf, std::string_view newest_key, bool newest_tomb,
                       bool older, Epoch e, const EpochSet& snaps);

// `key` is a version key of record `prefix`.
bool IsVersionOf(std::string_view key, std::string_view prefix);
// Steps `it` (on a version of `prefix`) to the next key: true when that is
// an older version of the same record.
Result<bool> NextIsOlderVersion(rocksdb::Iterator* it, std::string_view prefix);

// The key of record `prefix`'s lone tombstone: its newest version when that
// is a tombstone with nothing older under it, which hides nothing. "" when
// there is none. Reads through `txn`.
Result<std::string> LoneTombstone(Txn* txn, Cf cf, std::string_view prefix);

// Removes version key `versioned_key` (found unreachable by snapshot GC).
// A lone tombstone left behind is removed too when `lone` is null (offline:
// nobody else writes). Otherwise its key is stored in *lone ("" if none)
// and the caller removes it with DropLoneTombstone under the record's
// inode lock: the tombstone is the record's live version, which a writer
// may rewrite at any moment, and deleting it on the strength of an earlier
// read could delete the writer's new record instead.
Status DropVersion(Txn* txn, Cf cf, std::string_view versioned_key, std::string* lone);
// Deletes `tomb_key` if it is still its record's lone tombstone.
Status DropLoneTombstone(Txn* txn, Cf cf, std::string_view tomb_key);

}  // namespace psm
