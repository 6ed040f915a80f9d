// Transmission phase: requests, validation, replies, concurrency, teardown.
#include <gtest/gtest.h>

#include <set>

#include "nbd/test_harness.h"

namespace bowstack::nbd::testing {
namespace {

using TransmissionTest = NbdTest;

TEST_F(TransmissionTest, WriteReadRoundTripSimpleReplies) {
  RawClient c = session();
  Bytes data = pattern(8192, 1);
  ASSERT_EQ(c.write(4096, data), 0u);
  EXPECT_EQ(device_bytes(4096, data.size()), data);
  Bytes back;
  ASSERT_EQ(c.read(4096, 8192, &back), 0u);
  EXPECT_EQ(back, data);
}

TEST_F(TransmissionTest, WriteReadRoundTripStructuredReplies) {
  RawClient c = session(true);
  Bytes data = pattern(4096, 2);
  ASSERT_TRUE(c.send_request(0, wire::kCmdWrite, 11, 8192, 4096, data));
  Reply r;
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_TRUE(r.structured);
  EXPECT_EQ(r.cookie, 11u);
  EXPECT_EQ(r.type, wire::kReplyTypeNone);
  EXPECT_EQ(r.flags, wire::kReplyFlagDone);
  EXPECT_TRUE(r.payload.empty());

  ASSERT_TRUE(c.send_request(wire::kCmdFlagDf, wire::kCmdRead, 12, 8192, 4096));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.cookie, 12u);
  EXPECT_EQ(r.type, wire::kReplyTypeOffsetData);
  EXPECT_EQ(r.flags, wire::kReplyFlagDone);
  ASSERT_EQ(r.payload.size(), 8u + 4096);
  EXPECT_EQ(be64(r.payload.data()), 8192u);
  EXPECT_EQ(Bytes(r.payload.begin() + 8, r.payload.end()), data);
}

TEST_F(TransmissionTest, LargeTransfersUseTheDirectPath) {
  RawClient c = session();
  Bytes data = pattern(512 << 10, 3);
  ASSERT_EQ(c.write(0, data), 0u);
  Bytes back;
  ASSERT_EQ(c.read(0, uint32_t(data.size()), &back), 0u);
  EXPECT_EQ(back, data);
}

TEST_F(TransmissionTest, FlushReachesTheDevice) {
  RawClient c = session();
  uint64_t before = mem->flush_count();
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0), 0u);
  EXPECT_EQ(mem->flush_count(), before + 1);
  // FUA on a flush (some clients set it) is accepted.
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0, wire::kCmdFlagFua), 0u);
  EXPECT_EQ(mem->flush_count(), before + 2);
}

TEST_F(TransmissionTest, FuaReachesTheDevice) {
  RawClient c = session();
  ASSERT_EQ(c.write(0, pattern(512, 4), wire::kCmdFlagFua), 0u);
  EXPECT_EQ(tweak->last_flags.load(), uint32_t{kFua});
  ASSERT_EQ(c.write(0, pattern(512, 4)), 0u);
  EXPECT_EQ(tweak->last_flags.load(), 0u);
  // FUA on a read is accepted and harmless.
  Bytes back;
  EXPECT_EQ(c.read(0, 512, &back, wire::kCmdFlagFua), 0u);
}

TEST_F(TransmissionTest, FuaIsEmulatedWithFlushWhenTheVolumeLacksIt) {
  tweak->caps_.fua = false;
  RawClient c = session();
  uint64_t before = mem->flush_count();
  ASSERT_EQ(c.write(0, pattern(512, 5), wire::kCmdFlagFua), 0u);
  EXPECT_EQ(mem->flush_count(), before + 1);
  ASSERT_EQ(c.write(0, pattern(512, 5)), 0u);
  EXPECT_EQ(mem->flush_count(), before + 1);
}

