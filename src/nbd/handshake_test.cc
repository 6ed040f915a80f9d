// Option haggling, driven byte by byte by a raw client.
#include <gtest/gtest.h>

#include "nbd/test_harness.h"

namespace bowstack::nbd::testing {
namespace {

using HandshakeTest = NbdTest;

// After a successful handshake, a read of the first block must work.
void expect_transmission_works(RawClient& c) {
  Bytes data;
  EXPECT_EQ(c.read(0, 512, &data), 0u);
  EXPECT_EQ(data.size(), 512u);
}

TEST_F(HandshakeTest, GreetingAdvertisesFixedNewstyleAndNoZeroes) {
  RawClient c = connect();
  uint16_t flags = 0;
  ASSERT_TRUE(c.read_greeting(&flags));
  EXPECT_EQ(flags, 3);
}

TEST_F(HandshakeTest, GoReportsExportAndBlockSizes) {
  RawClient c = connect();
  Negotiated n;
  ASSERT_TRUE(c.negotiate(false, false, &n));
  EXPECT_EQ(n.size, kSize);
  uint16_t want = wire::kFlagHasFlags | wire::kFlagSendFlush | wire::kFlagSendFua | wire::kFlagSendTrim |
                  wire::kFlagSendWriteZeroes | wire::kFlagSendFastZero | wire::kFlagCanMultiConn |
                  wire::kFlagSendCache;
  EXPECT_EQ(n.flags, want);  // no READ_ONLY, no ROTATIONAL; no DF without structured replies
  EXPECT_EQ(n.min_block, 512u);
  EXPECT_EQ(n.preferred_block, 4096u);
  EXPECT_EQ(n.max_block, 32u << 20);
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, UnalignedVolumesAdvertiseBlockSizeButServeAnything) {
  tweak->geometry_.accepts_unaligned = true;
  tweak->geometry_.max_io_size = 1 << 20;
  RawClient c = connect();
  Negotiated n;
  ASSERT_TRUE(c.negotiate(false, false, &n));
  EXPECT_EQ(n.min_block, 512u);
  EXPECT_EQ(n.max_block, 1u << 20);
  Bytes data;
  EXPECT_EQ(c.read(3, 5, &data), 0u);  // unaligned I/O allowed
}

TEST_F(HandshakeTest, StructuredRepliesAddSendDf) {
  RawClient c = connect();
  Negotiated n;
  ASSERT_TRUE(c.negotiate(true, false, &n));
  EXPECT_TRUE(n.flags & wire::kFlagSendDf);
}

TEST_F(HandshakeTest, CapabilitiesDriveTransmissionFlags) {
  tweak->caps_ = Capabilities{};
  tweak->caps_.rotational = true;
  ServerOptions opts;
  opts.read_only = true;
  make_server(opts);
  RawClient c = connect();
  Negotiated n;
  ASSERT_TRUE(c.negotiate(false, false, &n));
  EXPECT_EQ(n.flags,
            wire::kFlagHasFlags | wire::kFlagReadOnly | wire::kFlagRotational | wire::kFlagSendCache);
}

TEST_F(HandshakeTest, GoWithNameAndDescription) {
  ServerOptions opts;
  opts.export_name = "disk0";
  opts.description = "a test disk";
  make_server(opts);
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptGo,
                            RawClient::info_request("disk0", {wire::kInfoName, wire::kInfoDescription})));
  std::map<uint16_t, Bytes> infos;
  for (;;) {
    OptReply r;
    ASSERT_TRUE(c.read_option_reply(&r));
    ASSERT_EQ(r.option, wire::kOptGo);
    if (r.type == wire::kRepAck) break;
    ASSERT_EQ(r.type, wire::kRepInfo);
    ASSERT_GE(r.data.size(), 2u);
    uint16_t type = be16(r.data.data());
    EXPECT_EQ(infos.count(type), 0u) << "duplicate info " << type;
    infos[type] = Bytes(r.data.begin() + 2, r.data.end());
  }
  ASSERT_TRUE(infos.count(wire::kInfoExport));
  ASSERT_TRUE(infos.count(wire::kInfoBlockSize));  // always sent
  EXPECT_EQ(std::string(infos[wire::kInfoName].begin(), infos[wire::kInfoName].end()), "disk0");
  EXPECT_EQ(std::string(infos[wire::kInfoDescription].begin(), infos[wire::kInfoDescription].end()),
            "a test disk");
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, InfoDoesNotEndHaggling) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptInfo, RawClient::info_request("bowstack", {})));
  OptReply r;
  do {
    ASSERT_TRUE(c.read_option_reply(&r));
    EXPECT_EQ(r.option, wire::kOptInfo);
  } while (r.type == wire::kRepInfo);
  EXPECT_EQ(r.type, wire::kRepAck);
  Negotiated n;
  ASSERT_TRUE(c.go("bowstack", {}, &n));
  EXPECT_EQ(n.size, kSize);
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, GoUnknownExportFailsAndHagglingContinues) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptGo, RawClient::info_request("nope", {})));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrUnknown);
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));  // "" selects the default export
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, GoMalformedPayloadIsInvalid) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  // Name length points past the end of the payload.
  ASSERT_TRUE(c.send_option(wire::kOptGo, Msg().u32(100).str("ab").u16(0).data()));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
  // Trailing garbage after the info list.
  Bytes p = RawClient::info_request("", {});
  p.push_back(0);
  ASSERT_TRUE(c.send_option(wire::kOptInfo, p));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
}

