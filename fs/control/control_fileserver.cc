#include "fs/control/control_fileserver.h"

#include "fs/control/control_protocol.h"

namespace psm {
namespace {

Result<std::string> NeedString(const Json& req, const char* key, std::string_view op) {
  const Json* v = req.Find(key);
  if (v == nullptr || !v->is_string() || v->AsString().empty()) {
    return Status::Invalid(std::string(op) + " needs a non-empty \"" + key + "\" string");
  }
  return v->AsString();
}

Json Reply(const Status& s) { return s.ok() ? ctl::OkReply() : ctl::ErrorReply(s); }

}  // namespace

bool HandleFileServerOp(FileSystem* fs, Scheduler* scheduler, std::string_view op, const Json& req,
                        Json* reply) {
  using namespace ctl;
  if (op == kOpSnapshotHold || op == kOpSnapshotRelease) {
    Result<std::string> name = NeedString(req, "name", op);
    Result<std::string> tag = NeedString(req, "tag", op);
    if (!name.ok()) return *reply = ErrorReply(name.status()), true;
    if (!tag.ok()) return *reply = ErrorReply(tag.status()), true;
    Status s = op == kOpSnapshotHold ? fs->HoldSnapshot(name.value(), tag.value())
                                     : fs->ReleaseSnapshot(name.value(), tag.value());
    *reply = Reply(s);
    return true;
  }
  if (op == kOpSnapshotHolds) {
    Json list = Json::Array();
    for (const SnapshotHold& h : fs->ListHolds()) {
      Json j = Json::Object();
      j.Set("snapshot", h.snapshot).Set("tag", h.tag).Set("since_ns", h.since_ns);
      list.Push(std::move(j));
    }
    *reply = OkReply();
    reply->Set("holds", std::move(list));
    return true;
  }
  if (op == kOpScheduleGet) {
    Result<SchedulePolicy> p = LoadPolicy(fs);
    if (!p.ok() && !p.status().Is(Code::kNotFound)) return *reply = ErrorReply(p.status()), true;
    *reply = OkReply();
    reply->Set("schedule", p.ok() ? ToJson(p.value()) : Json());
    return true;
  }
  if (op == kOpScheduleSet) {
    const Json* j = req.Find("schedule");
    if (j == nullptr || !j->is_object()) {
      return *reply = ErrorReply(Status::Invalid("schedule.set needs a \"schedule\" object")), true;
    }
    SchedulePolicy p = PolicyFromJson(*j);
    Status s = StorePolicy(fs, p);
    if (s.ok() && scheduler != nullptr) scheduler->Kick();
    *reply = Reply(s);
    if (s.ok()) reply->Set("schedule", ToJson(p));
    return true;
  }
  if (op == kOpScheduleRemove) {
    *reply = Reply(RemovePolicy(fs));
    return true;
  }
  if (op == kOpPrune) {
    const Json* j = req.Find("schedule");
    Result<SchedulePolicy> p = (j != nullptr && j->is_object()) ? PolicyFromJson(*j) : LoadPolicy(fs);
    if (!p.ok()) return *reply = ErrorReply(p.status()), true;
    if (Status s = ValidatePolicy(p.value()); !s.ok()) return *reply = ErrorReply(s), true;
    PruneReport r = Prune(fs, p.value(), req.GetBool("dry_run"));
    *reply = OkReply();
    reply->Set("prune", ToJson(r));
    return true;
  }
  if (op == kOpHistory) {
    Result<std::string> path = NeedString(req, "path", op);
    if (!path.ok()) return *reply = ErrorReply(path.status()), true;
    auto h = fs->History(path.value(), req.GetBool("checksums", true));
    if (!h.ok()) return *reply = ErrorReply(h.status()), true;
    Json list = Json::Array();
    for (const FileVersion& v : h.value()) list.Push(ToJson(v));
    *reply = OkReply();
    reply->Set("versions", std::move(list));
    return true;
  }
  if (op == kOpDiff) {
    Result<std::string> from = NeedString(req, "from", op);
    if (!from.ok()) return *reply = ErrorReply(from.status()), true;
    auto d = fs->Diff(from.value(), req.GetString("to"));
    if (!d.ok()) return *reply = ErrorReply(d.status()), true;
    *reply = OkReply();
    reply->Set("diff", ToJson(d.value()));
    return true;
  }
  return false;
}

}  // namespace psm