TEST_F(TransmissionTest, TrimAndWriteZeroes) {
  RawClient c = session();
  Bytes data = pattern(16384, 6);
  ASSERT_EQ(c.write(0, data), 0u);
  EXPECT_EQ(c.command(wire::kCmdTrim, 0, 4096), 0u);
  EXPECT_EQ(device_bytes(0, 4096), Bytes(4096, 0));
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 4096, 4096, wire::kCmdFlagNoHole | wire::kCmdFlagFua), 0u);
  EXPECT_EQ(tweak->last_flags.load(), uint32_t{kNoHole | kFua});
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 8192, 4096, wire::kCmdFlagFastZero), 0u);
  EXPECT_EQ(tweak->last_flags.load(), uint32_t{kFastZero});
  EXPECT_EQ(device_bytes(0, 12288), Bytes(12288, 0));
  EXPECT_EQ(device_bytes(12288, 4096), Bytes(data.begin() + 12288, data.end()));
  // Longer than max_io_size is fine for commands without payload.
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 0, uint32_t(kSize)), 0u);
  EXPECT_EQ(c.command(wire::kCmdCache, 0, uint32_t(kSize)), 0u);
}

TEST_F(TransmissionTest, WritesAreHintedBeforeTheyArrive) {
  // Records the hints and, for each write, whether its hint came first.
  class Hinted : public TweakDevice {
   public:
    using TweakDevice::TweakDevice;
    void will_write(uint64_t offset, uint64_t length) noexcept override {
      std::lock_guard lock(mu);
      hints.emplace_back(offset, length);
    }
    Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
      {
        std::lock_guard lock(mu);
        hinted_first.push_back(!hints.empty() &&
                               hints.back() == std::pair<uint64_t, uint64_t>(offset, buf.size()));
      }
      return TweakDevice::write(offset, buf, flags);
    }
    std::mutex mu;
    std::vector<std::pair<uint64_t, uint64_t>> hints;
    std::vector<bool> hinted_first;
  };
  auto dev = std::make_shared<Hinted>(mem);
  make_server({}, dev);
  RawClient c = session();
  ASSERT_EQ(c.write(8192, pattern(4096, 4)), 0u);
  // A rejected write (out of range) is not hinted; reads and trims never are.
  EXPECT_EQ(c.write(kSize, pattern(4096, 5)), wire::kEnospc);
  Bytes back;
  ASSERT_EQ(c.read(0, 4096, &back), 0u);
  EXPECT_EQ(c.command(wire::kCmdTrim, 0, 4096), 0u);
  std::lock_guard lock(dev->mu);
  EXPECT_EQ(dev->hints, (std::vector<std::pair<uint64_t, uint64_t>>{{8192, 4096}}));
  EXPECT_EQ(dev->hinted_first, std::vector<bool>{true});
}

TEST_F(TransmissionTest, UnadvertisedCommandsAndFlagsAreInvalid) {
  tweak->caps_.trim = tweak->caps_.write_zeroes = tweak->caps_.fast_zero = tweak->caps_.flush = false;
  RawClient c = session();
  EXPECT_EQ(c.command(wire::kCmdTrim, 0, 4096), wire::kEinval);
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 0, 4096), wire::kEinval);
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0), wire::kEinval);
}

TEST_F(TransmissionTest, FastZeroFailureIsReportedAsNotSupported) {
  class NoFastZero : public TweakDevice {
   public:
    using TweakDevice::TweakDevice;
    Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
      if (flags & kFastZero) return Status::Error(EOPNOTSUPP, "not fast");
      return TweakDevice::write_zeroes(offset, length, flags);
    }
  };
  make_server({}, std::make_shared<NoFastZero>(mem));
  RawClient c = session(true);
  Reply r;
  ASSERT_TRUE(c.send_request(wire::kCmdFlagFastZero, wire::kCmdWriteZeroes, 5, 0, 4096));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.type, wire::kReplyTypeError);
  EXPECT_EQ(r.error, wire::kEnotsup);
}

TEST_F(TransmissionTest, BlockStatusNeedsANegotiatedContext) {
  RawClient c = session(true, false);
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdBlockStatus, 3, 0, 4096));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.error, wire::kEinval);
}

