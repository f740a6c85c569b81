#include "meta/versioned.h"

#include <cstring>

namespace psm {
namespace {

bool HasPrefixExact(const rocksdb::Slice& k, std::string_view prefix) {
  return IsVersionOf(std::string_view(k.data(), k.size()), prefix);
}

// The delete's rule, with `keep` (a present snapshot sees the newest
// version) decided.
void DeleteRead(Txn* txn, Cf cf, std::string_view newest_key, bool newest_tomb, bool older,
                bool keep, Epoch e) {
  const Epoch newest = KeyEpoch(newest_key);
  if (newest == e) {
    // Overwrite in place: no snapshot can see a version born at E.
    if (older) {
      txn->Put(cf, newest_key, TombstoneValue());
    } else {
      txn->Delete(cf, newest_key);
    }
    return;
  }
  if (newest_tomb) return;  // already absent
  if (keep) {
    DeadValue dv;
    dv.birth = newest;
    txn->Put(Cf::kDead, DeadVersionKey(e, cf, newest_key), EncodeDeadValue(dv));
  } else {
    txn->Delete(cf, newest_key);
  }
  if (keep || older) txn->Put(cf, VersionKey(KeyPrefix(newest_key), e), TombstoneValue());
}

}  // namespace

bool IsVersionOf(std::string_view key, std::string_view prefix) {
  return key.size() == prefix.size() + 8 && memcmp(key.data(), prefix.data(), prefix.size()) == 0;
}

Result<bool> NextIsOlderVersion(rocksdb::Iterator* it, std::string_view prefix) {
  it->Next();
  const bool r = it->Valid() && HasPrefixExact(it->key(), prefix);
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  return r;
}

void DeleteVersionRead(Txn* txn, Cf cf, std::string_view newest_key, bool newest_tomb,
                       bool older, Epoch e, const EpochSet& snaps) {
  const Epoch newest = KeyEpoch(newest_key);
  DeleteRead(txn, cf, newest_key, newest_tomb, older,
             newest != e && !newest_tomb && snaps.AnyIn(newest, e), e);
}

Status PutVersion(Txn* txn, Cf cf, std::string_view prefix, Epoch e,
                  const std::optional<std::string_view>& payload, const EpochSet& snaps) {
  auto it = txn->NewVersionIterator(cf);
  // The newest version overall (E is the largest epoch, so seek the first
  // possible version key).
  it->Seek(FirstVersionKey(prefix));
  bool have_newest = false;
  Epoch newest_epoch = 0;
  bool newest_tomb = false;
  std::string newest_key;
  if (it->Valid() && HasPrefixExact(it->key(), prefix)) {
    have_newest = true;
    newest_key = it->key().ToString();
    newest_epoch = KeyEpoch(newest_key);
    newest_tomb = it->value().empty() || it->value()[0] == kTagTombstone;
  }
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  if (have_newest && newest_epoch > e) {
    return Status::Corruption("record version newer than the live epoch");
  }

  const std::string new_key = VersionKey(prefix, e);
  // Whether a version older than the newest stays in the store is asked
  // only when removing: stepping past a key that was rewritten many times
  // in the memtable (a directory's attributes, once per create in it)
  // skips every hidden older write of it, so a Next() on every put made a
  // run of creates in one directory quadratic.
  if (!payload) {
    if (!have_newest) return Status::Ok();  // already absent
    const bool keep = newest_epoch != e && !newest_tomb && snaps.AnyIn(newest_epoch, e);
    // Decide before the batch changes under the iterator; where the answer
    // does not matter (a tombstone or a kept version before E) the step is
    // not taken.
    bool older = false;
    if (newest_epoch == e || (!newest_tomb && !keep)) {
      PSM_ASSIGN_OR_RETURN(older, NextIsOlderVersion(it.get(), prefix));
    }
    DeleteRead(txn, cf, newest_key, newest_tomb, older, keep, e);
    return Status::Ok();
  }
  if (have_newest && newest_epoch != e) {
    if (snaps.AnyIn(newest_epoch, e)) {
      DeadValue dv;
      dv.birth = newest_epoch;
      txn->Put(Cf::kDead, DeadVersionKey(e, cf, newest_key), EncodeDeadValue(dv));
    } else {
      txn->Delete(cf, newest_key);
    }
  }
  // At E: an overwrite in place (no snapshot can see a version born at E).
  txn->Put(cf, new_key, Tagged(*payload));
  return Status::Ok();
}

Result<std::string> LoneTombstone(Txn* txn, Cf cf, std::string_view prefix) {
  auto it = txn->NewVersionIterator(cf);
  it->Seek(FirstVersionKey(prefix));
  if (!it->Valid() || !HasPrefixExact(it->key(), prefix)) {
    PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
    return std::string();
  }
  if (!(it->value().empty() || it->value()[0] == kTagTombstone)) return std::string();
  std::string tomb_key = it->key().ToString();
  it->Next();
  if (it->Valid() && HasPrefixExact(it->key(), prefix)) return std::string();
  PSM_RETURN_IF_ERROR(Status::FromRocks(it->status()));
  return tomb_key;
}

Status DropVersion(Txn* txn, Cf cf, std::string_view versioned_key, std::string* lone) {
  txn->Delete(cf, versioned_key);
  // If what remains is a lone tombstone, it hides nothing.
  PSM_ASSIGN_OR_RETURN(std::string tomb_key, LoneTombstone(txn, cf, KeyPrefix(versioned_key)));
  if (lone) {
    *lone = std::move(tomb_key);
  } else if (!tomb_key.empty()) {
    txn->Delete(cf, tomb_key);
  }
  return Status::Ok();
}

Status DropLoneTombstone(Txn* txn, Cf cf, std::string_view tomb_key) {
  PSM_ASSIGN_OR_RETURN(std::string now, LoneTombstone(txn, cf, KeyPrefix(tomb_key)));
  if (now == tomb_key) txn->Delete(cf, tomb_key);
  return Status::Ok();
}

}  // namespace psm
