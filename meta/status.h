// Status and Result<T>: how every psmfs layer reports failure.
//
// A Status is a small value type: a code from the domain list below and an
// optional message for humans. No layer throws; every fallible call returns a
// Status or a Result<T>. The FUSE adapter turns a code into an errno with
// ToErrno() (the one table that does so); FromRocks() turns a RocksDB status
// into ours (the one function that does so).
//
// Thread safety: values, no shared state.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace rocksdb {
class Status;
}

namespace psm {

enum class Code : int {
  kOk = 0,
  kNotFound,      // ENOENT
  kExists,        // EEXIST
  kNotEmpty,      // ENOTEMPTY
  kNotDir,        // ENOTDIR
  kIsDir,         // EISDIR
  kNoSpace,       // ENOSPC
  kReadOnly,      // EROFS
  kCorruption,    // EIO (and a clear message)
  kIOError,       // EIO
  kBusy,          // EBUSY
  kInvalid,       // EINVAL
  kPermission,    // EPERM
  kAccess,        // EACCES
  kNameTooLong,   // ENAMETOOLONG
  kNoAttr,        // ENODATA (xattr absent)
  kRange,         // ERANGE
  kNotSupported,  // EOPNOTSUPP
  kTooBig,        // EFBIG
  kTooManyLinks,  // EMLINK
  kCrossDevice,   // EXDEV
  kStale,         // ESTALE
  kBadFd,         // EBADF
  kNoData,        // ENXIO (lseek past data)
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return {}; }
  static Status NotFound(std::string m = {}) { return {Code::kNotFound, std::move(m)}; }
  static Status Exists(std::string m = {}) { return {Code::kExists, std::move(m)}; }
  static Status NotEmpty(std::string m = {}) { return {Code::kNotEmpty, std::move(m)}; }
  static Status NotDir(std::string m = {}) { return {Code::kNotDir, std::move(m)}; }
  static Status IsDir(std::string m = {}) { return {Code::kIsDir, std::move(m)}; }
  static Status NoSpace(std::string m = {}) { return {Code::kNoSpace, std::move(m)}; }
  static Status ReadOnly(std::string m = {}) { return {Code::kReadOnly, std::move(m)}; }
  static Status Corruption(std::string m = {}) { return {Code::kCorruption, std::move(m)}; }
  static Status IOError(std::string m = {}) { return {Code::kIOError, std::move(m)}; }
  static Status Busy(std::string m = {}) { return {Code::kBusy, std::move(m)}; }
  static Status Invalid(std::string m = {}) { return {Code::kInvalid, std::move(m)}; }
  static Status Permission(std::string m = {}) { return {Code::kPermission, std::move(m)}; }
  static Status Access(std::string m = {}) { return {Code::kAccess, std::move(m)}; }
  static Status NameTooLong(std::string m = {}) { return {Code::kNameTooLong, std::move(m)}; }
  static Status NoAttr(std::string m = {}) { return {Code::kNoAttr, std::move(m)}; }
  static Status Range(std::string m = {}) { return {Code::kRange, std::move(m)}; }
  static Status NotSupported(std::string m = {}) { return {Code::kNotSupported, std::move(m)}; }
  static Status TooBig(std::string m = {}) { return {Code::kTooBig, std::move(m)}; }
  static Status TooManyLinks(std::string m = {}) { return {Code::kTooManyLinks, std::move(m)}; }
  static Status CrossDevice(std::string m = {}) { return {Code::kCrossDevice, std::move(m)}; }
  static Status Stale(std::string m = {}) { return {Code::kStale, std::move(m)}; }
  static Status BadFd(std::string m = {}) { return {Code::kBadFd, std::move(m)}; }
  static Status NoData(std::string m = {}) { return {Code::kNoData, std::move(m)}; }
  // The status of code `c` (kOk gives Ok() and drops `m`; a value outside
  // the enum gives kIOError): re-wrapping a status with a new message, or
  // a code read from the wire.
  static Status FromCode(Code c, std::string m = {}) {
    if (c == Code::kOk) return Ok();
    if (static_cast<int>(c) < 0 || static_cast<int>(c) > static_cast<int>(Code::kNoData)) {
      return IOError(std::move(m));
    }
    return {c, std::move(m)};
  }
  // From an errno value (for I/O failures of the image and sockets).
  static Status FromErrno(int err, std::string m = {});
  // The one mapping from RocksDB's status into ours.
  static Status FromRocks(const rocksdb::Status& s);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  bool Is(Code c) const { return code_ == c; }
  const std::string& message() const { return msg_; }
  // "not found: <message>"
  std::string ToString() const;
  // The one table from our codes to errno (positive value; 0 for kOk).
  int ToErrno() const;

 private:
  Status(Code c, std::string m) : code_(c), msg_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

// A value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}  // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) {}  // NOLINT: implicit by design
  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace psm

// Early-return helpers.
#define PSM_RETURN_IF_ERROR(expr)           \
  do {                                      \
    ::psm::Status _psm_st = (expr);         \
    if (!_psm_st.ok()) return _psm_st;      \
  } while (0)

#define PSM_CONCAT_INNER(a, b) a##b
#define PSM_CONCAT(a, b) PSM_CONCAT_INNER(a, b)
#define PSM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
#define PSM_ASSIGN_OR_RETURN(lhs, expr) \
  PSM_ASSIGN_OR_RETURN_IMPL(PSM_CONCAT(_psm_r_, __LINE__), lhs, expr)
