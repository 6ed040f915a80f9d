// The control protocol's commands (docs/control.md), applied to a Volume.
//
// Thread-safety: may be called concurrently; `suspend` blocks its caller
// until in-flight I/O has drained.
#pragma once

#include <nlohmann/json.hpp>

#include "core/volume.h"

namespace bowstack {

// Returns {"ok":true,...} or {"ok":false,"error":"..."}; never throws on
// malformed requests.
nlohmann::json handle_control_request(Volume& volume, const nlohmann::json& request);

}  // namespace bowstack
