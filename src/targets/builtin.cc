#include "targets/builtin.h"

#include "targets/bow/bow_target.h"
#include "targets/linear/linear.h"

namespace bowstack {

void register_builtin_targets(TargetRegistry* registry) {
  registry->add(LinearTarget::info());
  registry->add(bow::BowTarget::info());
}

}  // namespace bowstack
