#include "tests/common/psm_test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "tests/common/mount_fixture.h"

namespace psm::testutil {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::string ScratchRoot() {
  std::string s = Env("PSMFS_TEST_TMP");
  if (s.empty()) {
    std::string src = Env("PSMFS_SOURCE_DIR");
    s = (src.empty() ? std::filesystem::current_path().string() : src) + "/var/test";
  }
  std::filesystem::create_directories(s);
  return s;
}

bool KeepTmp() {
  std::string s = Env("PSMFS_KEEP_TMP");
  return !s.empty() && s != "0";
}

bool SelfTest() { return Env("PSMFS_SELFTEST") == "1"; }

std::string MakeScratchDir(std::string_view tag) {
  std::string tmpl = ScratchRoot() + "/" + std::string(tag) + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
    std::abort();
  }
  chmod(buf.data(), 0755);
  return buf.data();
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

uint64_t SeedFromEnv(std::string_view test_name, uint64_t def) {
  uint64_t seed = def;
  std::string s = Env("PSMFS_SEED");
  if (!s.empty()) seed = std::strtoull(s.c_str(), nullptr, 0);
  std::printf("%.*s: seed %llu (set PSMFS_SEED to repeat)\n", static_cast<int>(test_name.size()),
              test_name.data(), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  return seed;
}

double StressFromEnv() {
  std::string s = Env("PSMFS_STRESS");
  if (s.empty()) return 1.0;
  double v = std::strtod(s.c_str(), nullptr);
  return v > 0 ? v : 1.0;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

bool FsckClean(const psm::test::MountedVolume& mv, std::string* report) {
  psm::test::ProgramResult r =
      psm::test::RunProgram({psm::test::BinDir() + "/psmctl", "fsck", mv.vol}, 600);
  *report = "psmctl fsck " + mv.vol + " -> exit " + std::to_string(r.exit_code) +
            (r.timed_out ? " (timed out)" : "") + "\n" + r.output;
  return r.ok();
}

}  // namespace psm::testutil
