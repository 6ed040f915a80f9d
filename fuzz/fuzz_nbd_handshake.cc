// fuzz_nbd_handshake: the input is what a client sends during the
// fixed-newstyle handshake (client flags, then options). The server's
// Handshake runs over one end of a socketpair exactly as in production
// (BufferedReader with a timeout); a helper thread plays the client.
//
// Checks, beyond "no crash, no hang": the server's byte stream is well
// framed (greeting, then option replies with the right magic and lengths,
// answering the client's options in order, then at most the EXPORT_NAME
// answer), the handshake ends in transmission only after GO or EXPORT_NAME,
// and what it negotiated is coherent.
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "core/memory_device.h"
#include "fuzz_util.h"
#include "nbd/export_info.h"
#include "nbd/handshake.h"
#include "nbd/protocol.h"

namespace bowstack::fuzz {
namespace {

constexpr size_t kMaxInput = 1 << 20;
constexpr uint64_t kExportSize = 64 << 10;

const nbd::ExportInfo& export_info() {
  static const nbd::ExportInfo exp = [] {
    MemoryDevice dev(kExportSize);
    return nbd::make_export_info(dev.geometry(), dev.capabilities(), "bowstack", "fuzz export", false);
  }();
  return exp;
}

// The options the client sent, in order, as far as the input frames them.
std::vector<uint32_t> client_options(const uint8_t* data, size_t size) {
  std::vector<uint32_t> out;
  size_t at = 4;  // client flags
  while (at + nbd::kOptionHeaderSize <= size) {
    out.push_back(load_be32(data + at + 8));
    at += nbd::kOptionHeaderSize + load_be32(data + at + 12);
  }
  return out;
}

bool known_reply_type(uint32_t t) {
  switch (t) {
    case nbd::kRepAck:
    case nbd::kRepServer:
    case nbd::kRepInfo:
    case nbd::kRepMetaContext:
    case nbd::kRepErrUnsup:
    case nbd::kRepErrInvalid:
    case nbd::kRepErrUnknown:
    case nbd::kRepErrTooBig:
      return true;
    default:
      return false;
  }
}

void check_server_stream(const std::vector<uint8_t>& out, const std::vector<uint32_t>& options,
                         bool transmission, const nbd::Session& session) {
  FUZZ_CHECK(out.size() >= 18);
  FUZZ_CHECK(load_be64(out.data()) == nbd::kNbdMagic);
  FUZZ_CHECK(load_be64(out.data() + 8) == nbd::kIHaveOpt);
  size_t at = 18;
  size_t next_option = 0;  // replies answer the client's options in order
  uint32_t last_option = 0, last_type = 0;
  while (out.size() - at >= nbd::kOptionReplyHeaderSize &&
         load_be64(out.data() + at) == nbd::kOptionReplyMagic) {
    const uint32_t option = load_be32(out.data() + at + 8);
    const uint32_t type = load_be32(out.data() + at + 12);
    const uint32_t len = load_be32(out.data() + at + 16);
    FUZZ_CHECK(known_reply_type(type));
    FUZZ_CHECK(out.size() - at - nbd::kOptionReplyHeaderSize >= len);
    if (type == nbd::kRepAck) FUZZ_CHECK(len == 0);
    while (next_option < options.size() && options[next_option] != option) ++next_option;
    FUZZ_CHECK_MSG(next_option < options.size(), "a reply to option " + std::to_string(option) +
                                                     " the client did not send (or out of order)");
    at += nbd::kOptionReplyHeaderSize + len;
    last_option = option;
    last_type = type;
  }
  const size_t rest = out.size() - at;
  if (!transmission) {
    FUZZ_CHECK_MSG(rest == 0, std::to_string(rest) + " unframed bytes after the option replies");
    return;
  }
  FUZZ_CHECK(session.transmission_flags & nbd::kFlagHasFlags);
  FUZZ_CHECK(!session.base_allocation || session.structured_replies);
  if (rest == 0) {
    // Entered transmission through GO, whose last reply is its ACK.
    FUZZ_CHECK(last_option == nbd::kOptGo && last_type == nbd::kRepAck);
  } else {
    // EXPORT_NAME: size, flags and (without NO_ZEROES) 124 zero bytes.
    FUZZ_CHECK(rest == 10 || rest == 10 + nbd::kExportNameZeroes);
    FUZZ_CHECK(load_be64(out.data() + at) == kExportSize);
    FUZZ_CHECK(load_be16(out.data() + at + 8) == session.transmission_flags);
  }
}

}  // namespace
}  // namespace bowstack::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bowstack;
  using namespace bowstack::fuzz;
  if (size > kMaxInput) return 0;
  Peer peer;
  if (!peer.start(std::span(data, size))) return 0;
  const int fd = peer.server_fd();
  // As Connection::run sets them up for the handshake.
  timeval tv{5, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  nbd::Transport transport(fd);
  nbd::BufferedReader reader(&transport);
  reader.set_timeout_ms(5000);
  nbd::Session session;
  const bool transmission = nbd::Handshake(&transport, &reader, export_info(), 1).run(&session);
  ::close(fd);
  check_server_stream(peer.finish(), client_options(data, size), transmission, session);
  return 0;
}
