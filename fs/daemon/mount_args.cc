#include "fs/daemon/mount_args.h"

namespace psm {

bool IsFstabOnlyOption(std::string_view opt) {
  std::string_view key = opt.substr(0, opt.find('='));
  static constexpr std::string_view kWords[] = {"defaults", "auto",   "noauto", "user",
                                                "nouser",   "users",  "owner",  "group",
                                                "_netdev",  "nofail", "sw",     "comment"};
  for (std::string_view w : kWords) {
    if (key == w) return true;
  }
  return key.size() > 2 && key.substr(0, 2) == "x-";
}

bool IsMountHelperName(std::string_view argv0) {
  size_t slash = argv0.rfind('/');
  std::string_view base = slash == std::string_view::npos ? argv0 : argv0.substr(slash + 1);
  return base == "mount.fuse.psmfs" || base == "mount.psmfs";
}

Result<MountHelperCall> MountHelperArgs(const std::vector<std::string>& args) {
  MountHelperCall out;
  std::vector<std::string> positional;
  std::string opts;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* what) -> Result<std::string> {
      if (a.size() > 2) return a.substr(2);
      if (i + 1 >= args.size()) return Status::Invalid(std::string(what) + " needs an argument");
      return args[++i];
    };
    if (a.size() >= 2 && a[0] == '-' && a[1] == 'o') {
      PSM_ASSIGN_OR_RETURN(std::string o, value("-o"));
      if (!o.empty()) opts += (opts.empty() ? "" : ",") + o;
    } else if (a.size() >= 2 && a[0] == '-' && a[1] == 't') {
      PSM_ASSIGN_OR_RETURN(std::string t, value("-t"));
      if (t != "fuse.psmfs" && t != "psmfs" && t != "fuse") {
        return Status::Invalid("file system type '" + t + "' is not fuse.psmfs");
      }
    } else if (a.size() >= 2 && a[0] == '-' && a[1] == 'N') {
      return Status::Invalid("mount namespaces (-N) are not supported by mount.fuse.psmfs");
    } else if (a.size() >= 2 && a[0] == '-' && a[1] != '-') {
      // Flags, possibly bundled: -s sloppy, -f fake, -n no mtab, -v verbose.
      for (char c : a.substr(1)) {
        if (c == 'f') out.fake = true;
        else if (c == 'v') out.verbose = true;
        else if (c != 's' && c != 'n') return Status::Invalid(std::string("unknown flag -") + c);
      }
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    return Status::Invalid(
        "usage: mount.fuse.psmfs VOLUME MOUNTPOINT [-sfnv] [-o OPTIONS] [-t fuse.psmfs]");
  }
  out.psmfs_args = positional;
  if (!opts.empty()) {
    out.psmfs_args.push_back("-o");
    out.psmfs_args.push_back(opts);
  }
  return out;
}

}  // namespace psm