TEST_F(TransmissionTest, BlockStatusDescriptors) {
  Negotiated n;
  RawClient c = session(true, true, &n);
  auto query = [&](uint64_t offset, uint32_t length, uint16_t flags) {
    std::vector<std::pair<uint32_t, uint32_t>> out;
    Reply r;
    EXPECT_TRUE(c.send_request(flags, wire::kCmdBlockStatus, 9, offset, length));
    EXPECT_TRUE(c.read_reply(&r));
    EXPECT_EQ(r.cookie, 9u);
    EXPECT_EQ(r.type, wire::kReplyTypeBlockStatus);
    EXPECT_EQ(r.flags, wire::kReplyFlagDone);
    EXPECT_GE(r.payload.size(), 12u);
    EXPECT_EQ((r.payload.size() - 4) % 8, 0u);
    if (r.payload.size() < 12) return out;
    EXPECT_EQ(be32(r.payload.data()), n.meta_context_id);
    for (size_t i = 4; i + 8 <= r.payload.size(); i += 8) {
      out.emplace_back(be32(r.payload.data() + i), be32(r.payload.data() + i + 4));
    }
    return out;
  };
  using V = std::vector<std::pair<uint32_t, uint32_t>>;
  // The default implementation reports everything as data.
  EXPECT_EQ(query(0, 65536, 0), (V{{65536, 0}}));

  tweak->extents = {
      {4096, kExtentHole | kExtentZero}, {8192, 0}, {0, kExtentZero}, {4096, 0}, {1 << 20, kExtentZero}};
  // Same-flag neighbours merge, zero-length runs vanish, the total is
  // clamped to the request.
  EXPECT_EQ(query(0, 20480, 0), (V{{4096, 3}, {12288, 0}, {4096, 2}}));
  EXPECT_EQ(query(0, 2048, 0), (V{{2048, 3}}));
  EXPECT_EQ(query(0, 65536, wire::kCmdFlagReqOne), (V{{4096, 3}}));
  // Out of range.
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdBlockStatus, 10, kSize - 512, 1024));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.error, wire::kEinval);
}

TEST_F(TransmissionTest, OutOfRange) {
  RawClient c = session();
  EXPECT_EQ(c.write(kSize - 512, pattern(1024, 7)), wire::kEnospc);
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, kSize, 512), wire::kEnospc);
  Bytes back;
  EXPECT_EQ(c.read(kSize - 512, 1024, &back), wire::kEinval);
  EXPECT_TRUE(back.empty());  // a simple error reply carries no data
  EXPECT_EQ(c.command(wire::kCmdTrim, kSize, 512), wire::kEinval);
  EXPECT_EQ(c.command(wire::kCmdCache, kSize - 512, 1024), wire::kEinval);
  // offset + length overflows 64 bits.
  EXPECT_EQ(c.read(UINT64_MAX - 511, 1024, &back), wire::kEinval);
  EXPECT_EQ(c.write(UINT64_MAX - 511, pattern(1024, 7)), wire::kEnospc);
  // The last block is fine.
  EXPECT_EQ(c.write(kSize - 512, pattern(512, 7)), 0u);
}

TEST_F(TransmissionTest, MisalignedAndZeroLengthRequests) {
  RawClient c = session();
  Bytes back;
  EXPECT_EQ(c.read(100, 512, &back), wire::kEinval);
  EXPECT_EQ(c.read(0, 100, &back), wire::kEinval);
  EXPECT_EQ(c.write(512, pattern(100, 8)), wire::kEinval);  // payload consumed
  EXPECT_EQ(c.command(wire::kCmdTrim, 1, 512), wire::kEinval);
  EXPECT_EQ(c.read(0, 0, &back), wire::kEinval);
  EXPECT_EQ(c.write(0, {}), wire::kEinval);
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 0, 0), wire::kEinval);
  EXPECT_EQ(device_bytes(0, 1024), Bytes(1024, 0));
  EXPECT_EQ(c.read(0, 512, &back), 0u);  // still in sync
}

