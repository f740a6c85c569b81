// The mirror in the core (docs/integrity.md, "Mirror"): reads that heal a
// bad copy from the other side, the scrub of both sides, attach, detach,
// and opening the mirror at mount. The device side (writes to both,
// faults, the resilver) is fs/device/mirror_device.h.
//
// Repairs run under an allocator release hold (as scrub does): no block
// can be allocated again and rewritten while it is being repaired, so a
// repair never writes old bytes over a block's new life; and the copy is
// rewritten only when, under the hold, it still fails and the other copy
// matches the block's checksum as stored then.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "fs/base/crc32c.h"
#include "fs/base/log.h"
#include "fs/core/fs_impl.h"
#include "fs/device/superblock.h"
#include "meta/sync_point.h"

namespace psm {
namespace {

const char* SideName(int s) { return s == 0 ? "image" : "mirror"; }

// Reads [p, p+n) of `side` into buf; ok[k] says whether block k could be
// read (an EIO of the whole range is retried block by block).
void ReadSideBlocks(MirrorDevice* m, int side, BlockNo p, uint64_t n, uint32_t bs, char* buf,
                    std::vector<bool>* ok) {
  ok->assign(n, true);
  if (m->ReadSide(side, p * bs, buf, n * bs).ok()) return;
  for (uint64_t k = 0; k < n; ++k) {
    (*ok)[k] = m->ReadSide(side, (p + k) * bs, buf + k * bs, bs).ok();
  }
}

}  // namespace

Status FileSystem::Impl::ReadBlocksMirrored(BlockNo p, uint64_t n, char* buf,
                                            const BlockUse& use) {
  const std::vector<int> sides = mirror->ReadableSides(p * bs, n * bs);
  if (sides.empty()) return Status::IOError("no copy of the image can serve block " + std::to_string(p));
  const int first = sides[0];
  Status rs = mirror->ReadSide(first, p * bs, buf, n * bs);
  if (rs.ok() && !checksums) return rs;
  std::vector<std::optional<uint32_t>> want;
  if (checksums) {
    PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), p, n, &want, pending_csums.get()));
  } else {
    want.assign(n, std::nullopt);
  }
  std::vector<uint64_t> bad;
  for (uint64_t i = 0; i < n; ++i) {
    if (!rs.ok() || (want[i] && *want[i] != BlockCrc(buf + i * bs, bs))) bad.push_back(i);
  }
  if (bad.empty()) return Status::Ok();
  const int other = sides.size() > 1 ? sides[1] : -1;
  ReleaseHold hold(alloc.get());
  std::string good(bs, '\0'), mine(bs, '\0');
  for (uint64_t i : bad) {
    const BlockNo b = p + i;
    // Read again, with the checksum, under the block's stripe: the first
    // read may have met an overwrite in place between its bytes and its
    // checksum's staging. The repair below runs under it too, so it cannot
    // write old bytes over an overwrite in place.
    BlockGuard g(this, b, 1, /*exclusive=*/false);
    std::vector<std::optional<uint32_t>> now(1);
    if (checksums) PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), b, 1, &now, pending_csums.get()));
    Status m = mirror->ReadSide(first, b * bs, mine.data(), bs);
    if (m.ok() && (!now[0] || *now[0] == BlockCrc(mine.data(), bs) || Unrecovered(b))) {
      memcpy(buf + i * bs, mine.data(), bs);
      continue;
    }
    if (m.ok()) mirror->NoteChecksumErrors(first, 1);
    auto fail = [&]() -> Status {
      if (!m.ok()) return m;
      return ChecksumError(b, use.ino, use.epoch,
                           use.fblock == kNoFileBlock ? kNoFileBlock : use.fblock + i);
    };
    if (other < 0) return fail();
    Status o = mirror->ReadSide(other, b * bs, good.data(), bs);
    // Without a checksum only an unreadable block can be told bad.
    const bool good_ok = o.ok() && (now[0] ? *now[0] == BlockCrc(good.data(), bs) : !m.ok());
    if (!good_ok) {
      if (o.ok() && now[0]) mirror->NoteChecksumErrors(other, 1);
      PSM_LOG(kLogError, "volume %s: physical block %llu is bad on the %s and on the %s",
              sb.uuid.c_str(), static_cast<unsigned long long>(b), SideName(first),
              SideName(other));
      return fail();
    }
    memcpy(buf + i * bs, good.data(), bs);
    Status w = mirror->RepairSide(first, b * bs, good.data(), bs);
    Logf(w.ok() ? kLogWarning : kLogError,
            "volume %s: physical block %llu of inode %llu %s on the %s; served from the %s%s",
            sb.uuid.c_str(), static_cast<unsigned long long>(b),
            static_cast<unsigned long long>(use.ino),
            m.ok() ? "failed its checksum" : "could not be read", SideName(first),
            SideName(other),
            w.ok() ? " and rewritten" : (", and rewriting it failed: " + w.ToString()).c_str());
  }
  return Status::Ok();
}

