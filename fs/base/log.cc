#include "fs/base/log.h"

#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace psm {
namespace {

std::atomic<LogSink> g_sink{LogSink::kStderr};
std::atomic<int> g_level{kLogInfo};
std::mutex g_stderr_mu;  // one line at a time

// True when stderr is the journal stream systemd gave us.
bool StderrIsJournal() {
  static const bool is = [] {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (js == nullptr) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    return static_cast<unsigned long long>(st.st_dev) == dev &&
           static_cast<unsigned long long>(st.st_ino) == ino;
  }();
  return is;
}

}  // namespace

void SetLogSink(LogSink sink) { g_sink.store(sink); }
LogSink GetLogSink() { return g_sink.load(); }
void SetLogLevel(int max) { g_level.store(max); }
bool LogEnabled(int prio) { return prio <= g_level.load(std::memory_order_relaxed); }

const char* LogLevelName(int prio) {
  switch (prio) {
    case 0: case 1: case 2: case kLogError: return "error";
    case kLogWarning: return "warning";
    case kLogNotice: return "notice";
    case kLogInfo: return "info";
    default: return "debug";
  }
}

void LogWrite(int prio, std::string_view msg) {
  if (!LogEnabled(prio)) return;
  while (!msg.empty() && msg.back() == '\n') msg.remove_suffix(1);
  if (g_sink.load() == LogSink::kSyslog) {
    ::syslog(prio, "%.*s", static_cast<int>(msg.size()), msg.data());
    return;
  }
  std::string out;
  const bool journal = StderrIsJournal();
  while (true) {
    size_t nl = msg.find('\n');
    if (journal) out += "<" + std::to_string(prio) + ">";
    out.append(msg.substr(0, nl));
    out += '\n';
    if (nl == std::string_view::npos) break;
    msg.remove_prefix(nl + 1);
  }
  std::lock_guard<std::mutex> l(g_stderr_mu);
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void VLogf(int prio, const char* fmt, va_list ap) {
  if (!LogEnabled(prio)) return;
  char buf[2048];
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  LogWrite(prio, buf);
}

void Logf(int prio, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VLogf(prio, fmt, ap);
  va_end(ap);
}

}  // namespace psm
