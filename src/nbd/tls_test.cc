// TLS: option parsing, the PSK file format, and STARTTLS driven by a raw
// client that upgrades its own socket with a GnuTLS client session.
#include <gnutls/gnutls.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "nbd/test_harness.h"
#include "nbd/tls_credentials.h"

namespace bowstack::nbd::testing {
namespace {

// --- Options and PSK files ---

TEST(TlsOptionsTest, ModesAreSpelledAsNbdkitSpellsThem) {
  EXPECT_EQ(parse_tls_mode("off").value(), TlsMode::kOff);
  EXPECT_EQ(parse_tls_mode("on").value(), TlsMode::kOn);
  EXPECT_EQ(parse_tls_mode("require").value(), TlsMode::kRequire);
  EXPECT_EQ(parse_tls_mode("force").value(), TlsMode::kRequire);
  EXPECT_FALSE(parse_tls_mode("maybe").ok());
}

TEST(TlsOptionsTest, InconsistentOptionsAreRefused) {
  EXPECT_TRUE(validate_tls_options({}).ok());
  EXPECT_FALSE(validate_tls_options({TlsMode::kOff, "", "keys.psk", false}).ok());
  EXPECT_FALSE(validate_tls_options({TlsMode::kRequire, "", "", false}).ok());
  EXPECT_FALSE(validate_tls_options({TlsMode::kOn, "dir", "keys.psk", false}).ok());
  EXPECT_FALSE(validate_tls_options({TlsMode::kOn, "", "keys.psk", true}).ok());
  EXPECT_TRUE(validate_tls_options({TlsMode::kOn, "dir", "", true}).ok());
  EXPECT_TRUE(validate_tls_options({TlsMode::kRequire, "", "keys.psk", false}).ok());
}

TEST(TlsOptionsTest, PskFileAsPsktoolWritesIt) {
  auto keys = parse_psk_file("alice:00ff10\r\n# comment\n\nbob:ABCD\n");
  ASSERT_TRUE(keys.ok()) << keys.status().message();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->at("alice"), (std::vector<uint8_t>{0x00, 0xff, 0x10}));
  EXPECT_EQ(keys->at("bob"), (std::vector<uint8_t>{0xab, 0xcd}));
}

TEST(TlsOptionsTest, MalformedPskFilesNameTheLine) {
  for (const char* bad : {"", "alice\n", ":00\n", "alice:\n", "alice:abc\n", "alice:zz\n", "a:00\na:11\n"}) {
    auto keys = parse_psk_file(bad);
    EXPECT_FALSE(keys.ok()) << bad;
  }
  auto keys = parse_psk_file("alice:00\nbob:0g\n");
  ASSERT_FALSE(keys.ok());
  EXPECT_NE(keys.status().context().find("line 2"), std::string::npos) << keys.status().context();
}

TEST(TlsOptionsTest, MissingFilesFailAtCreate) {
  EXPECT_FALSE(TlsContext::create({TlsMode::kOn, "", "/nonexistent/keys.psk", false}).ok());
  EXPECT_FALSE(TlsContext::create({TlsMode::kOn, "/nonexistent", "", false}).ok());
}

// --- STARTTLS ---

constexpr const char* kKey1 = "0123456789abcdef0123456789abcdef";
constexpr const char* kKey2 = "fedcba9876543210fedcba9876543210";

// A GnuTLS PSK client session on a RawClient's socket.
class TlsClient {
 public:
  ~TlsClient() {
    if (session_ != nullptr) gnutls_deinit(session_);
    if (creds_ != nullptr) gnutls_psk_free_client_credentials(creds_);
  }
  // Runs the client handshake; on success routes c's I/O through TLS.
  bool handshake(RawClient& c, const std::string& user, const std::string& hexkey) {
    if (gnutls_psk_allocate_client_credentials(&creds_) < 0) return false;
    gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(hexkey.data())),
                       static_cast<unsigned>(hexkey.size())};
    if (gnutls_psk_set_client_credentials(creds_, user.c_str(), &key, GNUTLS_PSK_KEY_HEX) < 0) return false;
    if (gnutls_init(&session_, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) < 0) return false;
    if (gnutls_priority_set_direct(session_, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", nullptr) < 0) return false;
    if (gnutls_credentials_set(session_, GNUTLS_CRD_PSK, creds_) < 0) return false;
    gnutls_transport_set_int(session_, c.fd());
    gnutls_handshake_set_timeout(session_, RawClient::kTimeoutMs);
    int rc;
    do {
      rc = gnutls_handshake(session_);
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
    if (rc < 0) return false;
    gnutls_record_set_timeout(session_, RawClient::kTimeoutMs);
    gnutls_session_t s = session_;
    c.set_channel([s](const void* p, size_t n) { return gnutls_record_send(s, p, n); },
                  [s](void* p, size_t n) { return gnutls_record_recv(s, p, n); });
    return true;
  }

 private:
  gnutls_psk_client_credentials_t creds_ = nullptr;
  gnutls_session_t session_ = nullptr;
};

class TlsTest : public NbdTest {
 protected:
  void SetUp() override {
    NbdTest::SetUp();
    char dir[] = "/tmp/bowstack-tls-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    psk_file_ = dir_ + "/keys.psk";
    write_psk(kKey1);
  }
  void TearDown() override {
    NbdTest::TearDown();
    ::unlink(psk_file_.c_str());
    ::rmdir(dir_.c_str());
  }
  void write_psk(const char* key) { std::ofstream(psk_file_) << "alice:" << key << "\n"; }
  void make_tls_server(TlsMode mode) {
    auto ctx = TlsContext::create({mode, "", psk_file_, false});
    ASSERT_TRUE(ctx.ok()) << ctx.status().message();
    tls = ctx.value();
    ServerOptions opts;
    opts.tls = tls;
    make_server(opts);
  }
  // STARTTLS answered with ACK, then the TLS handshake; true if both worked.
  bool start_tls(RawClient& c, TlsClient& t, const char* key = kKey1, const std::string& user = "alice") {
    OptReply r;
    if (!c.send_option(wire::kOptStartTls) || !c.read_option_reply(&r)) return false;
    if (r.option != wire::kOptStartTls || r.type != wire::kRepAck) return false;
    return t.handshake(c, user, key);
  }

  std::string dir_, psk_file_;
  std::shared_ptr<TlsContext> tls;
};

TEST_F(TlsTest, RequiredTlsRefusesEveryPlainOptionButAbort) {
  make_tls_server(TlsMode::kRequire);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  for (uint32_t opt : {wire::kOptList, wire::kOptInfo, wire::kOptGo, wire::kOptStructuredReply,
                       wire::kOptListMetaContext, wire::kOptSetMetaContext, 99u}) {
    Bytes data = opt == wire::kOptInfo || opt == wire::kOptGo ? RawClient::info_request("", {}) : Bytes{};
    ASSERT_TRUE(c.send_option(opt, data));
    OptReply r;
    ASSERT_TRUE(c.read_option_reply(&r));
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, wire::kRepErrTlsReqd) << opt;
  }
  ASSERT_TRUE(c.send_option(wire::kOptAbort));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepAck);
  EXPECT_TRUE(c.wait_for_eof());
}