TEST_F(HandshakeTest, ExportNameWithoutNoZeroes) {
  RawClient c = connect();
  ASSERT_TRUE(c.read_greeting());
  ASSERT_TRUE(c.send_client_flags(1));  // fixed newstyle only
  ASSERT_TRUE(c.send_option(wire::kOptExportName, Msg().str("bowstack").data()));
  Bytes reply;
  ASSERT_TRUE(c.recv_into(&reply, 8 + 2 + 124));
  EXPECT_EQ(be64(reply.data()), kSize);
  EXPECT_TRUE(be16(reply.data() + 8) & wire::kFlagHasFlags);
  for (size_t i = 10; i < reply.size(); ++i) ASSERT_EQ(reply[i], 0) << i;
  expect_transmission_works(c);  // the next bytes are a reply, so the framing is right
}

TEST_F(HandshakeTest, ExportNameWithNoZeroes) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptExportName));  // empty name: default export
  Bytes reply;
  ASSERT_TRUE(c.recv_into(&reply, 8 + 2));
  EXPECT_EQ(be64(reply.data()), kSize);
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, ExportNameUnknownDisconnects) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptExportName, Msg().str("nope").data()));
  EXPECT_TRUE(c.wait_for_eof());
}

TEST_F(HandshakeTest, List) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptList));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  ASSERT_EQ(r.type, wire::kRepServer);
  ASSERT_GE(r.data.size(), 4u);
  uint32_t len = be32(r.data.data());
  ASSERT_LE(len, r.data.size() - 4);
  EXPECT_EQ(std::string(r.data.begin() + 4, r.data.begin() + 4 + len), "bowstack");
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepAck);

  ASSERT_TRUE(c.send_option(wire::kOptList, {1, 2, 3}));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
}

TEST_F(HandshakeTest, AbortIsAcknowledgedThenClosed) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptAbort));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.option, wire::kOptAbort);
  EXPECT_EQ(r.type, wire::kRepAck);
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(wait_idle());
}

TEST_F(HandshakeTest, UnsupportedOptionsGetErrUnsupAndHagglingContinues) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  for (uint32_t opt : {99u, wire::kOptStartTls, wire::kOptExtendedHeaders, 4u}) {
    ASSERT_TRUE(c.send_option(opt, {7, 7}));
    OptReply r;
    ASSERT_TRUE(c.read_option_reply(&r));
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, wire::kRepErrUnsup) << opt;
  }
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, StructuredReplyWithDataIsInvalid) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptStructuredReply, {0}));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
  EXPECT_FALSE(n.flags & wire::kFlagSendDf);  // not negotiated
}

TEST_F(HandshakeTest, SetMetaContextNeedsStructuredReplies) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send_option(wire::kOptSetMetaContext, RawClient::meta_request("", {"base:allocation"})));
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);

  ASSERT_TRUE(c.send_option(wire::kOptStructuredReply));
  ASSERT_TRUE(c.read_option_reply(&r));
  ASSERT_EQ(r.type, wire::kRepAck);
  ASSERT_TRUE(c.send_option(wire::kOptSetMetaContext,
                            RawClient::meta_request("bowstack", {"x-other:thing", "base:allocation"})));
  ASSERT_TRUE(c.read_option_reply(&r));
  ASSERT_EQ(r.type, wire::kRepMetaContext);
  ASSERT_GT(r.data.size(), 4u);
  EXPECT_EQ(std::string(r.data.begin() + 4, r.data.end()), "base:allocation");
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepAck);
}