Status FileSystem::Impl::ScrubMirroredRange(const Range& r, std::vector<BlockNo>* bad,
                                            uint64_t* checked, uint64_t* unverified,
                                            uint64_t* repaired,
                                            std::vector<BlockNo>* rewrite) {
  const std::vector<int> sides = mirror->ReadableSides(r.start * bs, r.len * bs);
  std::vector<std::optional<uint32_t>> want;
  PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), r.start, r.len, &want, pending_csums.get()));
  std::string data[2];
  std::vector<bool> readable[2];
  for (size_t i = 0; i < sides.size(); ++i) {
    data[i].resize(r.len * bs);
    ReadSideBlocks(mirror, sides[i], r.start, r.len, bs, data[i].data(), &readable[i]);
  }
  for (uint64_t k = 0; k < r.len; ++k) {
    const BlockNo b = r.start + k;
    bool good[2] = {false, false};
    bool all_good = true;
    for (size_t i = 0; i < sides.size(); ++i) {
      good[i] = readable[i][k] &&
                (!want[k] || *want[k] == BlockCrc(data[i].data() + k * bs, bs));
      all_good = all_good && good[i];
    }
    // A copy that failed: read again, with its checksum, under the block's
    // stripe (an overwrite in place may have run between the reads), and
    // repair under it.
    std::optional<BlockGuard> guard;
    if (!all_good) {
      guard.emplace(this, b, 1, /*exclusive=*/false);
      std::vector<std::optional<uint32_t>> now;
      PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), b, 1, &now, pending_csums.get()));
      want[k] = now[0];
      for (size_t i = 0; i < sides.size(); ++i) {
        char* at = data[i].data() + k * bs;
        readable[i][k] = mirror->ReadSide(sides[i], b * bs, at, bs).ok();
        good[i] = readable[i][k] && (!want[k] || *want[k] == BlockCrc(at, bs));
        if (readable[i][k] && !good[i]) mirror->NoteChecksumErrors(sides[i], 1);
      }
    }
    bool everywhere = true;
    for (size_t i = 0; i < sides.size(); ++i) everywhere = everywhere && readable[i][k];
    if (!want[k] && everywhere) {
      // No checksum, readable everywhere: nothing tells good from bad. With
      // --rewrite, copies that agree get one.
      const bool agree =
          sides.size() < 2 || data[0].compare(k * bs, bs, data[1], k * bs, bs) == 0;
      if (rewrite && agree) {
        rewrite->push_back(b);  // RewriteChecksums reads and compares them again
      } else {
        ++*unverified;
      }
      continue;
    }
    ++*checked;  // an unreadable copy is damage (or a repair) as a failed checksum is
    int src = -1;
    for (size_t i = 0; i < sides.size(); ++i) {
      if (good[i]) src = static_cast<int>(i);
    }
    if (src < 0) {
      bad->push_back(b);
      continue;
    }
    for (size_t i = 0; i < sides.size(); ++i) {
      if (good[i]) continue;
      Status w = mirror->RepairSide(sides[i], b * bs, data[src].data() + k * bs, bs);
      Logf(w.ok() ? kLogWarning : kLogError,
              "volume %s: scrub: physical block %llu %s on the %s: %s from the %s",
              sb.uuid.c_str(), static_cast<unsigned long long>(b),
              readable[i][k] ? "failed its checksum" : "could not be read", SideName(sides[i]),
              w.ok() ? "rewritten" : ("rewriting it failed (" + w.ToString() + ")").c_str(),
              SideName(sides[src]));
      if (w.ok()) ++*repaired;
    }
  }
  return Status::Ok();
}

Status FileSystem::Impl::RewriteChecksums(const std::vector<BlockNo>& blocks,
                                          uint64_t* rewritten, uint64_t* unverified) {
  std::string first(bs, '\0'), other(bs, '\0');
  for (BlockNo b : blocks) {
    BlockGuard g(this, b, 1, /*exclusive=*/false);
    std::vector<std::optional<uint32_t>> have;
    PSM_RETURN_IF_ERROR(LoadChecksums(store.get(), b, 1, &have, pending_csums.get()));
    if (have[0]) continue;  // an overwrite in place gave it one meanwhile
    const std::vector<int> sides = mirror->ReadableSides(b * bs, bs);
    bool agree = !sides.empty() && mirror->ReadSide(sides[0], b * bs, first.data(), bs).ok();
    for (size_t i = 1; agree && i < sides.size(); ++i) {
      agree = mirror->ReadSide(sides[i], b * bs, other.data(), bs).ok() && other == first;
    }
    if (!agree) {
      ++*unverified;
      continue;
    }
    // Tests hold the rewrite here, so that an overwrite in place would land
    // between the read and the commit if the stripe did not keep it out.
    PSM_SYNC_POINT("RewriteChecksums:BeforeCommit");
    Txn txn(store.get());
    PutChecksum(&txn, pending_csums.get(), b, BlockCrc(first.data(), bs));
    PSM_RETURN_IF_ERROR(txn.Commit());
    ++*rewritten;
  }
  return Status::Ok();
}

