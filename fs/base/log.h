// The daemon's logger: one place that decides where psmfs's messages go.
//
//   PSM_LOG(kWarning, "reclaim of snapshot %llu failed: %s", id, why);
//
// Sinks (SetLogSink):
//   kStderr   one line per message on stderr (foreground, -f). When stderr is
//             the systemd journal (JOURNAL_STREAM names it), each line starts
//             with the sd-daemon "<N>" priority prefix so journald keeps the
//             level.
//   kSyslog   syslog(3) with the message's priority (daemonised: journald
//             picks syslog up too). The caller opens the log (openlog).
// Levels are syslog priorities; messages above SetLogLevel() are dropped
// (default kInfo; -d raises it to kDebug).
//
// Policy: messages name volumes, paths, snapshots and errors; they never
// contain file contents.
//
// Thread safety: every function may be called from any thread.
#pragma once

#include <cstdarg>
#include <string_view>

namespace psm {

enum LogLevel : int {
  kLogError = 3,    // LOG_ERR
  kLogWarning = 4,  // LOG_WARNING
  kLogNotice = 5,   // LOG_NOTICE
  kLogInfo = 6,     // LOG_INFO
  kLogDebug = 7,    // LOG_DEBUG
};

enum class LogSink { kStderr, kSyslog };

void SetLogSink(LogSink sink);
LogSink GetLogSink();
// Messages with a priority number above `max` (less important) are dropped.
void SetLogLevel(int max);
bool LogEnabled(int prio);
// Writes one message (trailing newlines removed; embedded ones kept as
// separate lines on stderr).
void LogWrite(int prio, std::string_view msg);
void VLogf(int prio, const char* fmt, va_list ap);
__attribute__((format(printf, 2, 3))) void Logf(int prio, const char* fmt, ...);
// "error", "warning", ... for a priority.
const char* LogLevelName(int prio);

}  // namespace psm

#define PSM_LOG(level, ...)                                            \
  do {                                                                 \
    if (::psm::LogEnabled(::psm::level)) ::psm::Logf(::psm::level, __VA_ARGS__); \
  } while (0)
