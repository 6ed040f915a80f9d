// Test helpers for the core's tables, trees and reloads: a scratch
// directory and a registry of small targets that know no real format.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "core/block_device.h"
#include "core/target_registry.h"

namespace bowstack::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/bowstack-core-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Counts live and ever built Pass targets, so tests can see which ones a
// reload kept and which it built.
inline std::atomic<int> g_pass_alive{0};
inline std::atomic<int> g_pass_built{0};

// "pass": forwards everything to its data device; with a side device
// "meta" (default IMAGE.meta, 64 KiB when created) it writes one byte
// there at creation, so a test can see the side store was opened.
class Pass final : public StackedDevice {
 public:
  Pass(std::shared_ptr<BlockDevice> lower, std::string tag, std::shared_ptr<BlockDevice> meta)
      : StackedDevice(std::move(lower)), tag_(std::move(tag)), meta_(std::move(meta)) {
    ++g_pass_alive;
    ++g_pass_built;
  }
  ~Pass() override { --g_pass_alive; }
  std::string_view kind() const override { return "pass"; }
  Result<std::string> message(std::string_view text) override {
    if (text == "tag") return tag_;
    return Status::Error(ENOTSUP);
  }
  const std::string& tag() const { return tag_; }

 private:
  std::string tag_;
  std::shared_ptr<BlockDevice> meta_;
};

inline TargetRegistry test_registry() {
  TargetRegistry r;
  r.add({"pass",
         "forwards everything",
         {{"tag", "a name", ParamType::kString},
          {"fail", "fail when built", ParamType::kBool},
          {"size", "a size", ParamType::kSize}},
         {{"data", SlotKind::kDevice, true, "", "", "the device below"},
          {"meta", SlotKind::kSideDevice, false, ".meta", "meta", "a side store"}},
         [](TargetContext& ctx, const TargetArgs& args) -> Result<std::shared_ptr<BlockDevice>> {
           auto fail = args.get_bool("fail", false);
           if (!fail.ok()) return fail.status();
           if (*fail) return Status::Error(EINVAL, "pass: asked to fail");
           auto meta = ctx.side_device("meta", 64 << 10);
           if (!meta.ok()) return meta.status();
           return std::shared_ptr<BlockDevice>(
               std::make_shared<Pass>(ctx.data(), args.get_string("tag"), meta.value()));
         }});
  r.add({"mix",
         "reads and writes its first leg",
         {},
         {{"legs", SlotKind::kDeviceList, true, "", "", "the legs"}},
         [](TargetContext& ctx, const TargetArgs&) -> Result<std::shared_ptr<BlockDevice>> {
           return std::shared_ptr<BlockDevice>(
               std::make_shared<Pass>(ctx.list("legs").at(0), "mix", nullptr));
         }});
  r.add({"scan",
         "runs a task job that loops until stopped",
         {},
         {{"data", SlotKind::kDevice, true, "", "", "the device below"}},
         [](TargetContext& ctx, const TargetArgs&) -> Result<std::shared_ptr<BlockDevice>> {
           auto jobs = ctx.jobs();
           auto dev = std::make_shared<Pass>(ctx.data(), "scan", nullptr);
           jobs->start("scan", Job::Kind::kTask, [](JobControl& c) {
             c.set_total(1 << 20);
             while (c.wait_while_paused()) std::this_thread::sleep_for(std::chrono::microseconds(200));
             return Status::Ok();
           });
           return std::shared_ptr<BlockDevice>(dev);
         }});
  r.add({"journal",
         "has a side file",
         {},
         {{"data", SlotKind::kDevice, true, "", "", "the device below"},
          {"log", SlotKind::kSideFile, false, ".log", "log", "a side file"}},
         [](TargetContext& ctx, const TargetArgs&) -> Result<std::shared_ptr<BlockDevice>> {
           return std::shared_ptr<BlockDevice>(
               std::make_shared<Pass>(ctx.data(), ctx.side_file("log"), nullptr));
         }});
  return r;
}

}  // namespace bowstack::testing
