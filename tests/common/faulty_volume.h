// FaultyVolume: a core volume (no FUSE) over a faulty image
// (fs/device/fault_device.h) and a faulty metadata store (meta/fault_fs.h), with a
// power cut that drops every unsynced write of both. Shared by the fault
// injection and restore crash tests.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "fs/device/block_device.h"
#include "fs/device/fault_device.h"
#include "fs/core/filesystem.h"
#include "meta/fault_fs.h"

namespace psm_test {
using namespace psm;

// A volume whose image is a FaultDevice over memory and whose RocksDB runs
// on a FaultInjectionFileSystem; both survive Close/Open like real disks.
struct FaultyVolume {
  using Fault = FaultInjectionFileSystem::Fault;

  std::string dir;
  std::shared_ptr<FaultDevice> dev;
  std::shared_ptr<FaultInjectionFileSystem> ffs;
  std::unique_ptr<FileSystem> fs;
  Credentials cred;
  uint32_t commit_interval_ms;

  // `checksum`: the volume checksums its data blocks (then overwrites of
  // whole live blocks the kernel writes back go in place under a write
  // intent and the rest is redirected; without, every overwrite of live
  // blocks is made in place).
  // `commit_interval_ms`: the committer's background cycle; a test that
  // arms a one-shot fault for the fsync it calls sets it far beyond its own
  // run time, so that no background sync can consume the fault first.
  explicit FaultyVolume(bool checksum = true, uint32_t commit_interval_ms = 20)
      : commit_interval_ms(commit_interval_ms) {
    char t[] = "/tmp/psm-fault-XXXXXX";
    dir = mkdtemp(t);
    dev = std::make_shared<FaultDevice>(NewMemDevice(64ull << 20));
    ffs = std::make_shared<FaultInjectionFileSystem>(rocksdb::FileSystem::Default());
    FormatOptions fo;
    fo.size_bytes = 64ull << 20;
    fo.chunk_bytes = 1u << 20;
    fo.device = dev;
    fo.checksum = checksum;
    Status s = Format(dir, fo);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    Open();
  }
  ~FaultyVolume() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::filesystem::remove_all(dir);
  }
  void Open() {
    MountOptions o;
    o.commit_interval_ms = commit_interval_ms;
    o.device = dev;
    o.meta_fs = ffs;
    auto r = FileSystem::Open(dir, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  // The machine loses power: nothing more reaches either medium, the
  // process goes away, and what was not synced is gone.
  // With `landed_seed`, the kernel had written back a random part of the
  // unsynced image writes before the cut (FaultDevice::DropSomeUnsynced).
  void PowerCut(std::optional<uint64_t> landed_seed = std::nullopt) {
    dev->SetOffline(true);
    ffs->SetActive(false);
    (void)fs->Close();  // fails: the media are gone; must not hang or crash
    fs.reset();
    REQUIRE((landed_seed ? dev->DropSomeUnsynced(*landed_seed) : dev->DropUnsynced()).ok());
    REQUIRE(ffs->DropUnsyncedData().ok());
    dev->ClearFaults();
    dev->SetOffline(false);
    ffs->InjectSyncError(Fault::kNone);
    ffs->InjectWriteError(Fault::kNone);
    ffs->SetActive(true);
    ffs->ResetState();
    Open();
  }
  int Fsck() {
    (void)fs->Close();
    fs.reset();
    FsckOptions fo;
    fo.device = dev;
    std::string report;
    auto r = psm::Fsck(dir, fo, &report);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    if (*r != 0) MESSAGE(report);
    Open();
    return static_cast<int>(*r);
  }
  NodeId Create(const std::string& name) {
    auto r = fs->Create(kRootIno, name, 0644, O_RDWR, cred);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    REQUIRE(fs->Release(r->second).ok());
    return r->first.node;
  }
  // One write call (atomic in the core) of `data` at 0, then optionally fsync.
  Status WriteAll(NodeId n, const std::string& data, bool sync) {
    auto fh = fs->OpenFile(n, O_RDWR);
    if (!fh.ok()) return fh.status();
    auto w = fs->Write(*fh, 0, data.data(), data.size());
    Status s = w.ok() ? Status::Ok() : w.status();
    if (s.ok() && sync) s = fs->Fsync(*fh, false);
    Status r = fs->Release(*fh);
    return s.ok() ? r : s;
  }
  std::string Read(const std::string& name) {
    auto e = fs->Lookup(kRootIno, name);
    if (!e.ok()) return "<" + e.status().ToString() + ">";
    auto fh = fs->OpenFile(e->node, O_RDONLY);
    REQUIRE(fh.ok());
    std::string out(static_cast<size_t>(e->st.st_size), '\0');
    auto r = fs->Read(*fh, 0, out.size(), out.data());
    REQUIRE(r.ok());
    out.resize(*r);
    REQUIRE(fs->Release(*fh).ok());
    return out;
  }
};

}  // namespace psm_test
