// The control protocol's commands (docs/control.md), applied to a Volume.
//
// Thread-safety: may be called concurrently; `suspend` blocks its caller
// until in-flight I/O has drained.
#pragma once

#include <nlohmann/json.hpp>

#include "core/target_registry.h"
#include "core/volume.h"

namespace bowstack {

// What `reload` needs besides the volume: the registry to check a new table
// against, and how the server opens files. Without a registry, reload is
// refused.
struct ControlEnv {
  const TargetRegistry* registry = nullptr;
  BuildOptions build;
};

// Returns {"ok":true,...} or {"ok":false,"error":"..."}; never throws on
// malformed requests.
nlohmann::json handle_control_request(Volume& volume, const nlohmann::json& request,
                                      const ControlEnv& env = {});

}  // namespace bowstack
