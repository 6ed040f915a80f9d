#include "nbd/request.h"

#include "core/block_device.h"
#include "nbd/protocol.h"

namespace bowstack::nbd {

bool parse_request(const std::byte* p, Request* out) {
  if (get_be32(p) != kRequestMagic) return false;
  out->flags = get_be16(p + 4);
  out->type = get_be16(p + 6);
  out->cookie = get_be64(p + 8);
  out->offset = get_be64(p + 16);
  out->length = get_be32(p + 24);
  return true;
}

namespace {

// Command flags each command accepts. FUA is accepted everywhere (clients
// are known to set it on reads and flushes).
uint16_t allowed_flags(uint16_t type, const ExportInfo& exp, const Session& session) {
  uint16_t allowed = kCmdFlagFua;
  switch (type) {
    case kCmdRead:
      if (session.structured_replies) allowed |= kCmdFlagDf;
      break;
    case kCmdWriteZeroes:
      allowed |= kCmdFlagNoHole;
      if (exp.caps.fast_zero) allowed |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      break;
    default:
      break;
  }
  return allowed;
}

bool is_write_command(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

}  // namespace

Verdict validate_request(const Request& req, const ExportInfo& exp, const Session& session) {
  switch (req.type) {
    case kCmdRead:
    case kCmdWrite:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
    case kCmdWriteZeroes:
    case kCmdBlockStatus:
      break;
    default:
      return {kEinval, "unknown command"};
  }
  if ((req.flags & ~allowed_flags(req.type, exp, session)) != 0) {
    return {kEinval, "command flag not valid for this command"};
  }
  if (is_write_command(req.type) && exp.read_only) return {kEperm, "export is read-only"};

  switch (req.type) {
    case kCmdFlush:
      // Offset and length are reserved; nothing else to check.
      if (!exp.caps.flush) return {kEinval, "flush not supported"};
      return {};
    case kCmdTrim:
      if (!exp.caps.trim) return {kEinval, "trim not supported"};
      break;
    case kCmdWriteZeroes:
      if (!exp.caps.write_zeroes) return {kEinval, "write zeroes not supported"};
      break;
    case kCmdBlockStatus:
      if (!session.base_allocation) return {kEinval, "no metadata context negotiated"};
      break;
    default:
      break;
  }

  if (req.length == 0) return {kEinval, "zero-length request"};
  if (!range_in_bounds(req.offset, req.length, exp.size)) {
    if (req.type == kCmdWrite || req.type == kCmdWriteZeroes)
      return {kEnospc, "request beyond end of export"};
    return {kEinval, "request beyond end of export"};
  }
  if (exp.align_required && exp.min_block > 1 &&
      (req.offset % exp.min_block != 0 || req.length % exp.min_block != 0)) {
    return {kEinval, "request not aligned to the minimum block size"};
  }
  // A structured read chunk carries 8 bytes of offset in a 32-bit length.
  if (req.type == kCmdRead && session.structured_replies && req.length > UINT32_MAX - 8) {
    return {kEoverflow, "request too large for one chunk"};
  }
  if ((req.type == kCmdRead || req.type == kCmdWrite) && req.length > exp.max_block) {
    if (req.type == kCmdRead && session.structured_replies) {
      return {kEoverflow, "request larger than the maximum block size"};
    }
    return {kEinval, "request larger than the maximum block size"};
  }
  return {};
}

uint32_t io_flags(const Request& req) {
  uint32_t f = 0;
  if (req.flags & kCmdFlagFua) f |= kFua;
  if (req.flags & kCmdFlagNoHole) f |= kNoHole;
  if (req.flags & kCmdFlagFastZero) f |= kFastZero;
  return f;
}

const char* command_name(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "READ";
    case kCmdWrite:
      return "WRITE";
    case kCmdDisc:
      return "DISC";
    case kCmdFlush:
      return "FLUSH";
    case kCmdTrim:
      return "TRIM";
    case kCmdCache:
      return "CACHE";
    case kCmdWriteZeroes:
      return "WRITE_ZEROES";
    case kCmdBlockStatus:
      return "BLOCK_STATUS";
    default:
      return "UNKNOWN";
  }
}

}  // namespace bowstack::nbd
