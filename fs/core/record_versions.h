// Small helpers shared by the code that compares a record at two epochs
// (fs_restore.cc, fs_send.cc): one version as read, and the name of a
// dentry or xattr record from its prefix.
#pragma once

#include <string>
#include <string_view>

#include "meta/keys.h"

namespace psm {

// One record's version at an epoch: absent, or a payload written at `ver`.
struct Ver {
  bool has = false;
  Epoch ver = 0;
  std::string payload;
  bool SameAs(const Ver& o) const { return has == o.has && (!has || payload == o.payload); }
};

// Sets *v from a versioned value (tag + payload) written at epoch e.
inline void SetVer(Ver* v, Epoch e, std::string_view value) {
  v->ver = e;
  v->has = !value.empty() && value[0] == kTagValue;
  if (v->has) v->payload.assign(value.substr(1));
}

// BE(ino) name 0x00 -> name.
inline std::string_view NameOfPrefix(std::string_view prefix) {
  std::string_view n = prefix.substr(8);
  if (!n.empty() && n.back() == '\0') n.remove_suffix(1);
  return n;
}

}  // namespace psm
