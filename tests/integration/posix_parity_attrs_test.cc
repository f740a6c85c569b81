// POSIX parity of metadata: ownership, set-ID bits, permission checks as
// other uids, the sticky bit, timestamps and extended attributes. Each
// scenario runs in a native directory and in a psmfs mount and the logs
// must be equal (see tests/common/parity_trace.h and posix_parity_test.cc).
// Most of these scenarios need root (chown, other uids); they are skipped
// with a message otherwise.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <string>

#include "tests/common/parity_harness.h"
#include "tests/common/parity_trace.h"

using namespace psm::testutil;

namespace {

std::string Pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

void Ownership(Trace& t) {
  for (const char* n : {"f", "f2", "f3", "suid"}) {
    SYS(t, close(open(t.P(n).c_str(), O_CREAT | O_WRONLY, 0644)));
  }
  SYS(t, chmod(t.P("f").c_str(), 04755));
  t.Stat("f");
  SYS(t, chmod(t.P("f").c_str(), 07777));
  t.Stat("f");
  SYS(t, chmod(t.P("f").c_str(), 0));
  t.Stat("f");
  SYS(t, chown(t.P("f").c_str(), 1000, 1000));
  SYS(t, chown(t.P("f").c_str(), -1, -1));
  t.Stat("f");
  SYS(t, chmod(t.P("f2").c_str(), 06755));
  SYS(t, chown(t.P("f2").c_str(), 1001, -1));  // clears set-user-ID and set-group-ID
  t.Stat("f2");
  SYS(t, chmod(t.P("f3").c_str(), 02745));  // set-group-ID without group-exec
  SYS(t, chown(t.P("f3").c_str(), -1, 1001));
  t.Stat("f3");
  int fd = SYSFD(t, open(t.P("f3"), O_RDONLY));
  SYS(t, fchmod(fd, 0640));
  SYS(t, fchown(fd, 5, 6));
  SYS(t, close(fd));
  t.Stat("f3");
  // A write by someone else clears set-user-ID.
  SYS(t, chmod(t.P("suid").c_str(), 04777));
  t.AsUser(1000, 1000, [](Trace& c) {
    int fd = SYSFD(c, open(c.P("suid"), O_WRONLY));
    SYS(c, write(fd, "w", 1));
    SYS(c, close(fd));
  });
  t.Stat("suid");
  // Non-root owners: chmod g+s on a file of a foreign group drops S_ISGID.
  SYS(t, chown(t.P("f"), 1000, 0));
  t.AsUser(1000, 1000, [](Trace& c) {
    SYS(c, chmod(c.P("f").c_str(), 02755));
    c.Stat("f");
    SYS(c, chown(c.P("f").c_str(), 1001, -1));  // EPERM
    SYS(c, chown(c.P("f").c_str(), -1, 1000));  // own group: fine
    SYS(c, chown(c.P("f").c_str(), -1, 0));     // EPERM
    SYS(c, chmod(c.P("f2").c_str(), 0777));     // not the owner: EPERM
  });
  t.Tree();
}

// A valid file capability (struct vfs_cap_data, revision 2): cap_net_raw
// permitted and effective. The kernel checks the format of this xattr.
std::string FileCapability() {
  const uint32_t v[5] = {0x02000000u | 1u /* VFS_CAP_REVISION_2 | EFFECTIVE */, 1u << 13, 0, 0,
                         0};
  return std::string(reinterpret_cast<const char*>(v), sizeof(v));
}

// Set-ID bits and file capabilities when a file changes, as Linux clears
// them: write, append, O_DIRECT write, ftruncate, truncate, open(O_TRUNC)
// and fallocate by
// a user without CAP_FSETID, the same by root, chown and chown(f, -1, -1).
// Runs on the default mount (FUSE_HANDLE_KILLPRIV_V2: psmfs clears the
// bits the requests ask it to), without the writeback cache (every write is
// a WRITE that carries the request), and with nokillpriv_v2 (the kernel
// computes the new mode and sends it).
void KillPriv(Trace& t) {
  struct Kind {
    const char* name;
    mode_t mode;
    gid_t gid;  // the writer is uid 1000, gid 1000
  };
  const Kind kinds[] = {
      {"both", 06777, 0},      // set-UID + set-GID + group-exec: both go
      {"suid", 04766, 0},      // set-UID alone
      {"sgid-member", 02766, 1000},  // set-GID without group-exec, writer in the group: stays
      {"sgid-other", 02766, 0},      // ... writer not in the group: goes
      {"plain", 0766, 0},
  };
  using Op = void (*)(Trace&, const std::string&);
  struct NamedOp {
    const char* name;
    Op op;
  };
  const NamedOp ops[] = {
      {"write",
       [](Trace& c, const std::string& f) {
         int fd = SYSFD(c, open(c.P(f), O_WRONLY));
         SYS(c, write(fd, "w", 1));
         SYS(c, write(fd, "x", 1));  // the second write finds nothing to clear
         SYS(c, close(fd));
       }},
      {"pwrite-append",
       [](Trace& c, const std::string& f) {
         int fd = SYSFD(c, open(c.P(f), O_WRONLY | O_APPEND));
         SYS(c, write(fd, "tail", 4));
         SYS(c, close(fd));
       }},
      {"odirect",
       [](Trace& c, const std::string& f) {
         void* block = nullptr;
         if (posix_memalign(&block, 4096, 4096) != 0) return;
         memset(block, 'd', 4096);
         int fd = SYSFD(c, open(c.P(f), O_WRONLY | O_DIRECT));
         SYS(c, pwrite(fd, block, 4096, 0));
         SYS(c, close(fd));
         free(block);
       }},
      {"ftruncate",
       [](Trace& c, const std::string& f) {
         int fd = SYSFD(c, open(c.P(f), O_WRONLY));
         SYS(c, ftruncate(fd, 3));
         SYS(c, close(fd));
       }},
      {"truncate", [](Trace& c, const std::string& f) { SYS(c, truncate(c.P(f), 8192)); }},
      {"otrunc",
       [](Trace& c, const std::string& f) { SYS(c, close(open(c.P(f), O_WRONLY | O_TRUNC))); }},
      {"fallocate",
       [](Trace& c, const std::string& f) {
         int fd = SYSFD(c, open(c.P(f), O_WRONLY));
         SYS(c, fallocate(fd, 0, 0, 16384));
         SYS(c, close(fd));
       }},
  };
  auto make = [](Trace& c, const std::string& f, mode_t mode, gid_t gid) {
    int fd = SYSFD(c, open(c.P(f), O_CREAT | O_WRONLY, 0600));
    SYS(c, write(fd, "original", 8));
    SYS(c, close(fd));
    SYS(c, chown(c.P(f), 0, gid));
    SYS(c, chmod(c.P(f), mode));
  };
  for (const NamedOp& op : ops) {
    for (const Kind& k : kinds) {
      const std::string f = std::string(op.name) + "." + k.name;
      make(t, f, k.mode, k.gid);
      t.AsUser(1000, 1000, [&](Trace& c) { op.op(c, f); });
      t.Stat(f);
      // Root (CAP_FSETID) keeps the bits.
      const std::string r = std::string(op.name) + ".root." + k.name;
      make(t, r, k.mode, k.gid);
      op.op(t, r);
      t.Stat(r);
    }
  }
  // chown by root: set-UID always goes, set-GID with group-exec; a
  // directory keeps both; chown(f, -1, -1) counts as a chown.
  struct ChownCase {
    const char* name;
    mode_t mode;
    uid_t uid;
    gid_t gid;
  };
  const ChownCase chowns[] = {{"chown.both", 06755, 1000, static_cast<gid_t>(-1)},
                              {"chown.gid", 06755, static_cast<uid_t>(-1), 1000},
                              {"chown.sgid-nox", 02745, 1000, 1000},
                              {"chown.same", 06755, static_cast<uid_t>(-1),
                               static_cast<gid_t>(-1)},
                              {"chown.same-nox", 02745, static_cast<uid_t>(-1),
                               static_cast<gid_t>(-1)}};
  for (const ChownCase& c : chowns) {
    make(t, c.name, c.mode, 0);
    struct stat before {}, after {};
    SYS(t, lstat(t.P(c.name), &before));
    struct timespec pause = {0, 20 * 1000 * 1000};  // file times tick in 4 ms steps
    nanosleep(&pause, nullptr);
    SYS(t, chown(t.P(c.name), c.uid, c.gid));
    t.Stat(c.name);
    SYS(t, lstat(t.P(c.name), &after));
    t.Check(std::string(c.name) + " ctime changed",
            after.st_ctim.tv_sec != before.st_ctim.tv_sec ||
                after.st_ctim.tv_nsec != before.st_ctim.tv_nsec);
  }
  SYS(t, mkdir(t.P("chown.dir"), 0755));
  SYS(t, chmod(t.P("chown.dir"), 06755));
  SYS(t, chown(t.P("chown.dir"), 1000, 1000));
  t.Stat("chown.dir");
  // The owner (not root) changes the group to their own: set-UID goes.
  make(t, "chown.owner", 06755, 0);
  SYS(t, chown(t.P("chown.owner"), 1000, 0));
  SYS(t, chmod(t.P("chown.owner"), 06755));
  t.AsUser(1000, 1000, [](Trace& c) { SYS(c, chown(c.P("chown.owner"), -1, 1000)); });
  t.Stat("chown.owner");
  // File capabilities go on every write, truncate and chown, root's too —
  // also when set again after the kernel learnt the file had none.
  const std::string cap = FileCapability();
  make(t, "cap", 0777, 0);
  for (int round = 0; round < 2; round++) {
    SYS(t, setxattr(t.P("cap"), "security.capability", cap.data(), cap.size(), 0));
    t.Xattrs("cap");
    int fd = SYSFD(t, open(t.P("cap"), O_WRONLY));
    SYS(t, pwrite(fd, "c", 1, 0));
    SYS(t, close(fd));
    t.Xattrs("cap");
  }
  SYS(t, setxattr(t.P("cap"), "security.capability", cap.data(), cap.size(), 0));
  SYS(t, truncate(t.P("cap"), 1));
  t.Xattrs("cap");
  SYS(t, setxattr(t.P("cap"), "security.capability", cap.data(), cap.size(), 0));
  SYS(t, chown(t.P("cap"), 1000, -1));
  t.Xattrs("cap");
  SYS(t, chown(t.P("cap"), 0, -1));
  SYS(t, setxattr(t.P("cap"), "security.capability", cap.data(), cap.size(), 0));
  t.AsUser(1000, 1000, [](Trace& c) {
    int fd = SYSFD(c, open(c.P("cap"), O_WRONLY));
    SYS(c, write(fd, "u", 1));
    SYS(c, close(fd));
  });
  t.Xattrs("cap");
  t.Tree();
}

void Permissions(Trace& t) {
  SYS(t, close(open(t.P("p000"), O_CREAT | O_WRONLY, 0)));
  SYS(t, close(open(t.P("p644"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, close(open(t.P("p666"), O_CREAT | O_WRONLY, 0666)));
  SYS(t, chmod(t.P("p666"), 0666));  // the umask took 022 away
  SYS(t, mkdir(t.P("private"), 0700));
  SYS(t, close(open(t.P("private/x"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, mkdir(t.P("pub"), 0755));
  int fd = SYSFD(t, open(t.P("p000"), O_RDWR));  // root overrides
  SYS(t, close(fd));
  t.AsUser(1000, 1000, [](Trace& c) {
    SYSFD(c, open(c.P("p000"), O_RDONLY));
    SYSFD(c, open(c.P("p000"), O_WRONLY));
    SYS(c, access(c.P("p000").c_str(), R_OK));
    struct stat st;
    SYS(c, stat(c.P("p000").c_str(), &st));
    SYSFD(c, open(c.P("p644"), O_RDONLY));
    SYSFD(c, open(c.P("p644"), O_WRONLY));
    SYSFD(c, open(c.P("private/x"), O_RDONLY));
    SYSFD(c, open(c.P("private"), O_RDONLY | O_DIRECTORY));
    SYS(c, stat(c.P("private/x").c_str(), &st));
    SYSFD(c, open(c.P("pub/new"), O_CREAT | O_WRONLY, 0644));
    SYS(c, mkdir(c.P("pub/newdir"), 0755));
    SYS(c, unlink(c.P("p644").c_str()));
    SYS(c, rename(c.P("p644").c_str(), c.P("pub/p").c_str()));
    SYS(c, chmod(c.P("p644").c_str(), 0777));
    SYS(c, chown(c.P("p644").c_str(), 1000, 1000));
    SYS(c, truncate(c.P("p644").c_str(), 0));
    SYS(c, utimensat(AT_FDCWD, c.P("p644").c_str(), nullptr, 0));  // EACCES
    struct timespec ts[2] = {{1, 0}, {2, 0}};
    SYS(c, utimensat(AT_FDCWD, c.P("p666").c_str(), ts, 0));       // EPERM: not owner
    SYS(c, utimensat(AT_FDCWD, c.P("p666").c_str(), nullptr, 0));  // write access suffices
    SYS(c, setxattr(c.P("p644").c_str(), "user.x", "1", 1, 0));    // EACCES
    SYS(c, setxattr(c.P("p666").c_str(), "user.x", "1", 1, 0));
    SYS(c, setxattr(c.P("p666").c_str(), "trusted.x", "1", 1, 0));  // EPERM
    int fd = SYSFD(c, open(c.P("p666"), O_WRONLY | O_TRUNC));
    SYS(c, write(fd, "mine", 4));
    SYS(c, close(fd));
  });
  t.Tree();
}

void Sticky(Trace& t) {
  SYS(t, mkdir(t.P("st"), 0777));
  SYS(t, chmod(t.P("st").c_str(), 01777));
  SYS(t, close(open(t.P("st/root"), O_CREAT | O_WRONLY, 0666)));
  t.AsUser(1001, 1001, [](Trace& c) {
    SYS(c, close(open(c.P("st/a1").c_str(), O_CREAT | O_WRONLY, 0666)));
    SYS(c, chmod(c.P("st/a1"), 0666));
    SYS(c, unlink(c.P("st/root").c_str()));  // EPERM: not ours
  });
  t.AsUser(1002, 1002, [](Trace& c) {
    SYS(c, unlink(c.P("st/a1").c_str()));                          // EPERM
    SYS(c, rename(c.P("st/a1").c_str(), c.P("st/mine").c_str()));  // EPERM
    SYS(c, close(open(c.P("st/b2").c_str(), O_CREAT | O_WRONLY, 0666)));
    SYS(c, rename(c.P("st/b2").c_str(), c.P("st/a1").c_str()));  // EPERM: replaces a1
    int fd = SYSFD(c, open(c.P("st/a1"), O_WRONLY | O_APPEND));  // writable: 0666
    SYS(c, write(fd, "2", 1));
    SYS(c, close(fd));
    SYS(c, unlink(c.P("st/b2").c_str()));
  });
  t.AsUser(1001, 1001,
           [](Trace& c) { SYS(c, rename(c.P("st/a1").c_str(), c.P("st/a3").c_str())); });
  t.Tree();
  SYS(t, unlink(t.P("st/a3").c_str()));  // root may
}

void Times(Trace& t) {
  SYS(t, close(open(t.P("f"), O_CREAT | O_WRONLY, 0644)));
  SYS(t, symlink("f", t.P("l").c_str()));
  struct timespec ts[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
  SYS(t, utimensat(AT_FDCWD, t.P("f").c_str(), ts, 0));
  t.Times("f");
  struct timespec omit[2] = {{0, UTIME_OMIT}, {1300000000, 5}};
  SYS(t, utimensat(AT_FDCWD, t.P("f").c_str(), omit, 0));
  t.Times("f");
  struct timespec neg[2] = {{-1, 5}, {(1LL << 32) + 5, 999999999}};
  SYS(t, utimensat(AT_FDCWD, t.P("f").c_str(), neg, 0));
  t.Times("f");
  struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
  SYS(t, utimensat(AT_FDCWD, t.P("f").c_str(), bad, 0));  // EINVAL
  SYS(t, utimensat(AT_FDCWD, t.P("l").c_str(), ts, AT_SYMLINK_NOFOLLOW));
  t.Times("l");
  t.Times("f");
  struct stat before, after;
  lstat(t.P("f").c_str(), &before);
  struct timespec t0, t1;
  clock_gettime(CLOCK_REALTIME, &t0);
  struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  SYS(t, utimensat(AT_FDCWD, t.P("f").c_str(), now, 0));
  clock_gettime(CLOCK_REALTIME, &t1);
  lstat(t.P("f").c_str(), &after);
  auto ns = [](const struct timespec& x) { return x.tv_sec * 1000000000LL + x.tv_nsec; };
  // The kernel's clock is coarse (jiffies): allow 20 ms before t0.
  t.Check("UTIME_NOW atime within the call",
          ns(after.st_atim) >= ns(t0) - 20000000 && ns(after.st_atim) <= ns(t1));
  t.Check("UTIME_OMIT kept mtime", ns(after.st_mtim) == ns(before.st_mtim));
  t.Check("ctime moved", ns(after.st_ctim) >= ns(before.st_ctim));
  int fd = SYSFD(t, open(t.P("f"), O_WRONLY));
  SYS(t, futimens(fd, ts));
  t.Times("f");
  SYS(t, write(fd, "x", 1));
  SYS(t, close(fd));
  lstat(t.P("f").c_str(), &after);
  t.Check("write moved mtime past the explicit one", ns(after.st_mtim) > ns(ts[1]) + 1000000000LL);
  SYS(t, chmod(t.P("f").c_str(), 0600));
  struct stat c2;
  lstat(t.P("f").c_str(), &c2);
  t.Check("chmod moved ctime", ns(c2.st_ctim) >= ns(after.st_ctim));
}

void Xattrs(Trace& t) {
  SYS(t, close(open(t.P("f"), O_CREAT | O_WRONLY, 0644)));
  const char* f = nullptr;
  std::string fp = t.P("f");
  f = fp.c_str();
  char buf[4096];
  SYS(t, setxattr(f, "user.a", "1", 1, XATTR_CREATE));
  SYS(t, setxattr(f, "user.a", "1", 1, XATTR_CREATE));   // EEXIST
  SYS(t, setxattr(f, "user.b", "1", 1, XATTR_REPLACE));  // ENODATA
  SYS(t, setxattr(f, "user.a", "22", 2, XATTR_REPLACE));
  SYS(t, getxattr(f, "user.a", nullptr, 0));  // size probe
  SYS(t, getxattr(f, "user.a", buf, 1));      // ERANGE
  SYS(t, getxattr(f, "user.a", buf, sizeof buf));
  SYS(t, getxattr(f, "user.none", buf, sizeof buf));  // ENODATA
  SYS(t, setxattr(f, "trusted.t", "tt", 2, 0));
  SYS(t, setxattr(f, "security.s", "ss", 2, 0));
  SYS(t, setxattr(f, "user.empty", "", 0, 0));
  SYS(t, getxattr(f, "user.empty", buf, sizeof buf));
  std::string v2000 = Pattern(2000, 5);
  SYS(t, setxattr(f, "user.big", v2000.data(), v2000.size(), 0));
  std::string v65537(65537, 'v');
  SYS(t, setxattr(f, "user.huge", v65537.data(), v65537.size(), 0));  // E2BIG
  std::string long_name = "user." + std::string(251, 'n');            // 256 bytes
  SYS(t, setxattr(f, long_name.c_str(), "1", 1, 0));                  // ERANGE
  SYS(t, setxattr(f, "nonsense.x", "1", 1, 0));                       // EOPNOTSUPP
  SYS(t, listxattr(f, nullptr, 0));
  SYS(t, listxattr(f, buf, 1));  // ERANGE
  t.Xattrs("f");
  SYS(t, removexattr(f, "user.a"));
  SYS(t, removexattr(f, "user.a"));  // ENODATA
  int fd = SYSFD(t, open(f, O_RDONLY));
  SYS(t, fsetxattr(fd, "user.fd", "via fd", 6, 0));
  SYS(t, fgetxattr(fd, "user.fd", buf, sizeof buf));
  SYS(t, close(fd));
  SYS(t, mkdir(t.P("d"), 0755));
  SYS(t, setxattr(t.P("d").c_str(), "user.dir", "d", 1, 0));
  SYS(t, symlink("f", t.P("l").c_str()));
  SYS(t, lsetxattr(t.P("l").c_str(), "user.l", "1", 1, 0));  // EPERM on symlinks
  SYS(t, lsetxattr(t.P("l").c_str(), "trusted.l", "1", 1, 0));
  SYS(t, rename(f, t.P("g").c_str()));               // xattrs follow the inode
  SYS(t, close(open(f, O_CREAT | O_WRONLY, 0644)));  // a new inode has none
  t.Tree();
}

// POSIX ACLs through their xattr form (the acl package's tools are not
// installed; setfacl writes exactly these bytes). The kernel enforces them;
// the file system keeps the mode in step and inherits default ACLs.
struct AclEnt {
  uint16_t tag, perm;
  uint32_t id;
};
std::string AclXattr(std::initializer_list<AclEnt> ents) {
  std::string o;
  auto put = [&o](uint64_t v, int n) {
    for (int i = 0; i < n; i++) o.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(2, 4);
  for (const AclEnt& e : ents) {
    put(e.tag, 2);
    put(e.perm, 2);
    put(e.id, 4);
  }
  return o;
}
constexpr uint16_t kUserObj = 1, kUser = 2, kGroupObj = 4, kGroup = 8, kMask = 0x10, kOther = 0x20;
constexpr uint32_t kNoId = 0xffffffffu;

void Acls(Trace& t) {
  const std::string access = "system.posix_acl_access", dflt = "system.posix_acl_default";
  SYS(t, mkdir(t.P("d").c_str(), 0750));
  SYS(t, close(open(t.P("d/secret").c_str(), O_CREAT | O_WRONLY, 0600)));
  // Named user 1000 may enter d and read d/secret; the mask limits it.
  std::string a1 = AclXattr({{kUserObj, 7, kNoId}, {kUser, 5, 1000}, {kGroupObj, 5, kNoId},
                             {kMask, 5, kNoId}, {kOther, 0, kNoId}});
  SYS(t, setxattr(t.P("d").c_str(), access.c_str(), a1.data(), a1.size(), 0));
  t.Stat("d");  // group bits are the mask
  std::string a2 = AclXattr({{kUserObj, 6, kNoId}, {kUser, 6, 1000}, {kGroupObj, 0, kNoId},
                             {kMask, 4, kNoId}, {kOther, 0, kNoId}});
  SYS(t, setxattr(t.P("d/secret").c_str(), access.c_str(), a2.data(), a2.size(), 0));
  t.Stat("d/secret");
  t.AsUser(1000, 1000, [](Trace& c) {
    SYSFD(c, open(c.P("d/secret").c_str(), O_RDONLY));  // ok: user entry, masked to r
    SYSFD(c, open(c.P("d/secret").c_str(), O_WRONLY));  // EACCES: mask takes w away
    SYSFD(c, open(c.P("d/new").c_str(), O_CREAT | O_WRONLY, 0644));  // EACCES: d is r-x
  });
  t.AsUser(1001, 1001, [](Trace& c) {
    SYSFD(c, open(c.P("d/secret").c_str(), O_RDONLY));  // EACCES: other has nothing
  });
  // chmod rewrites the mask (and the owner and other entries).
  SYS(t, chmod(t.P("d/secret").c_str(), 0660));
  t.Stat("d/secret");
  t.AsUser(1000, 1000, [](Trace& c) {
    SYSFD(c, open(c.P("d/secret").c_str(), O_WRONLY));  // ok now
  });
  // Default ACL: inherited by new files and directories; umask ignored.
  std::string d1 = AclXattr({{kUserObj, 7, kNoId}, {kUser, 7, 1000}, {kGroupObj, 5, kNoId},
                             {kGroup, 7, 1001}, {kMask, 7, kNoId}, {kOther, 5, kNoId}});
  SYS(t, setxattr(t.P("d").c_str(), dflt.c_str(), d1.data(), d1.size(), 0));
  SYS(t, close(open(t.P("d/inh").c_str(), O_CREAT | O_WRONLY, 0666)));
  SYS(t, close(open(t.P("d/inh600").c_str(), O_CREAT | O_WRONLY, 0600)));
  SYS(t, mkdir(t.P("d/sub").c_str(), 0777));
  SYS(t, mkdir(t.P("d/sub/deeper").c_str(), 0700));
  SYS(t, mknod(t.P("d/fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(t, symlink("inh", t.P("d/link").c_str()));
  t.AsUser(1000, 1000, [](Trace& c) {
    int fd = SYSFD(c, open(c.P("d/inh").c_str(), O_WRONLY));
    SYS(c, write(fd, "by 1000", 7));
    SYS(c, close(fd));
    SYSFD(c, open(c.P("d/sub/made_by_1000").c_str(), O_CREAT | O_WRONLY, 0644));
  });
  // An access ACL that says no more than a mode is not kept as an xattr.
  std::string plain = AclXattr({{kUserObj, 6, kNoId}, {kGroupObj, 4, kNoId}, {kOther, 0, kNoId}});
  SYS(t, setxattr(t.P("d/inh").c_str(), access.c_str(), plain.data(), plain.size(), 0));
  char buf[256];
  SYS(t, getxattr(t.P("d/inh").c_str(), access.c_str(), buf, sizeof buf));  // ENODATA
  t.Stat("d/inh");
  // Errors: a default ACL on a file, malformed ACLs, removal.
  SYS(t, setxattr(t.P("d/inh").c_str(), dflt.c_str(), d1.data(), d1.size(), 0));  // EACCES
  std::string bad = AclXattr({{kUserObj, 7, kNoId}, {kUser, 7, 1000}, {kOther, 0, kNoId}});
  SYS(t, setxattr(t.P("d/inh").c_str(), access.c_str(), bad.data(), bad.size(), 0));  // EINVAL
  SYS(t, setxattr(t.P("d/inh").c_str(), access.c_str(), "junk", 4, 0));             // EINVAL
  SYS(t, setxattr(t.P("d/inh").c_str(), "system.other", "1", 1, 0));  // EOPNOTSUPP
  SYS(t, removexattr(t.P("d").c_str(), dflt.c_str()));
  SYS(t, close(open(t.P("d/after").c_str(), O_CREAT | O_WRONLY, 0666)));  // umask again
  SYS(t, removexattr(t.P("d/secret").c_str(), access.c_str()));
  t.Tree();
}

}  // namespace

TEST_CASE("parity: chmod, chown, set-ID bits") { RunParity({"ownership", Ownership, true}); }
TEST_CASE("parity: set-ID bits and capabilities cleared on write, truncate, chown") {
  SUBCASE("default mount: psmfs clears them (FUSE_HANDLE_KILLPRIV_V2)") {
    RunParity({"killpriv", KillPriv, true});
  }
  SUBCASE("without the writeback cache") {
    RunParity({"killpriv", KillPriv, true}, "no_writeback_cache");
  }
}
TEST_CASE("parity: chmod, chown, set-ID bits with nokillpriv_v2 (the kernel clears them)") {
  RunParity({"ownership", Ownership, true}, "nokillpriv_v2");
}
TEST_CASE("parity: permission checks as other uids") { RunParity({"perms", Permissions, true}); }
TEST_CASE("parity: sticky directory") { RunParity({"sticky", Sticky, true}); }
TEST_CASE("parity: utimensat, UTIME_NOW, UTIME_OMIT") { RunParity({"times", Times, false}); }
TEST_CASE("parity: extended attributes") { RunParity({"xattrs", Xattrs, true}); }
TEST_CASE("parity: POSIX ACLs") { RunParity({"acls", Acls, true}); }
TEST_CASE("parity: the mount unmounts cleanly and fsck finds nothing") { FinishParity(); }