TEST_F(TransmissionTest, UnknownCommandAndFlags) {
  RawClient c = session();
  EXPECT_EQ(c.command(42, 0, 512), wire::kEinval);
  EXPECT_EQ(c.command(wire::kCmdRead, 0, 512, 1 << 7), wire::kEinval);
  Bytes back;
  EXPECT_EQ(c.read(0, 512, &back, wire::kCmdFlagDf), wire::kEinval);  // DF needs structured replies
  EXPECT_EQ(c.read(0, 512, &back, wire::kCmdFlagReqOne), wire::kEinval);
  EXPECT_EQ(c.write(0, pattern(512, 9), wire::kCmdFlagNoHole), wire::kEinval);  // payload consumed
  EXPECT_EQ(c.command(wire::kCmdTrim, 0, 512, wire::kCmdFlagFastZero), wire::kEinval);
  EXPECT_EQ(device_bytes(0, 512), Bytes(512, 0));
  EXPECT_EQ(c.read(0, 512, &back), 0u);
}

TEST_F(TransmissionTest, OversizedWriteIsConsumedAndRejected) {
  tweak->geometry_.max_io_size = 64 << 10;
  RawClient c = session();
  Bytes before = pattern(4096, 10);
  ASSERT_EQ(c.write(0, before), 0u);
  // 256 KiB payload against a 64 KiB limit: sent from a thread because the
  // server reads it while we are not reading.
  Bytes big = pattern(256 << 10, 11);
  std::thread sender(
      [&] { EXPECT_TRUE(c.send_request(0, wire::kCmdWrite, 77, 0, uint32_t(big.size()), big)); });
  Reply r;
  ASSERT_TRUE(c.read_reply(&r));
  sender.join();
  EXPECT_EQ(r.cookie, 77u);
  EXPECT_EQ(r.error, wire::kEinval);
  Bytes back;
  ASSERT_EQ(c.read(0, 4096, &back), 0u);
  EXPECT_EQ(back, before);
  EXPECT_EQ(c.read(0, 128 << 10, &back), wire::kEinval);
}

TEST_F(TransmissionTest, OversizedStructuredReadIsOverflow) {
  tweak->geometry_.max_io_size = 64 << 10;
  RawClient c = session(true);
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdRead, 5, 0, 128 << 10));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.type, wire::kReplyTypeError);
  EXPECT_EQ(r.flags, wire::kReplyFlagDone);
  EXPECT_EQ(r.error, wire::kEoverflow);
  ASSERT_GE(r.payload.size(), 6u);
  EXPECT_EQ(be16(r.payload.data() + 4), r.payload.size() - 6);  // message length matches
}

TEST_F(TransmissionTest, ReadOnlyExportRejectsWrites) {
  ServerOptions opts;
  opts.read_only = true;
  make_server(opts);
  Negotiated n;
  RawClient c = session(false, false, &n);
  EXPECT_TRUE(n.flags & wire::kFlagReadOnly);
  EXPECT_EQ(c.write(0, pattern(4096, 12)), wire::kEperm);
  EXPECT_EQ(c.command(wire::kCmdTrim, 0, 4096), wire::kEperm);
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 0, 4096), wire::kEperm);
  EXPECT_EQ(device_bytes(0, 4096), Bytes(4096, 0));
  Bytes back;
  EXPECT_EQ(c.read(0, 4096, &back), 0u);
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0), 0u);
}

TEST_F(TransmissionTest, DeviceErrorsBecomeEio) {
  RawClient c = session();
  mem->fail_writes_after(1);
  EXPECT_EQ(c.write(0, pattern(512, 13)), 0u);
  EXPECT_EQ(c.write(512, pattern(512, 13)), wire::kEio);
  EXPECT_EQ(c.command(wire::kCmdWriteZeroes, 0, 512), wire::kEio);
  mem->fail_next_flush();
  EXPECT_EQ(c.command(wire::kCmdFlush, 0, 0), wire::kEio);
}

TEST_F(TransmissionTest, DeviceErrorsAsStructuredErrorChunks) {
  RawClient c = session(true);
  mem->fail_writes_after(0);
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdWrite, 8, 0, 512, pattern(512, 14)));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.type, wire::kReplyTypeError);
  EXPECT_EQ(r.flags, wire::kReplyFlagDone);
  EXPECT_EQ(r.error, wire::kEio);
  ASSERT_GE(r.payload.size(), 6u);
  uint16_t len = be16(r.payload.data() + 4);
  EXPECT_EQ(len, r.payload.size() - 6);
  EXPECT_GT(len, 0u);  // the message reaches the user
}

