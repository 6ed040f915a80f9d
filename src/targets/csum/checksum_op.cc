#include "targets/csum/checksum_op.h"

#include <cstring>

#include "core/block_device.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum {

std::shared_ptr<ChecksumOp> make_checksum_op(uint64_t first, uint64_t end, const std::byte* data,
                                             uint32_t flags, int kind, uint32_t block_size) {
  auto op = std::make_shared<ChecksumOp>();
  op->first = first;
  op->end = end;
  op->kind = kind;
  op->flags = flags;
  op->sums.resize(end - first);
  if (kind == kOpWrite) {
    const uint64_t n = (end - first) * block_size;
    op->data = AlignedBuf(n);
    std::memcpy(op->data.data(), data, n);
    for (uint64_t b = first; b < end; ++b) {
      op->sums[b - first] =
          block_checksum(b, block_size, op->data.span().subspan((b - first) * block_size, block_size));
    }
    op->bytes = n;
  } else if (kind != kOpAccept) {
    for (uint64_t b = first; b < end; ++b) op->sums[b - first] = zero_checksum(b, block_size);
  }
  op->wait = kind != kOpWrite || (flags & kFua) != 0;
  return op;
}

}  // namespace bowstack::csum
