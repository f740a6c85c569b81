// A formatted, opened volume in a temporary directory, for core unit tests
// (no FUSE), plus small helpers that drive psm::FileSystem like a caller.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "fs/core/filesystem.h"

namespace psm_test {

struct CoreVolume {
  std::string dir;
  std::unique_ptr<psm::FileSystem> fs;
  psm::Credentials cred;
  bool count_lookups = false;

  explicit CoreVolume(uint64_t size = 64ull << 20, uint64_t chunk_bytes = 1u << 20,
                      uint32_t block_size = 4096) {
    char t[] = "/tmp/psm-core-XXXXXX";
    dir = mkdtemp(t);
    psm::FormatOptions fo;
    fo.size_bytes = size;
    fo.chunk_bytes = chunk_bytes;
    fo.block_size = block_size;
    psm::Status s = psm::Format(dir, fo);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    Open();
  }
  ~CoreVolume() {
    if (fs) (void)fs->Close();
    fs.reset();
    std::filesystem::remove_all(dir);
  }
  void Open() {
    psm::MountOptions o;
    o.commit_interval_ms = 20;
    o.count_lookups = count_lookups;
    auto r = psm::FileSystem::Open(dir, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    fs = std::move(r).value();
  }
  void Remount() {
    REQUIRE(fs->Close().ok());
    fs.reset();
    Open();
  }

  // Creates (or truncates) a file with `data`; returns its node.
  psm::NodeId Put(psm::NodeId parent, const std::string& name, const std::string& data) {
    auto r = fs->Create(parent, name, 0644, O_RDWR, cred);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    if (!data.empty()) {
      auto w = fs->Write(r->second, 0, data.data(), data.size());
      REQUIRE_MESSAGE(w.ok(), w.status().ToString());
    }
    REQUIRE(fs->Release(r->second).ok());
    return r->first.node;
  }
  psm::Status WriteAt(psm::NodeId node, uint64_t off, const std::string& data) {
    auto fh = fs->OpenFile(node, O_RDWR);
    if (!fh.ok()) return fh.status();
    auto w = fs->Write(*fh, off, data.data(), data.size());
    (void)fs->Release(*fh);
    return w.ok() ? psm::Status::Ok() : w.status();
  }
  std::string ReadAll(psm::NodeId node) {
    auto fh = fs->OpenFile(node, O_RDONLY);
    REQUIRE_MESSAGE(fh.ok(), fh.status().ToString());
    auto a = fs->GetAttr(node);
    REQUIRE(a.ok());
    std::string out(a->st.st_size, '\0');
    auto n = fs->Read(*fh, 0, out.size(), out.data());
    REQUIRE(n.ok());
    out.resize(*n);
    REQUIRE(fs->Release(*fh).ok());
    return out;
  }
  psm::NodeId Node(psm::NodeId parent, const std::string& name) {
    auto e = fs->Lookup(parent, name);
    std::string msg = name + ": " + e.status().ToString();
    REQUIRE_MESSAGE(e.ok(), msg);
    return e->node;
  }
  psm::NodeId Mkdir(psm::NodeId parent, const std::string& name) {
    auto e = fs->MkDir(parent, name, 0755, cred);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    return e->node;
  }
  uint64_t FreeBlocks() {
    for (int i = 0; i < 5000 && fs->GetScanStatus().running; ++i) usleep(1000);
    REQUIRE(fs->SyncAll().ok());  // quarantined frees are released at commit
    struct statvfs sv;
    REQUIRE(fs->StatFs(&sv).ok());
    return sv.f_bfree;
  }
  // Runs fsck on the closed volume; reopens it. Returns the problem count.
  uint64_t Fsck(std::string* report = nullptr) {
    REQUIRE(fs->Close().ok());
    fs.reset();
    std::string rep;
    auto r = psm::Fsck(dir, {}, &rep);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    if (*r) MESSAGE(rep);
    if (report) *report = rep;
    Open();
    return *r;
  }
};

// PSMFS_STRESS=N scales loops of stress and model tests (default 1).
inline int StressScale() {
  const char* s = getenv("PSMFS_STRESS");
  int n = s ? atoi(s) : 1;
  return n > 0 ? n : 1;
}

// The seed of a randomized test, printed as "NAME: seed N (set PSMFS_SEED
// to repeat)": PSMFS_SEED when set; otherwise `def` when given (the unit
// model tests: make test repeats the same runs), else a fresh random seed
// (the stress tests: every default run tries other choices). Threads take
// their own generators from it with SeedOf, so a seed fixes every choice
// every thread makes; the interleaving is still the scheduler's.
inline uint64_t TestSeed(std::string_view name, std::optional<uint64_t> def = std::nullopt) {
  uint64_t seed;
  const char* s = getenv("PSMFS_SEED");
  if (s != nullptr && *s != '\0') {
    seed = std::strtoull(s, nullptr, 0);
  } else if (def) {
    seed = *def;
  } else {
    std::random_device rd;
    seed = (uint64_t{rd()} << 32 | rd()) % 1000000000000ull;  // short enough to type
  }
  std::printf("%.*s: seed %llu (set PSMFS_SEED to repeat)\n", static_cast<int>(name.size()),
              name.data(), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  return seed;
}
// An independent seed for stream `k` (a thread, a round) of a test seeded
// with `seed` (splitmix64).
inline uint64_t SeedOf(uint64_t seed, uint64_t k) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (k + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

}  // namespace psm_test
