// Listening sockets made by someone else (socket activation).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include "nbd/test_harness.h"

namespace bowstack::nbd::testing {
namespace {

using AdoptTest = NbdTest;

// A TCP socket on 127.0.0.1, listening or not; its port in *port.
int loopback_socket(bool listening, uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  if (listening) {
    EXPECT_EQ(::listen(fd, 8), 0);
  }
  socklen_t len = sizeof addr;
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *port = ntohs(addr.sin_port);
  return fd;
}

TEST_F(AdoptTest, ServesAnInheritedListener) {
  make_server();
  uint16_t port = 0;
  int fd = loopback_socket(true, &port);
  auto where = server->adopt_listener(fd);
  ASSERT_TRUE(where.ok()) << where.status().message();
  EXPECT_EQ(*where, "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(server->tcp_port(), port);
  server->start();

  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  RawClient client(c);
  Negotiated n;
  ASSERT_TRUE(client.negotiate(false, false, &n));
  Bytes data;
  EXPECT_EQ(client.read(0, 512, &data), 0u);
}

TEST_F(AdoptTest, RefusesWhatIsNotAListeningStreamSocket) {
  make_server();
  uint16_t port = 0;
  EXPECT_EQ(server->adopt_listener(loopback_socket(false, &port)).status().code(), EINVAL);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  EXPECT_EQ(server->adopt_listener(pipefd[0]).status().code(), ENOTSOCK);
  ::close(pipefd[1]);
  int dgram = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  EXPECT_FALSE(server->adopt_listener(dgram).ok());
}

}  // namespace
}  // namespace bowstack::nbd::testing