// ---- attach / detach ----

Status FileSystem::MirrorAttach(const std::string& path_in, bool force) {
  Impl* m = impl_.get();
  if (m->opts.read_only) return Status::ReadOnly("the volume is mounted read-only");
  namespace fsys = std::filesystem;
  std::error_code ec;
  const std::string path = fsys::absolute(path_in, ec).lexically_normal().string();
  if (path.empty() || ec) return Status::Invalid("bad mirror path '" + path_in + "'");
  const std::string image = ImagePath(m->dir);
  if (fsys::equivalent(path, image, ec) ||
      (fsys::exists(image, ec) && fsys::canonical(image, ec).string() == path)) {
    return Status::Invalid(path + " is the volume's own image");
  }
  if (fsys::is_directory(path, ec)) return Status::Invalid(path + " is a directory");
  struct stat st;
  const bool exists = ::stat(path.c_str(), &st) == 0;
  const bool blockdev = exists && S_ISBLK(st.st_mode);
  if (exists && !blockdev && !S_ISREG(st.st_mode)) {
    return Status::Invalid(path + " is neither a file nor a block device");
  }
  const uint64_t need = m->mirror->size();
  std::unique_ptr<BlockDevice> d;
  if (m->opts.mirror_device) {
    d = std::make_unique<SharedDevice>(m->opts.mirror_device);
  } else {
    if (exists && !force) {
      std::string head(kSuperBytes, '\0');
      auto probe = OpenPosixDevice(path, false, 0);
      if (!probe.ok()) return probe.status();
      Superblock other;
      if ((*probe)->size() >= kSuperBytes && (*probe)->Read(0, head.data(), kSuperBytes).ok() &&
          DecodeSuperblock(head, &other).ok() && other.uuid != m->sb.uuid) {
        return Status::Invalid(path + " holds another psmfs volume (" + other.uuid +
                               "); use --force to overwrite it");
      }
    }
    // A file is created (sparse) or resized to the image's size.
    PSM_ASSIGN_OR_RETURN(d, OpenPosixDevice(path, !blockdev, need));
  }
  if (d->size() < need) {
    return Status::NoSpace(path + " holds " + std::to_string(d->size()) +
                           " bytes, less than the image's " + std::to_string(need));
  }
  PSM_RETURN_IF_ERROR(m->mirror->Attach(std::move(d), path));
  m->mirror->StartResilver(m->opts.resilver_rate);
  return Status::Ok();
}

Status FileSystem::MirrorDetach() {
  if (impl_->opts.read_only) return Status::ReadOnly("the volume is mounted read-only");
  return impl_->mirror->Detach();
}

Status FileSystem::MirrorWait() { return impl_->mirror->WaitResilver(); }

// ---- at mount ----

Status OpenMirror(const std::string& dir, const MountOptions& opts, MirrorDevice* md) {
  MirrorState ms;
  Status ls = LoadMirrorState(MirrorStatePath(dir), &ms);
  if (ls.Is(Code::kNotFound)) return Status::Ok();
  if (!ls.ok()) return Status::Corruption(ls.message());
  std::unique_ptr<BlockDevice> d;
  std::string reason;
  if (opts.mirror_device) {
    d = std::make_unique<SharedDevice>(opts.mirror_device);
  } else {
    auto r = OpenPosixDevice(ms.path, false, 0);
    if (r.ok()) {
      d = std::move(r).value();
    } else {
      reason = r.status().ToString();
    }
  }
  // Where both block 0s should hold the superblock, they must name the same
  // volume: a disk swapped for another volume's is no copy of this one.
  auto uuid_at = [](BlockDevice* dev) -> std::string {
    std::string head(kSuperBytes, '\0');
    Superblock sb;
    if (dev->size() < kSuperBytes || !dev->Read(0, head.data(), kSuperBytes).ok() ||
        !DecodeSuperblock(head, &sb).ok()) {
      return "";
    }
    return sb.uuid;
  };
  if (d && (ms.stale != 1 || ms.cursor >= kSuperBytes)) {
    const std::string mine = uuid_at(md->Side0());
    const std::string theirs = uuid_at(d.get());
    if (theirs.empty() || (!mine.empty() && mine != theirs)) {
      reason = theirs.empty() ? "it holds no psmfs superblock"
                              : "it holds another volume (" + theirs + ")";
      d.reset();
    }
  }
  return md->SetUp(ms, std::move(d), reason, opts.read_only);
}

}  // namespace psm
