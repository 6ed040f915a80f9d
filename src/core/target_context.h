// What the core hands a target when it builds one: its devices by slot, the
// files beside them, and a job runner (docs/tables.md, "Slots").
//
// A target reaches devices, files and threads only through this: it never
// opens, stats or locks a path itself, and never starts a thread. The core
// opened and locked (exclusive, OFD) every device before or when the target
// asks for it, and owns them; it resolved every default (a side store left
// out of the table lies beside the data image).
//
// Lifetime: the context lives only during the factory call. Devices and the
// job runner are shared pointers the target keeps; the Env outlives it.
// Thread-safety: used by one thread, the one building the stack.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/block_device.h"
#include "core/env.h"
#include "core/jobs.h"

namespace bowstack {

class TargetContext {
 public:
  virtual ~TargetContext() = default;

  // Where the node is in the table ("$.devices.data"), for messages.
  virtual const std::string& node_path() const = 0;
  // The device in slot "data"; nullptr for a target without one.
  virtual std::shared_ptr<BlockDevice> data() const = 0;
  // The devices of a list slot ("legs"), in table order.
  virtual std::vector<std::shared_ptr<BlockDevice>> list(std::string_view slot) const = 0;
  // Every child device (data and list slots; not side stores), in slot order.
  virtual std::vector<std::shared_ptr<BlockDevice>> children() const = 0;
  // A side store that is a device (era's metadata). The core opens and
  // locks it now; a file that does not exist or is empty is first created
  // sparse with `create_size` bytes (0: it must exist). Returns nullptr when
  // the table turned the slot off (null).
  virtual Result<std::shared_ptr<BlockDevice>> side_device(std::string_view slot, uint64_t create_size) = 0;
  // A side store that is a file the target manages through env() (bow's
  // resume journal, which it creates and removes); empty when turned off.
  // Its exclusive use follows from the lock on the node's data image.
  virtual std::string side_file(std::string_view slot) const = 0;
  // Files beside the image.
  virtual Env* env() const = 0;
  // Where the target starts its background work. The target keeps the
  // runner (shared) at least as long as its jobs run.
  virtual std::shared_ptr<JobRunner> jobs() = 0;
};

}  // namespace bowstack