TEST_F(HandshakeTest, SetMetaContextUnknownExportOrMalformed) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  OptReply r;
  ASSERT_TRUE(c.send_option(wire::kOptStructuredReply));
  ASSERT_TRUE(c.read_option_reply(&r));
  ASSERT_TRUE(c.send_option(wire::kOptSetMetaContext, RawClient::meta_request("nope", {"base:allocation"})));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrUnknown);
  // Query count far larger than the payload.
  ASSERT_TRUE(c.send_option(wire::kOptSetMetaContext, Msg().u32(0).u32(0x7fffffff).data()));
  ASSERT_TRUE(c.read_option_reply(&r));
  EXPECT_EQ(r.type, wire::kRepErrInvalid);
}

TEST_F(HandshakeTest, ListMetaContext) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  auto list = [&](const std::vector<std::string>& queries) {
    std::vector<std::string> names;
    EXPECT_TRUE(c.send_option(wire::kOptListMetaContext, RawClient::meta_request("", queries)));
    for (;;) {
      OptReply r;
      if (!c.read_option_reply(&r)) {
        ADD_FAILURE() << "no reply";
        return names;
      }
      if (r.type == wire::kRepAck) return names;
      EXPECT_EQ(r.type, wire::kRepMetaContext);
      if (r.data.size() >= 4) names.emplace_back(r.data.begin() + 4, r.data.end());
    }
  };
  EXPECT_EQ(list({}), std::vector<std::string>{"base:allocation"});
  EXPECT_EQ(list({"base:"}), std::vector<std::string>{"base:allocation"});
  EXPECT_EQ(list({"base:allocation"}), std::vector<std::string>{"base:allocation"});
  EXPECT_TRUE(list({"x-unknown:foo"}).empty());
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
}

TEST_F(HandshakeTest, UnknownClientFlagsDisconnect) {
  RawClient c = connect();
  ASSERT_TRUE(c.read_greeting());
  ASSERT_TRUE(c.send_client_flags(1u << 5));
  EXPECT_TRUE(c.wait_for_eof());
}

TEST_F(HandshakeTest, BadOptionMagicDisconnects) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send(Msg().u64(0x1234).u32(wire::kOptList).u32(0)));
  EXPECT_TRUE(c.wait_for_eof());
}

TEST_F(HandshakeTest, OversizedOptionIsDiscardedWithTooBig) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  // Sent from a thread: the server reads it while we are not yet reading.
  Bytes big(1 << 20, 0xab);
  std::thread sender([&] { EXPECT_TRUE(c.send_option(wire::kOptGo, big)); });
  OptReply r;
  ASSERT_TRUE(c.read_option_reply(&r));
  sender.join();
  EXPECT_EQ(r.option, wire::kOptGo);
  EXPECT_EQ(r.type, wire::kRepErrTooBig);
  Negotiated n;
  ASSERT_TRUE(c.go("", {}, &n));
  expect_transmission_works(c);
}

TEST_F(HandshakeTest, TooManyOptionsDisconnect) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  bool closed = false;
  for (int i = 0; i < 1000 && !closed; ++i) {
    OptReply r;
    closed = !c.send_option(99) || !c.read_option_reply(&r);
  }
  EXPECT_TRUE(closed);
}

TEST_F(HandshakeTest, StalledHandshakeTimesOut) {
  ServerOptions opts;
  opts.handshake_timeout_ms = 100;
  make_server(opts);
  RawClient c = connect();
  ASSERT_TRUE(c.read_greeting());
  // Send nothing.
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(wait_idle());
}

TEST_F(HandshakeTest, ClientVanishesMidHandshake) {
  RawClient c = connect();
  ASSERT_TRUE(c.start_handshake());
  ASSERT_TRUE(c.send(Msg().u64(wire::kIHaveOpt).u32(wire::kOptGo).u32(100).str("abc")));
  c.close();
  EXPECT_TRUE(wait_idle());
}

}  // namespace
}  // namespace bowstack::nbd::testing