TEST_F(TransmissionTest, ReadErrorsOnStructuredRepliesCarryNoData) {
  class FailingReads : public TweakDevice {
   public:
    using TweakDevice::TweakDevice;
    Status read(uint64_t, std::span<std::byte>) override { return Status::Error(EIO, "bad sector"); }
  };
  make_server({}, std::make_shared<FailingReads>(mem));
  RawClient c = session(true);
  Reply r;
  ASSERT_TRUE(c.send_request(0, wire::kCmdRead, 6, 0, 4096));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_EQ(r.type, wire::kReplyTypeError);
  EXPECT_EQ(r.error, wire::kEio);
  // Simple replies: just the header, then the next reply.
  RawClient s = session();
  Bytes back;
  EXPECT_EQ(s.read(0, 4096, &back), wire::kEio);
  EXPECT_EQ(s.command(wire::kCmdFlush, 0, 0), 0u);
}

TEST_F(TransmissionTest, PipelinedRequestsAreAllAnswered) {
  constexpr int kWrites = 24, kReads = 24;
  // Reads cover the second half, pre-filled directly on the device.
  Bytes half = pattern(kSize / 2, 15);
  ASSERT_TRUE(mem->write(kSize / 2, std::as_bytes(std::span(half)), 0).ok());
  RawClient c = session();
  std::map<uint64_t, uint32_t> read_lengths;
  std::set<uint64_t> pending;
  for (int i = 0; i < kWrites; ++i) {
    uint64_t cookie = 1000 + i;
    ASSERT_TRUE(
        c.send_request(0, wire::kCmdWrite, cookie, uint64_t(i) * 8192, 8192, pattern(8192, uint8_t(i))));
    pending.insert(cookie);
  }
  for (int i = 0; i < kReads; ++i) {
    uint64_t cookie = 2000 + i;
    ASSERT_TRUE(c.send_request(0, wire::kCmdRead, cookie, kSize / 2 + uint64_t(i) * 4096, 4096));
    read_lengths[cookie] = 4096;
    pending.insert(cookie);
  }
  for (int i = 0; i < kWrites + kReads; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r, read_lengths));
    EXPECT_EQ(r.error, 0u);
    ASSERT_EQ(pending.erase(r.cookie), 1u) << "unexpected or duplicate cookie " << r.cookie;
    if (r.cookie >= 2000) {
      size_t at = (r.cookie - 2000) * 4096;
      EXPECT_EQ(r.payload, Bytes(half.begin() + at, half.begin() + at + 4096));
    }
  }
  EXPECT_TRUE(pending.empty());
  for (int i = 0; i < kWrites; ++i) {
    EXPECT_EQ(device_bytes(uint64_t(i) * 8192, 8192), pattern(8192, uint8_t(i)));
  }
}

TEST_F(TransmissionTest, RequestsRunConcurrently) {
  auto gate = std::make_shared<GateDevice>(mem);
  make_server({}, gate);
  RawClient c = session();
  // Four reads held inside the device at once prove four workers.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(c.send_request(0, wire::kCmdRead, 50 + i, uint64_t(i) * 512, 512));
  ASSERT_TRUE(gate->wait_for_waiting(4));
  // A write is not held by the gate and overtakes the reads.
  ASSERT_EQ(c.write(0, pattern(512, 16), 0, 60), 0u);
  gate->open();
  std::set<uint64_t> cookies;
  for (int i = 0; i < 4; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r, {{50, 512}, {51, 512}, {52, 512}, {53, 512}}));
    cookies.insert(r.cookie);
  }
  EXPECT_EQ(cookies, (std::set<uint64_t>{50, 51, 52, 53}));
}

TEST_F(TransmissionTest, ThreadLimitOfOneStillServesPipelines) {
  ServerOptions opts;
  opts.max_threads_per_connection = 1;
  make_server(opts);
  RawClient c = session();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.send_request(0, wire::kCmdFlush, uint64_t(i), 0, 0));
  for (int i = 0; i < 20; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r));
    EXPECT_EQ(r.cookie, uint64_t(i));  // one worker answers in order
  }
}

