// BlockDevice implementations: the POSIX image (regular file or block
// device), the in-memory device, and TrackedDevice. See fs/device/block_device.h.
//
// Thread safety: PosixDevice uses pread/pwrite on one descriptor, which the
// kernel serialises per call; MemDevice guards its buffer with a shared
// mutex; TrackedDevice uses atomics.
#include "fs/device/block_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace psm {
namespace {

std::string Where(const std::string& path, uint64_t off, size_t n) {
  return path + " [" + std::to_string(off) + ", +" + std::to_string(n) + ")";
}

class PosixDevice final : public BlockDevice {
 public:
  PosixDevice(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixDevice() override { ::close(fd_); }

  Status Read(uint64_t off, void* buf, size_t n) override {
    if (off > size_ || n > size_ - off) {
      return Status::Invalid("read beyond the end of " + Where(path_, off, n));
    }
    auto* p = static_cast<char*>(buf);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(off + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "read " + Where(path_, off, n));
      }
      if (r == 0) {
        // The file shrank behind our back (someone truncated the image).
        return Status::IOError("unexpected end of file reading " + Where(path_, off, n));
      }
      done += static_cast<size_t>(r);
    }
    return Status::Ok();
  }

  Status Write(uint64_t off, const void* buf, size_t n) override {
    if (off > size_ || n > size_ - off) {
      return Status::Invalid("write beyond the end of " + Where(path_, off, n));
    }
    const auto* p = static_cast<const char*>(buf);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(off + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + Where(path_, off, n));
      }
      if (r == 0) return Status::IOError("write made no progress: " + Where(path_, off, n));
      done += static_cast<size_t>(r);
    }
    return Status::Ok();
  }

  Status Sync() override {
    while (::fdatasync(fd_) != 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "fdatasync " + path_);
    }
    return Status::Ok();
  }

  uint64_t size() const override { return size_; }
  int fd() const override { return fd_; }
  void WillNeed(uint64_t off, uint64_t n) override {
    if (off >= size_ || n == 0) return;
    (void)::posix_fadvise(fd_, static_cast<off_t>(off),
                          static_cast<off_t>(std::min<uint64_t>(n, size_ - off)),
                          POSIX_FADV_WILLNEED);
  }

 private:
  const std::string path_;
  const int fd_;
  const uint64_t size_;
};

class MemDevice final : public BlockDevice {
 public:
  explicit MemDevice(uint64_t size) : data_(size, 0) {}
  Status Read(uint64_t off, void* buf, size_t n) override {
    std::shared_lock<std::shared_mutex> l(mu_);
    if (off > data_.size() || n > data_.size() - off) {
      return Status::Invalid("read beyond the end of the memory device");
    }
    if (n) std::memcpy(buf, data_.data() + off, n);
    return Status::Ok();
  }
  Status Write(uint64_t off, const void* buf, size_t n) override {
    std::unique_lock<std::shared_mutex> l(mu_);
    if (off > data_.size() || n > data_.size() - off) {
      return Status::Invalid("write beyond the end of the memory device");
    }
    if (n) std::memcpy(data_.data() + off, buf, n);
    return Status::Ok();
  }
  Status Sync() override { return Status::Ok(); }
  uint64_t size() const override { return data_.size(); }

 private:
  std::shared_mutex mu_;
  std::vector<char> data_;
};

}  // namespace

Result<std::unique_ptr<BlockDevice>> OpenPosixDevice(const std::string& path, bool create,
                                                     uint64_t size) {
  int flags = O_RDWR | O_CLOEXEC;
  if (create) flags |= O_CREAT;
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0600);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    return Status::FromErrno(
        errno, std::string(create ? "cannot create image " : "cannot open image ") + path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "cannot stat image " + path);
  }
  uint64_t dev_size = 0;
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &dev_size) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "cannot read the size of block device " + path);
    }
    if (create && size > dev_size) {
      ::close(fd);
      return Status::NoSpace("block device " + path + " holds " + std::to_string(dev_size) +
                             " bytes, less than the requested " + std::to_string(size));
    }
  } else if (S_ISREG(st.st_mode)) {
    dev_size = static_cast<uint64_t>(st.st_size);
    if (create && dev_size != size) {
      // Sparse: ftruncate allocates nothing.
      int r;
      do {
        r = ::ftruncate(fd, static_cast<off_t>(size));
      } while (r != 0 && errno == EINTR);
      if (r != 0) {
        int err = errno;
        ::close(fd);
        return Status::FromErrno(
            err, "cannot size image " + path + " to " + std::to_string(size) + " bytes");
      }
      dev_size = size;
    }
  } else {
    ::close(fd);
    return Status::Invalid("image " + path + " is neither a regular file nor a block device");
  }
  return std::unique_ptr<BlockDevice>(new PosixDevice(path, fd, dev_size));
}

std::unique_ptr<BlockDevice> NewMemDevice(uint64_t size) {
  return std::make_unique<MemDevice>(size);
}

Status TrackedDevice::Write(uint64_t off, const void* buf, size_t n) {
  if (failed()) return Failure();
  Status s = base_->Write(off, buf, n);
  // Counted after completion: a sync that read written_ before this
  // increment did not promise to cover this write. Failed writes count too:
  // part of them may have landed.
  written_.fetch_add(1, std::memory_order_acq_rel);
  return s;
}

Status TrackedDevice::SyncCovering(uint64_t* covered) {
  if (failed()) return Failure();
  const uint64_t w = written_.load(std::memory_order_acquire);
  Status s = base_->Sync();
  if (!s.ok()) {
    Fail(s);
    return Failure();
  }
  // Monotonic: a slower concurrent sync must not move synced_ back.
  uint64_t cur = synced_.load(std::memory_order_acquire);
  while (cur < w && !synced_.compare_exchange_weak(cur, w, std::memory_order_acq_rel)) {
  }
  if (covered) *covered = w;
  // A sync that failed meanwhile on another thread may have lost writes
  // that this one counted (the kernel cleared their pages): not durable.
  return failed() ? Failure() : Status::Ok();
}

Status TrackedDevice::SyncIfDirty(uint64_t* covered) {
  if (failed()) return Failure();
  const uint64_t w = written_.load(std::memory_order_acquire);
  if (synced_.load(std::memory_order_acquire) >= w) {
    if (covered) *covered = w;
    return Status::Ok();
  }
  return SyncCovering(covered);
}

void TrackedDevice::Fail(const Status& s) {
  std::lock_guard<std::mutex> l(fail_mu_);
  if (failed_.load(std::memory_order_relaxed)) return;
  failure_ = s;
  failed_.store(true, std::memory_order_release);
}

Status TrackedDevice::Failure() const {
  std::lock_guard<std::mutex> l(fail_mu_);
  if (!failed_.load(std::memory_order_relaxed)) return Status::Ok();
  return Status::IOError("the image could not be synced (" + failure_.message() +
                         "); writes are refused until the volume is mounted again");
}

}  // namespace psm
