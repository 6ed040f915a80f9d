// Shared by the fuzz targets: contract checks, a device that enforces the
// BlockDevice contract on its callers, the client end of a socketpair, an
// input hash, and the libFuzzer initialiser (quiet logs).
//
// Harnesses may abort on a broken contract (that is what libFuzzer reports);
// the code under test never may.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/block_device.h"

namespace bowstack::fuzz {

// A hash of the input, for harnesses that derive choices (where to stop a
// restore, which operations to run) from it deterministically.
inline uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

// A broken contract: print what and where, then abort so libFuzzer saves the
// input.
[[noreturn]] inline void contract_failed(const char* what, const char* file, int line,
                                         const std::string& detail) {
  std::fprintf(stderr, "%s:%d: contract violated: %s %s\n", file, line, what, detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond)                                                           \
  do {                                                                             \
    if (!(cond)) ::bowstack::fuzz::contract_failed(#cond, __FILE__, __LINE__, ""); \
  } while (0)
#define FUZZ_CHECK_MSG(cond, detail)                                                     \
  do {                                                                                   \
    if (!(cond)) ::bowstack::fuzz::contract_failed(#cond, __FILE__, __LINE__, (detail)); \
  } while (0)

// Forwards to the device below after checking the BlockDevice contract every
// caller must honour: ranges inside the device, aligned to its logical block
// size. Counts writes, so a harness can tell whether anything was written.
class CheckedDevice final : public StackedDevice {
 public:
  explicit CheckedDevice(std::shared_ptr<BlockDevice> lower) : StackedDevice(std::move(lower)) {}
  std::string_view kind() const override { return "checked"; }

  Status read(uint64_t offset, std::span<std::byte> buf) override {
    check(offset, buf.size(), "read");
    return StackedDevice::read(offset, buf);
  }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    check(offset, buf.size(), "write");
    ++writes;
    return StackedDevice::write(offset, buf, flags);
  }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override {
    check(offset, length, "trim");
    ++writes;
    return StackedDevice::trim(offset, length, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    check(offset, length, "write_zeroes");
    ++writes;
    return StackedDevice::write_zeroes(offset, length, flags);
  }

  uint64_t writes = 0;

 private:
  void check(uint64_t offset, uint64_t length, const char* op) const {
    const Geometry g = geometry();
    if (!range_in_bounds(offset, length, g.size)) {
      contract_failed("range inside the device", __FILE__, __LINE__,
                      std::string(op) + " " + std::to_string(offset) + "+" + std::to_string(length) +
                          " on a device of " + std::to_string(g.size) + " bytes");
    }
    if (!g.accepts_unaligned && (offset % g.logical_block_size != 0 || length % g.logical_block_size != 0)) {
      contract_failed("aligned I/O", __FILE__, __LINE__,
                      std::string(op) + " " + std::to_string(offset) + "+" + std::to_string(length));
    }
    if ((std::string_view(op) == "read" || std::string_view(op) == "write") && length > g.max_io_size) {
      contract_failed("I/O within max_io_size", __FILE__, __LINE__, std::to_string(length));
    }
  }
};

// The client end of a socketpair whose server end the harness runs in its
// own thread. A helper thread sends `input` (as fast as the server reads it),
// then shuts down its sending side, and collects everything the server sends
// until the server closes. Bounded: the server sees EOF once the input is
// consumed, so nothing waits for a peer that will never talk.
class Peer {
 public:
  // Returns false (and leaves server_fd() -1) if the socketpair fails.
  bool start(std::span<const uint8_t> input) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
    server_fd_ = sv[0];
    client_fd_ = sv[1];
    input_.assign(input.begin(), input.end());
    thread_ = std::thread([this] { pump(); });
    return true;
  }
  int server_fd() const { return server_fd_; }
  // REQUIRES: the server end has been closed (else this waits for it).
  const std::vector<uint8_t>& finish() {
    if (thread_.joinable()) thread_.join();
    if (client_fd_ >= 0) ::close(client_fd_);
    client_fd_ = -1;
    return output_;
  }
  ~Peer() { finish(); }

 private:
  void pump() {
    ::fcntl(client_fd_, F_SETFL, ::fcntl(client_fd_, F_GETFL) | O_NONBLOCK);
    size_t sent = 0;
    bool sending = true;
    if (input_.empty()) {
      ::shutdown(client_fd_, SHUT_WR);
      sending = false;
    }
    uint8_t buf[65536];
    for (;;) {
      pollfd p{client_fd_, static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
      // A server that neither reads nor closes for this long is a hang:
      // abort so that libFuzzer keeps the input.
      int r = ::poll(&p, 1, 20000);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) contract_failed("server makes progress", __FILE__, __LINE__, "no I/O for 20 s");
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(client_fd_, buf, sizeof buf, 0);
        if (n > 0) {
          output_.insert(output_.end(), buf, buf + n);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          return;  // the server closed its end
        }
      }
      if (sending && (p.revents & POLLOUT)) {
        ssize_t n = ::send(client_fd_, input_.data() + sent, input_.size() - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<size_t>(n);
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == input_.size()) {
          ::shutdown(client_fd_, SHUT_WR);
          sending = false;
        }
      }
    }
  }

  int server_fd_ = -1;
  int client_fd_ = -1;
  std::vector<uint8_t> input_;
  std::vector<uint8_t> output_;
  std::thread thread_;
};

inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline uint64_t load_be64(const uint8_t* p) { return (uint64_t(load_be32(p)) << 32) | load_be32(p + 4); }
inline uint16_t load_be16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }

}  // namespace bowstack::fuzz

// Every fuzzer is one translation unit that includes this header once:
// this is its libFuzzer initialiser. The code under test logs through
// spdlog; at fuzzing speed that is only noise.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}
