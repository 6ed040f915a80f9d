#include "targets/builtin.h"

#include "targets/bow/bow_target.h"
#include "targets/csum/csum_target.h"
#include "targets/era/era_target.h"
#include "targets/linear/linear.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack {

void register_builtin_targets(TargetRegistry* registry) {
  registry->add(LinearTarget::info());
  registry->add(bow::BowTarget::info());
  registry->add(era::EraTarget::info());
  registry->add(csum::CsumTarget::info());
  registry->add(mirror::MirrorTarget::info());
}

}  // namespace bowstack
