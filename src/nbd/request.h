// Transmission-phase requests: decoding and the checks made before a
// request may reach the Volume.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nbd/export_info.h"
#include "nbd/session.h"

namespace bowstack::nbd {

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// Decodes a kRequestSize-byte request header. Returns false if the magic is
// wrong (the stream can no longer be trusted).
bool parse_request(const std::byte* p, Request* out);

// The outcome of validation: error 0 means the request may be executed;
// otherwise the NBD error to reply with and a short reason for humans.
struct Verdict {
  uint32_t error = 0;
  const char* reason = "";
};

// Checks flags, permissions, range, alignment and size limits against the
// export and the session, in that order. A WRITE that fails still has its
// payload on the wire, which the caller must consume.
// REQUIRES: req.type != kCmdDisc.
Verdict validate_request(const Request& req, const ExportInfo& exp, const Session& session);

// The IoFlag bits (core/block_device.h) a validated request carries.
uint32_t io_flags(const Request& req);

// "READ", "WRITE", ... or "UNKNOWN", for logs.
const char* command_name(uint16_t type);

}  // namespace bowstack::nbd