TEST_F(TlsTest, RequiredTlsClosesOnPlainExportName) {
  make_tls_server(TlsMode::kRequire);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptExportName));
  EXPECT_TRUE(c.wait_for_eof());  // nothing sent: not even the export size
  EXPECT_TRUE(wait_idle());
}

TEST_F(TlsTest, PskSessionServesStructuredRepliesAndBlockStatus) {
  make_tls_server(TlsMode::kRequire);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  TlsClient t;
  ASSERT_TRUE(start_tls(c, t));
  Negotiated n;
  ASSERT_TRUE(c.negotiate_options(true, true, &n));
  EXPECT_EQ(n.size, kSize);
  EXPECT_TRUE(n.flags & wire::kFlagCanMultiConn);
  Bytes data = pattern(8192, 3);
  EXPECT_EQ(c.write(4096, data, wire::kCmdFlagFua), 0u);
  Bytes back;
  EXPECT_EQ(c.read(4096, 8192, &back), 0u);
  EXPECT_EQ(back, data);
  EXPECT_EQ(device_bytes(4096, 8192), data);
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdBlockStatus, 7, 0, 65536));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.cookie, 7u);
  EXPECT_EQ(r.type, wire::kReplyTypeBlockStatus);
  EXPECT_TRUE(r.flags & wire::kReplyFlagDone);
}

