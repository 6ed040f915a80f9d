#include "targets/builtin.h"

#include "targets/linear/linear.h"

namespace bowstack {

void register_builtin_targets(TargetRegistry* registry) { registry->add(LinearTarget::info()); }

}  // namespace bowstack
