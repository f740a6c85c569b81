// psmctl is two executables (docs/cli.md, "Two executables"): the front end
// psmctl links only the control client, and runs psmctl-offline in its place
// for what needs the engine. What is checked here: the front end needs no
// RocksDB (its start-up is what makes `psmctl snapshot create` fast; no
// timing here, the benchmark in docs/cli.md measures it), it hands offline
// commands and --help over with their output and exit code intact, and it
// says clearly when psmctl-offline cannot be found. psmctl_cli_test checks
// every command's behaviour through the front end.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/common/mount_fixture.h"

namespace fsys = std::filesystem;
using psm::test::BinDir;
using psm::test::RunProgram;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/psm-frontend-XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fsys::remove_all(path, ec);
  }
};

}  // namespace

// Whether the program at `path` has RocksDB: loads its shared library
// (LD_TRACE_LOADED_OBJECTS makes the dynamic loader list what a program
// needs and exit, what ldd does, without running it), or has it linked in
// (the optimized build links librocksdb.a: CMakeLists.txt), found by a
// string of RocksDB's own that DB::Open logs.
static bool HasRocksDb(const std::string& path, std::string* why) {
  auto t = RunProgram({"env", "LD_TRACE_LOADED_OBJECTS=1", path});
  REQUIRE(t.exit_code == 0);
  *why = t.output;
  if (t.output.find("librocksdb") != std::string::npos) return true;
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes.find("RocksDB version: ") != std::string::npos;
}

TEST_CASE("psmctl, the front end, has no RocksDB; psmctl-offline has it") {
  std::string why;
  CHECK_MESSAGE(!HasRocksDb(BinDir() + "/psmctl", &why), why);
  CHECK_MESSAGE(why.find("libcrypto") == std::string::npos, why);
  CHECK_MESSAGE(HasRocksDb(BinDir() + "/psmctl-offline", &why), why);
}

TEST_CASE("psmctl hands offline commands and --help to psmctl-offline, output and exit intact") {
  TempDir tmp;
  const std::string vol = tmp.path + "/vol";
  auto mk = RunProgram({BinDir() + "/psmctl", "mkfs", vol, "--size", "64M"});
  REQUIRE_MESSAGE(mk.exit_code == 0, mk.output);
  CHECK(mk.output.find("created psmfs volume") != std::string::npos);

  // An unmounted volume: status and snapshot list read it offline.
  auto st = RunProgram({BinDir() + "/psmctl", "status", vol});
  CHECK_MESSAGE(st.exit_code == 0, st.output);
  CHECK(st.output.find("not mounted (read offline") != std::string::npos);
  auto ls = RunProgram({BinDir() + "/psmctl", "snapshot", "list", vol});
  CHECK_MESSAGE(ls.exit_code == 0, ls.output);
  CHECK(ls.output == "no snapshots\n");

  // fsck exits 0 on a clean volume, through the front end as directly.
  CHECK(RunProgram({BinDir() + "/psmctl", "fsck", vol}).exit_code == 0);

  // The top-level help lists the commands only psmctl-offline has.
  auto help = RunProgram({BinDir() + "/psmctl", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("mkfs") != std::string::npos);
  CHECK(help.output.find("receive") != std::string::npos);
  CHECK(help.output == RunProgram({BinDir() + "/psmctl-offline", "--help"}).output);

  // Usage errors keep exit 2 either way.
  CHECK(RunProgram({BinDir() + "/psmctl", "snapshot"}).exit_code == 2);
  CHECK(RunProgram({BinDir() + "/psmctl", "mkfs"}).exit_code == 2);
  CHECK(RunProgram({BinDir() + "/psmctl", "snapshot", "create", vol}).exit_code == 2);
}

TEST_CASE("psmctl without psmctl-offline: served commands work, the rest fail saying why") {
  TempDir tmp;
  const std::string lone = tmp.path + "/psmctl";
  fsys::copy_file(BinDir() + "/psmctl", lone);
  fsys::permissions(lone, fsys::perms::owner_all);

  auto v = RunProgram({lone, "--version"});
  CHECK(v.exit_code == 0);
  CHECK(v.output.rfind("psmctl ", 0) == 0);

  auto mk = RunProgram({lone, "mkfs", tmp.path + "/vol", "--size", "64M"});
  CHECK(mk.exit_code == 1);
  CHECK_MESSAGE(mk.output.find("cannot run psmctl-offline") != std::string::npos, mk.output);
  CHECK(!fsys::exists(tmp.path + "/vol"));
}