TEST_F(TlsTest, LargeAndPipelinedRequestsOverTls) {
  make_tls_server(TlsMode::kRequire);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  TlsClient t;
  ASSERT_TRUE(start_tls(c, t));
  Negotiated n;
  ASSERT_TRUE(c.negotiate_options(false, false, &n));
  // Larger than a TLS record and than the server's read buffer.
  Bytes big = pattern(kSize / 2, 9);
  EXPECT_EQ(c.write(0, big), 0u);
  Bytes back;
  EXPECT_EQ(c.read(0, uint32_t(big.size()), &back), 0u);
  EXPECT_EQ(back, big);
  // Many requests in flight at once: several workers share the session.
  constexpr int kRequests = 64;
  for (int i = 0; i < kRequests; ++i) ASSERT_TRUE(c.send_request(0, wire::kCmdRead, 100 + i, i * 4096, 4096));
  std::map<uint64_t, uint32_t> lengths;
  for (int i = 0; i < kRequests; ++i) lengths[100 + i] = 4096;
  for (int i = 0; i < kRequests; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r, lengths));
    EXPECT_EQ(r.error, 0u);
    uint64_t at = (r.cookie - 100) * 4096;
    EXPECT_TRUE(std::equal(r.payload.begin(), r.payload.end(), big.begin() + at));
  }
  ASSERT_TRUE(c.send_request(0, wire::kCmdDisc, 1, 0, 0));
  EXPECT_TRUE(wait_idle());
}

TEST_F(TlsTest, NothingNegotiatedInPlainTextSurvivesStartTls) {
  make_tls_server(TlsMode::kOn);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  OptReply r;
  ASSERT_TRUE(c.send_option(wire::kOptStructuredReply));
  ASSERT_TRUE(c.read_option_reply(&r));
  ASSERT_EQ(r.type, wire::kRepAck);
  TlsClient t;
  ASSERT_TRUE(start_tls(c, t));
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
  EXPECT_FALSE(n.flags & wire::kFlagSendDf);  // structured replies are off again
  Bytes data;
  EXPECT_EQ(c.read(0, 512, &data), 0u);
  Reply reply;
  ASSERT_TRUE(c.send_request(0, wire::kCmdFlush, 5, 0, 0));
  ASSERT_TRUE(c.read_reply(&reply));
  EXPECT_FALSE(reply.structured);
}

TEST_F(TlsTest, StartTlsTwiceOrWithDataIsInvalid) {
  make_tls_server(TlsMode::kOn);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  OptReply r;
  ASSERT_TRUE(c.send_option(wire::kOptStartTls, {1}));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
  TlsClient t;
  ASSERT_TRUE(start_tls(c, t));
  ASSERT_TRUE(c.send_option(wire::kOptStartTls));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
}

TEST_F(TlsTest, OptionalTlsServesPlainClientsToo) {
  make_tls_server(TlsMode::kOn);
  RawClient c = session(true, true);
  Bytes data;
  EXPECT_EQ(c.read(0, 512, &data), 0u);
}

TEST_F(TlsTest, WrongKeyOrUserIsRefused) {
  make_tls_server(TlsMode::kRequire);
  for (const auto& [key, user] : {std::pair{kKey2, "alice"}, std::pair{kKey1, "mallory"}}) {
    RawClient c = connect();
    ASSERT_TRUE(c.start_handshake());
    TlsClient t;
    EXPECT_FALSE(start_tls(c, t, key, user));
  }
  EXPECT_TRUE(wait_idle());
}

TEST_F(TlsTest, ReloadChangesKeysForNewClientsOnly) {
  make_tls_server(TlsMode::kRequire);
  RawClient old_client = connect();
  ASSERT_TRUE(old_client.start_handshake());
  TlsClient t1;
  ASSERT_TRUE(start_tls(old_client, t1, kKey1));
  Negotiated n;
  ASSERT_TRUE(old_client.negotiate_options(false, false, &n));

  write_psk(kKey2);
  ASSERT_TRUE(tls->reload().ok());
  {
    RawClient c = connect();
    ASSERT_TRUE(c.start_handshake());
    TlsClient t;
    EXPECT_FALSE(start_tls(c, t, kKey1));
  }
  {
    RawClient c = connect();
    ASSERT_TRUE(c.start_handshake());
    TlsClient t;
    ASSERT_TRUE(start_tls(c, t, kKey2));
    ASSERT_TRUE(c.negotiate_options(false, false, &n));
  }
  Bytes data;
  EXPECT_EQ(old_client.read(0, 4096, &data), 0u);  // the old session goes on

  // A broken file keeps the current keys.
  std::ofstream(psk_file_) << "not a key file\n";
  EXPECT_FALSE(tls->reload().ok());
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  TlsClient t;
  EXPECT_TRUE(start_tls(c, t, kKey2));
}

}  // namespace
}  // namespace bowstack::nbd::testing
