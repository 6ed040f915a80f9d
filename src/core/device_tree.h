// A built table: every node's device, the files it opened, the jobs it
// runs (docs/tables.md).
//
// The core opens every leaf of a table (files: data images and side
// stores; RBD images, core/rbd_device.h),
// takes an exclusive OFD lock on each one it opens for writing (so a second
// server or an offline tool on the same file fails at once and is told who
// holds it), creates what the table asks to be created, and hands each
// target its devices through a TargetContext. Targets are built bottom-up.
//
// Reuse: building may borrow nodes from a NodePool (the live tree during a
// reload): a target node whose identity (target, params, children) is in
// the pool is taken as it is, with its state; a file already open is shared
// rather than opened twice.
//
// Thread-safety: building happens on one thread. A built tree is
// immutable; status() and message() may run concurrently with I/O.
// Lifetime: a node's device lives as long as any tree or pool holds it;
// a target node's JobRunner outlives its device.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/env.h"
#include "core/jobs.h"
#include "core/table.h"
#include "core/target_registry.h"

namespace bowstack {

class FileDevice;

// One built node. The device is destroyed before the children it uses; the
// job runner is shared with the target, which stops its jobs when it goes.
struct BuiltNode {
  struct Child {
    std::string slot;
    std::shared_ptr<BuiltNode> node;
  };
  // As in the table this node was last built or kept for (json_path
  // included: a kept node takes its place in the new table).
  TableNode spec;
  std::vector<Child> children;      // every slot's nodes in slot order (lists in order), side stores included
  std::shared_ptr<JobRunner> jobs;  // target nodes only
  std::shared_ptr<BlockDevice> device;  // null for a side file
  std::shared_ptr<FileDevice> file;     // file leaves: the open file (RBD leaves: null)

  // Status of this node and its children, each with its slot.
  nlohmann::json status() const;
};

// Nodes a build may borrow (it never adds to the pool): target nodes by
// identity, open leaves by TableNode::leaf_key() (a file's canonical path).
struct NodePool {
  std::map<std::string, std::shared_ptr<BuiltNode>> targets;
  std::map<std::string, std::shared_ptr<BuiltNode>> files;
  // Adds every node of a tree.
  void add_tree(const std::shared_ptr<BuiltNode>& root);
};

struct BuildOptions {
  bool direct = false;  // open data images with O_DIRECT
  Env* env = nullptr;   // files beside images; null = the real filesystem
};

class DeviceTree {
 public:
  // Builds `table` (parsed by parse_table). Errors name the JSON path of
  // the node that failed. Nothing is left open on failure (borrowed nodes
  // stay as they were).
  static Result<std::unique_ptr<DeviceTree>> build(const TableNode& table, const TargetRegistry& registry,
                                                   const BuildOptions& opts, NodePool* pool = nullptr);

  // Opens (and locks) every file of `table` that is not in the pool yet and
  // exists (or is to be created as a data image), and adds it to the pool;
  // side stores that do not exist yet are left for build(). A reload does
  // this while I/O goes on, so that the build under suspension finds them
  // open. On failure, a data image created for "create" stays (empty).
  static Status open_files(const TableNode& table, const TargetRegistry& registry, const BuildOptions& opts,
                           NodePool* pool);

  const TableNode& table() const { return root_->spec; }
  const std::shared_ptr<BuiltNode>& root() const { return root_; }
  std::shared_ptr<BlockDevice> top() const { return root_->device; }

  // {"node": {"target"|"file", "path", "kind", "size", ...describe..., "jobs": [...],
  //           "devices": {"data": {...}, ...}}}
  nlohmann::json status() const;
  // Sends a message to the target nodes, top first (depth first), until
  // one accepts it; `target` limits it to nodes of that target name. Job
  // messages ("job NAME VERB") reach the node running that job.
  Result<std::string> message(std::string_view text, std::string_view target) const;
  // Task jobs of every node.
  void pause_tasks() const;
  void resume_tasks() const;
  // Every target node, top first.
  std::vector<BuiltNode*> targets() const;

 private:
  explicit DeviceTree(std::shared_ptr<BuiltNode> root) : root_(std::move(root)) {}
  std::shared_ptr<BuiltNode> root_;
};

}  // namespace bowstack
