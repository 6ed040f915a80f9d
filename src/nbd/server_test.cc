// Listeners, accept loop, connection accounting and shutdown.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdlib>
#include <filesystem>

#include "nbd/test_harness.h"

namespace bowstack::nbd::testing {
namespace {

using ServerTest = NbdTest;

int connect_tcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string temp_socket_path() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "bowstack-nbd-test-XXXXXX").string();
  char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl + "/nbd.sock";
}

TEST_F(ServerTest, TcpLoopbackOnEphemeralPort) {
  make_server();
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  uint16_t port = server->tcp_port();
  ASSERT_NE(port, 0);
  server->start();

  int fd = connect_tcp(port);
  ASSERT_GE(fd, 0);
  RawClient c(fd);
  Negotiated n;
  ASSERT_TRUE(c.negotiate(true, false, &n));
  EXPECT_EQ(n.size, kSize);
  Bytes data = pattern(65536, 20);
  ASSERT_EQ(c.write(0, data), 0u);
  Bytes back;
  ASSERT_EQ(c.read(0, 65536, &back), 0u);
  EXPECT_EQ(back, data);
  EXPECT_EQ(server->active_connections(), 1u);
  EXPECT_EQ(server->total_connections(), 1u);
  ASSERT_TRUE(c.send_request(0, wire::kCmdDisc, 0, 0, 0));
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(wait_idle());
  server->stop();
  EXPECT_LT(connect_tcp(port), 0);  // no longer listening
}

TEST_F(ServerTest, AddressInUse) {
  make_server();
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  Server other(*volume, {});
  Status s = other.listen_tcp("127.0.0.1", server->tcp_port());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), EADDRINUSE);
  EXPECT_EQ(s.context(), "address 127.0.0.1:" + std::to_string(server->tcp_port()) + " is already in use");
}

TEST_F(ServerTest, UnixSocket) {
  std::string path = temp_socket_path();
  make_server();
  ASSERT_TRUE(server->listen_unix(path).ok());
  server->start();
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));

  Server other(*volume, {});
  EXPECT_FALSE(other.listen_unix(path).ok());  // path exists

  int fd = connect_unix(path);
  ASSERT_GE(fd, 0);
  RawClient c(fd);
  Negotiated n;
  ASSERT_TRUE(c.negotiate(false, false, &n));
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0), 0u);
  server->stop();
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_NE(::lstat(path.c_str(), &st), 0);  // unlinked
  std::filesystem::remove(std::filesystem::path(path).parent_path());
}

TEST_F(ServerTest, ConnectionsBeyondTheLimitAreClosed) {
  ServerOptions opts;
  opts.max_connections = 2;
  make_server(opts);
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  server->start();
  RawClient a(connect_tcp(server->tcp_port()));
  RawClient b(connect_tcp(server->tcp_port()));
  ASSERT_TRUE(a.read_greeting());
  ASSERT_TRUE(b.read_greeting());
  RawClient refused(connect_tcp(server->tcp_port()));
  EXPECT_TRUE(refused.wait_for_eof());
  EXPECT_EQ(server->active_connections(), 2u);
  // A slot frees up once a client leaves.
  a.close();
  EXPECT_TRUE([&] {
    for (int i = 0; i < 2000 && server->active_connections() != 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return server->active_connections() == 1;
  }());
  RawClient d(connect_tcp(server->tcp_port()));
  EXPECT_TRUE(d.read_greeting());
}

TEST_F(ServerTest, StopDuringHandshakeAndIdempotence) {
  make_server();
  RawClient c = connect();
  ASSERT_TRUE(c.read_greeting());
  RawClient idle = session();  // in transmission, nothing in flight
  server->stop();
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(idle.wait_for_eof());
  server->stop();
  EXPECT_EQ(server->active_connections(), 0u);
  // After stop, new sockets are closed straight away.
  RawClient late = connect();
  EXPECT_TRUE(late.wait_for_eof());
}

TEST_F(ServerTest, StopWithoutStartAndDestructorStops) {
  make_server();
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  server->stop();
  make_server();
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  server->start();
  RawClient c(connect_tcp(server->tcp_port()));
  ASSERT_TRUE(c.read_greeting());
  server.reset();  // ~Server stops and joins
  EXPECT_TRUE(c.wait_for_eof());
}

TEST_F(ServerTest, ManyConnectionsInParallel) {
  make_server();
  ASSERT_TRUE(server->listen_tcp("127.0.0.1", 0).ok());
  server->start();
  constexpr int kClients = 8;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      RawClient c(connect_tcp(server->tcp_port()));
      Negotiated n;
      if (!c.negotiate(t % 2 == 0, false, &n)) return;
      Bytes data = pattern(4096, uint8_t(t));
      uint64_t offset = uint64_t(t) * 65536;
      for (int i = 0; i < 20; ++i) {
        if (c.write(offset, data) != 0) return;
        Bytes back;
        if (c.read(offset, 4096, &back) != 0 || back != data) return;
      }
      ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_EQ(server->total_connections(), uint64_t(kClients));
}

}  // namespace
}  // namespace bowstack::nbd::testing
