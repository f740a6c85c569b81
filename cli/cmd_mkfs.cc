// psmctl mkfs VOLUME --size SIZE [--block-size N] [--image PATH] [--checksum=on|off]
//              [--mirror PATH] [--force]
//
// Creates a volume (psm::Format). Refuses to overwrite an existing volume
// without --force, a mounted one even with it, and a non-empty directory
// that is not a volume always.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "cli/psmctl.h"
#include "fs/device/block_device.h"
#include "fs/device/superblock.h"

namespace psmctl {
namespace {

struct MkfsArgs {
  std::string volume;
  std::string size;
  std::string block_size = "4K";
  std::string image;
  std::string checksum = "on";
  std::string mirror;
  bool force = false;
};

// The UUID of the psmfs image at `path`, or "" if it is not one.
std::string ImageUuid(const std::string& path) {
  auto dev = psm::OpenPosixDevice(path, false, 0);
  if (!dev.ok()) return {};
  psm::Superblock sb;
  if (!psm::ReadSuperblock(dev.value().get(), &sb).ok()) return {};
  return sb.uuid.empty() ? std::string("unknown") : sb.uuid;
}

bool IsEmptyDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool empty = true;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  return empty;
}

int RunMkfs(const MkfsArgs& a) {
  const std::string image = a.image.empty() ? a.volume + "/image" : a.image;

  // Geometry.
  auto bs = ParseSize(a.block_size);
  if (!bs.ok()) return UsageError("--block-size: " + bs.status().message());
  uint64_t block_size = bs.value();
  if (block_size < 512 || block_size > 65536 || (block_size & (block_size - 1)) != 0) {
    return UsageError("--block-size must be a power of two from 512 to 64K, not " + a.block_size);
  }
  if (a.checksum != "on" && a.checksum != "off") {
    return UsageError("--checksum must be 'on' or 'off', not '" + a.checksum + "'");
  }
  struct stat ist;
  bool image_is_blockdev = ::stat(image.c_str(), &ist) == 0 && S_ISBLK(ist.st_mode);
  uint64_t size = 0;
  if (!a.size.empty()) {
    auto sz = ParseSize(a.size);
    if (!sz.ok()) return UsageError("--size: " + sz.status().message());
    size = sz.value();
    if (size < block_size) return UsageError("--size " + a.size + " is smaller than one block");
  } else if (!image_is_blockdev) {
    return UsageError("--size is required (unless --image names a block device)");
  }

  // What is there already.
  if (auto m = psm::FindMount(a.volume); m.ok()) {
    return Fail(psm::Status::Busy(a.volume + " is mounted at " + m->mountpoint + " (pid " +
                                  std::to_string(m->pid) + "); unmount it first"));
  }
  struct stat vst;
  if (::stat(a.volume.c_str(), &vst) == 0) {
    if (!S_ISDIR(vst.st_mode)) {
      return Fail(psm::Status::NotDir(a.volume + " exists and is not a directory"));
    }
    std::string uuid = ImageUuid(image);
    bool is_volume = LooksLikeVolume(a.volume) || !uuid.empty();
    if (is_volume && !a.force) {
      return Fail(psm::Status::Exists(
          a.volume + " already holds a psmfs volume" +
          (uuid.empty() ? "" : " (uuid " + uuid + ")") +
          "; add --force to overwrite it (destroys its files and every snapshot)"));
    }
    if (!is_volume && !IsEmptyDir(a.volume)) {
      return Fail(psm::Status::Exists(
          a.volume + " is a non-empty directory that is not a psmfs volume; refusing"));
    }
  } else if (!a.image.empty()) {
    if (std::string uuid = ImageUuid(image); !uuid.empty() && !a.force) {
      return Fail(psm::Status::Exists(image + " already holds a psmfs volume (uuid " + uuid +
                                      "); add --force to overwrite it"));
    }
  }

  if (!a.mirror.empty()) {
    if (std::string uuid = ImageUuid(a.mirror); !uuid.empty() && !a.force) {
      return Fail(psm::Status::Exists("the mirror " + a.mirror + " already holds a psmfs volume (uuid " +
                                      uuid + "); add --force to overwrite it"));
    }
  }

  psm::FormatOptions opts;
  opts.mirror_path = a.mirror;
  opts.size_bytes = size;
  opts.block_size = static_cast<uint32_t>(block_size);
  opts.image_path = a.image;
  opts.force = a.force;
  opts.checksum = a.checksum == "on";
  if (psm::Status st = psm::Format(a.volume, opts); !st.ok()) return Fail(st, "mkfs " + a.volume);

  std::string uuid = ImageUuid(image);
  std::printf("created psmfs volume %s\n", a.volume.c_str());
  std::printf("  uuid        %s\n", uuid.empty() ? "?" : uuid.c_str());
  std::printf("  image       %s\n", image.c_str());
  if (size != 0)
    std::printf("  size        %s (%llu bytes)\n", HumanSize(size).c_str(),
                static_cast<unsigned long long>(size));
  std::printf("  block size  %llu\n", static_cast<unsigned long long>(block_size));
  std::printf("  checksums   %s\n", a.checksum.c_str());
  if (!a.mirror.empty()) std::printf("  mirror      %s\n", a.mirror.c_str());
  return kExitOk;
}

void SetupMkfs(CLI::App& app) {
  auto a = std::make_shared<MkfsArgs>();
  CLI::App* cmd = AddCommand(app, "mkfs", "Create a new psmfs volume in directory VOLUME.");
  cmd->add_option("VOLUME", a->volume,
                  "Directory to create the volume in (created if missing). It receives the image "
                  "file 'image' (unless --image) and the metadata store 'meta/'.")
      ->required()
      ->type_name("");
  cmd->add_option("-s,--size", a->size,
                  "Size of the image, e.g. 10G, 512M, 1.5T (K/M/G/T/P are powers of 1024). "
                  "Required unless --image names a block device, whose capacity is used.")
      ->type_name("SIZE");
  cmd->add_option("-b,--block-size", a->block_size,
                  "Block size: a power of two from 512 to 64K. Fixed for the volume's life.")
      ->type_name("N")
      ->default_str("4K");
  cmd->add_option("--image", a->image,
                  "Put the data in this file or block device instead of VOLUME/image; the path is "
                  "recorded in the volume's metadata.")
      ->type_name("PATH");
  cmd->add_option("--checksum", a->checksum,
                  "on: every data block written gets a CRC-32C kept in the metadata and verified "
                  "on every read (a mismatch fails the read with EIO; every write goes to a new "
                  "block). off: no checksums, overwrites in place. Fixed for the volume's life.")
      ->type_name("on|off")
      ->default_str("on");
  cmd->add_option("--mirror", a->mirror,
                  "Keep a second image holding the same blocks (a file, created with the image's "
                  "size, or a block device at least as large), normally on another disk: a block "
                  "that fails its checksum or cannot be read on one side is read from the other "
                  "and rewritten. See psmctl mirror.")
      ->type_name("PATH");
  cmd->add_flag("-f,--force", a->force,
                "Overwrite an existing psmfs volume (all its files and snapshots are lost). Never "
                "overwrites a mounted volume or a non-empty directory that is not a volume.");
  SetAction(cmd, [a] { return RunMkfs(*a); });
}

}  // namespace

PSMCTL_REGISTER_COMMAND(10, SetupMkfs);

}  // namespace psmctl
