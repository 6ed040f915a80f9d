// The mirror's status (JSON and one line) and messages.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/parse.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {

namespace {

const char* action_name(bool resync, bool recover, int scrub) {
  if (resync) return "resync";
  if (recover) return "recover";
  return scrub == 1 ? "check" : scrub == 2 ? "repair" : "idle";
}

}  // namespace

void MirrorTarget::describe(nlohmann::json* out) const {
  std::lock_guard lock(mu_);
  auto& j = *out;
  j["array_uuid"] = md::mdadm_uuid_string(array_sb_.set_uuid);
  j["name"] = array_sb_.set_name;
  j["events"] = array_sb_.events;
  j["state"] = active_on_disk_ ? "active" : "clean";
  j["degraded"] = degraded_locked();
  j["region_size"] = chunk_;
  j["regions"] = bits_;
  j["dirty_regions"] = md::count_set_bits(area_, bits_);
  j["resync_pending_regions"] = resync_left_;
  const int scrub = action_ == SyncAction::kCheck ? 1 : action_ == SyncAction::kRepair ? 2 : 0;
  j["sync_action"] = action_name(resync_running_, recover_running_, scrub);
  j["mismatch_cnt"] = mismatch_cnt_;
  j["last_check"] = last_scrub_note_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_scrub_note_);
  j["read_policy"] = opts_.read_policy == ReadPolicy::kFirst        ? "first"
                     : opts_.read_policy == ReadPolicy::kRoundRobin ? "round-robin"
                                                                    : "balance";
  j["sync_min"] = opts_.sync_min;
  j["sync_max"] = opts_.sync_max;
  j["parallel_writes"] = opts_.parallel_writes == ParallelWrites::kOn    ? "on"
                         : opts_.parallel_writes == ParallelWrites::kOff ? "off"
                                                                         : "auto";
  j["max_read_errors"] = opts_.max_read_errors;
  j["write_threads"] = write_pool_ ? write_pool_->threads() : 0;
  if (!meta_failure_.ok()) j["metadata_error"] = why(meta_failure_);
  if (!flush_failure_.ok()) j["flush_error"] = why(flush_failure_);
  nlohmann::json legs = nlohmann::json::array();
  for (size_t i = 0; i < legs_.size(); ++i) {
    const Leg& l = *legs_[i];
    nlohmann::json one;
    one["index"] = i;
    one["path"] = l.name;
    one["state"] = leg_state_name(l.state);
    one["role"] =
        l.sb.dev_number < array_sb_.dev_roles.size() ? array_sb_.dev_roles[l.sb.dev_number] : 0xffff;
    one["dev_number"] = l.sb.dev_number;
    one["device_uuid"] = md::mdadm_uuid_string(l.sb.device_uuid);
    one["events"] = l.sb.events;
    one["sync_mark"] = l.state == LegState::kInSync ? size_ : l.state == LegState::kFaulty ? 0 : l.mark;
    if (l.state == LegState::kStale || l.state == LegState::kRecovering) {
      // A guided rebuild copies only the regions whose bits were set when
      // the leg came back (md's re-add); a full one every region.
      one["rebuild"] = l.guided ? "bitmap" : "full";
      one["rebuild_regions"] = l.rebuild_regions;
    }
    one["write_mostly"] = l.write_mostly;
    one["verified_reads"] = l.verifies;
    one["reads"] = l.reads.load();
    one["errors"] = l.errors.load();
    one["corrected_reads"] = l.corrected;
    one["recent_read_errors"] = l.read_errors;
    one["write_latency_us"] = l.write_ns.load(std::memory_order_relaxed) / 1000;
    legs.push_back(std::move(one));
  }
  j["legs"] = std::move(legs);
}

std::string MirrorTarget::status_line() const {
  std::lock_guard lock(mu_);
  std::string legs;
  for (const auto& l : legs_) {
    legs += fmt::format("{}{}", legs.empty() ? "" : " ", leg_state_name(l->state));
    if (l->state == LegState::kRecovering && size_ > 0) legs += fmt::format("({}%)", l->mark * 100 / size_);
  }
  const int scrub = action_ == SyncAction::kCheck ? 1 : action_ == SyncAction::kRepair ? 2 : 0;
  return fmt::format("mirror of {} legs [{}], {}, {}, mismatch_cnt {}", legs_.size(), legs,
                     active_on_disk_ ? "active" : "clean",
                     action_name(resync_running_, recover_running_, scrub), mismatch_cnt_);
}

Result<std::string> MirrorTarget::message(std::string_view text) {
  if (text == "check") return start_scrub(false);
  if (text == "repair") return start_scrub(true);
  if (text == "idle") {
    std::vector<Job*> jobs;
    {
      std::lock_guard lock(mu_);
      if (action_ == SyncAction::kIdle) return std::string("idle");
      for (Job* j : sync_jobs_) {
        if (j->name() == "check" || j->name() == "repair") jobs.push_back(j);
      }
    }
    for (Job* j : jobs) j->stop();
    return std::string("stopped");
  }
  for (const char* key : {"sync_min=", "sync_max="}) {
    if (text.starts_with(key)) {
      auto v = parse_size(text.substr(std::string_view(key).size()), key);
      if (!v.ok()) return v.status();
      std::lock_guard lock(mu_);
      (key[5] == 'm' && key[6] == 'i' ? opts_.sync_min : opts_.sync_max) = *v;
      return fmt::format("{}{}", key, *v);
    }
  }
  if (text.starts_with("fail ") || text.starts_with("re-add ")) {
    const bool readd = text.starts_with("re-add ");
    const std::string_view which = text.substr(text.find(' ') + 1);
    std::unique_lock lock(mu_);
    size_t found = legs_.size();
    for (size_t i = 0; i < legs_.size(); ++i) {
      if (which == std::to_string(i) || which == legs_[i]->name) found = i;
    }
    if (found == legs_.size()) {
      return Status::Error(EINVAL, fmt::format("mirror: no leg '{}' (legs are 0..{} or their paths)", which,
                                               legs_.size() - 1));
    }
    if (readd) return readd_leg_locked(lock, found);
    if (legs_[found]->state == LegState::kFaulty)
      return fmt::format("{} is already faulty", legs_[found]->name);
    if (!fail_leg_locked(lock, found, Status::Error(EIO, "failed by request"))) {
      return Status::Error(EBUSY,
                           fmt::format("mirror: {} is the last in-sync leg; failing it would lose the array",
                                       legs_[found]->name));
    }
    if (!meta_failure_.ok()) return meta_failure_;
    return fmt::format("{} is faulty", legs_[found]->name);
  }
  return Status::Error(ENOTSUP);
}

}  // namespace bowstack::mirror
