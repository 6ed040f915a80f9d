// The targets shipped with bowstack. Each lives in its own folder under
// src/targets/; this is the only place that knows them all.
#pragma once

#include "core/target_registry.h"

namespace bowstack {

void register_builtin_targets(TargetRegistry* registry);

}  // namespace bowstack