TEST_F(TransmissionTest, BadRequestMagicDisconnects) {
  RawClient c = session();
  ASSERT_TRUE(c.send(Msg().u32(0xdeadbeef).u16(0).u16(0).u64(1).u64(0).u32(512)));
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(wait_idle());
}

TEST_F(TransmissionTest, DiscAnswersInFlightThenCloses) {
  RawClient c = session();
  ASSERT_TRUE(c.send_request(0, wire::kCmdWrite, 1, 0, 512, pattern(512, 17)));
  ASSERT_TRUE(c.send_request(0, wire::kCmdFlush, 2, 0, 0));
  ASSERT_TRUE(c.send_request(0, wire::kCmdDisc, 3, 0, 0));
  std::set<uint64_t> cookies;
  for (int i = 0; i < 2; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r));
    EXPECT_EQ(r.error, 0u);
    cookies.insert(r.cookie);
  }
  EXPECT_EQ(cookies, (std::set<uint64_t>{1, 2}));
  EXPECT_TRUE(c.wait_for_eof());
  EXPECT_TRUE(wait_idle());
  EXPECT_EQ(device_bytes(0, 512), pattern(512, 17));
}

TEST_F(TransmissionTest, ClientDisconnectMidPayload) {
  RawClient c = session();
  ASSERT_TRUE(c.send_request(0, wire::kCmdWrite, 1, 0, 65536, pattern(1000, 18)));
  c.close();
  EXPECT_TRUE(wait_idle());
  EXPECT_EQ(device_bytes(0, 1000), Bytes(1000, 0));
}

TEST_F(TransmissionTest, ClientDisconnectMidHeaderAndWithRepliesPending) {
  {
    RawClient c = session();
    ASSERT_TRUE(c.send(Msg().u32(wire::kRequestMagic).u16(0)));
  }
  {
    RawClient c = session();
    for (int i = 0; i < 32; ++i) ASSERT_TRUE(c.send_request(0, wire::kCmdRead, uint64_t(i), 0, 65536));
  }  // closed without reading: replies hit a dead socket (EPIPE, never SIGPIPE)
  EXPECT_TRUE(wait_idle());
  EXPECT_EQ(server->total_connections(), 2u);
}

TEST_F(TransmissionTest, StopDrainsInFlightRequests) {
  auto gate = std::make_shared<GateDevice>(mem);
  make_server({}, gate);
  RawClient c = session();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.send_request(0, wire::kCmdRead, 70 + i, 0, 512));
  ASSERT_TRUE(gate->wait_for_waiting(3));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server->stop();
    stopped = true;
  });
  // stop() cannot finish while replies are owed.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(stopped.load());
  gate->open();
  std::set<uint64_t> cookies;
  for (int i = 0; i < 3; ++i) {
    Reply r;
    ASSERT_TRUE(c.read_reply(&r, {{70, 512}, {71, 512}, {72, 512}}));
    EXPECT_EQ(r.error, 0u);
    cookies.insert(r.cookie);
  }
  EXPECT_EQ(cookies, (std::set<uint64_t>{70, 71, 72}));
  EXPECT_TRUE(c.wait_for_eof());
  stopper.join();
  EXPECT_TRUE(stopped.load());
  EXPECT_EQ(server->active_connections(), 0u);
}

TEST_F(TransmissionTest, StopCutsOffAClientThatDoesNotRead) {
  ServerOptions opts;
  opts.drain_timeout_ms = 200;
  make_server(opts);
  RawClient c = session();
  // Fill the socket buffers with read replies the client never collects.
  std::thread sender([&] {
    for (int i = 0; i < 256; ++i) {
      if (!c.send_request(0, wire::kCmdRead, uint64_t(i), 0, 65536)) break;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->stop();  // must return after the drain timeout
  sender.join();
  EXPECT_EQ(server->active_connections(), 0u);
}

}  // namespace
}  // namespace bowstack::nbd::testing
