// Request validation, error mapping and export facts, without sockets.
#include "nbd/request.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "nbd/error_map.h"
#include "nbd/export_info.h"
#include "nbd/protocol.h"

namespace bowstack::nbd {
namespace {

ExportInfo test_export(bool read_only = false) {
  Geometry g;
  g.size = 1 << 20;
  g.logical_block_size = 512;
  g.max_io_size = 64 << 10;
  Capabilities c;
  c.flush = c.fua = c.trim = c.write_zeroes = c.fast_zero = true;
  return make_export_info(g, c, "e", "", read_only);
}

Request req(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  Request r;
  r.type = type;
  r.offset = offset;
  r.length = length;
  r.flags = flags;
  return r;
}

TEST(RequestTest, ParseChecksMagicAndDecodesBigEndian) {
  std::byte b[kRequestSize];
  put_be32(b, kRequestMagic);
  put_be16(b + 4, kCmdFlagFua);
  put_be16(b + 6, kCmdWrite);
  put_be64(b + 8, 0x0102030405060708ull);
  put_be64(b + 16, 4096);
  put_be32(b + 24, 512);
  Request r;
  ASSERT_TRUE(parse_request(b, &r));
  EXPECT_EQ(r.flags, kCmdFlagFua);
  EXPECT_EQ(r.type, kCmdWrite);
  EXPECT_EQ(r.cookie, 0x0102030405060708ull);
  EXPECT_EQ(r.offset, 4096u);
  EXPECT_EQ(r.length, 512u);
  put_be32(b, kRequestMagic + 1);
  EXPECT_FALSE(parse_request(b, &r));
}

TEST(RequestTest, Validation) {
  ExportInfo e = test_export();
  Session plain;
  Session structured;
  structured.structured_replies = true;
  Session meta = structured;
  meta.base_allocation = true;

  EXPECT_EQ(validate_request(req(kCmdRead, 0, 512), e, plain).error, 0u);
  EXPECT_EQ(validate_request(req(9, 0, 512), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 512, 1 << 9), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 512, kCmdFlagDf), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 512, kCmdFlagDf), e, structured).error, 0u);
  EXPECT_EQ(validate_request(req(kCmdWrite, 0, 512, kCmdFlagFastZero), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdWriteZeroes, 0, 512, kCmdFlagFastZero | kCmdFlagNoHole), e, plain).error,
            0u);
  EXPECT_EQ(validate_request(req(kCmdBlockStatus, 0, 512, kCmdFlagReqOne), e, structured).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdBlockStatus, 0, 512, kCmdFlagReqOne), e, meta).error, 0u);
  EXPECT_EQ(validate_request(req(kCmdFlush, 0, 0, kCmdFlagFua), e, plain).error, 0u);

  // Ranges, with overflow.
  EXPECT_EQ(validate_request(req(kCmdWrite, (1 << 20) - 512, 1024), e, plain).error, kEnospc);
  EXPECT_EQ(validate_request(req(kCmdWriteZeroes, 1 << 20, 512), e, plain).error, kEnospc);
  EXPECT_EQ(validate_request(req(kCmdRead, UINT64_MAX - 511, 1024), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdTrim, 1 << 20, 512), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 0), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 256, 512), e, plain).error, kEinval);
  // Size limits apply to payload-carrying commands only.
  EXPECT_EQ(validate_request(req(kCmdWrite, 0, 128 << 10), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 128 << 10), e, plain).error, kEinval);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 128 << 10), e, structured).error, kEoverflow);
  EXPECT_EQ(validate_request(req(kCmdTrim, 0, 1 << 20), e, plain).error, 0u);
  EXPECT_EQ(validate_request(req(kCmdWriteZeroes, 0, 1 << 20), e, plain).error, 0u);
  EXPECT_EQ(validate_request(req(kCmdCache, 0, 1 << 20), e, plain).error, 0u);

  ExportInfo ro = test_export(true);
  EXPECT_EQ(validate_request(req(kCmdWrite, 0, 512), ro, plain).error, kEperm);
  EXPECT_EQ(validate_request(req(kCmdTrim, 0, 512), ro, plain).error, kEperm);
  EXPECT_EQ(validate_request(req(kCmdWriteZeroes, 0, 512), ro, plain).error, kEperm);
  EXPECT_EQ(validate_request(req(kCmdRead, 0, 512), ro, plain).error, 0u);
}

TEST(RequestTest, IoFlags) {
  EXPECT_EQ(io_flags(req(kCmdWriteZeroes, 0, 0, kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero)),
            uint32_t{kFua | kNoHole | kFastZero});
  EXPECT_EQ(io_flags(req(kCmdWrite, 0, 0)), 0u);
}

TEST(ErrorMapTest, MapsErrnoOntoTheAllowedSet) {
  EXPECT_EQ(to_nbd_error(EPERM), 1u);
  EXPECT_EQ(to_nbd_error(EIO), 5u);
  EXPECT_EQ(to_nbd_error(ENOMEM), 12u);
  EXPECT_EQ(to_nbd_error(EINVAL), 22u);
  EXPECT_EQ(to_nbd_error(ENOSPC), 28u);
  EXPECT_EQ(to_nbd_error(EDQUOT), 28u);
  EXPECT_EQ(to_nbd_error(EFBIG), 28u);
  EXPECT_EQ(to_nbd_error(EOVERFLOW), 75u);
  EXPECT_EQ(to_nbd_error(ENOTSUP), 95u);
  EXPECT_EQ(to_nbd_error(EOPNOTSUPP), 95u);
  EXPECT_EQ(to_nbd_error(ESHUTDOWN), 108u);
  EXPECT_EQ(to_nbd_error(EROFS), 1u);
  EXPECT_EQ(to_nbd_error(ENOENT), 5u);
  EXPECT_EQ(to_nbd_error(EBADF), 5u);
}

TEST(ExportInfoTest, BlockSizesAreSane) {
  Geometry g;
  g.size = 1 << 30;
  g.logical_block_size = 4096;
  g.preferred_block_size = 3000;  // not a power of two
  g.max_io_size = (1 << 20) + 100;
  ExportInfo e = make_export_info(g, {}, "x", "", false);
  EXPECT_EQ(e.min_block, 4096u);
  EXPECT_EQ(e.preferred_block, 4096u);
  EXPECT_EQ(e.max_block, 1u << 20);  // rounded down to a multiple of min
  g.accepts_unaligned = true;        // still advertises its logical block size
  g.logical_block_size = 512;
  g.preferred_block_size = 256;  // raised to at least 512 and min
  e = make_export_info(g, {}, "x", "", false);
  EXPECT_EQ(e.min_block, 512u);
  EXPECT_EQ(e.preferred_block, 512u);
}

// A plain file export: any byte range, minimum block 1 (as nbdkit's file
// plugin), preferred still a power of two of at least 512.
TEST(ExportInfoTest, ByteGranularExportAdvertisesOne) {
  Geometry g;
  g.size = 1 << 30;
  g.logical_block_size = 1;
  g.preferred_block_size = 4096;
  g.accepts_unaligned = true;
  ExportInfo e = make_export_info(g, {}, "x", "", false);
  EXPECT_EQ(e.min_block, 1u);
  EXPECT_FALSE(e.align_required);
  EXPECT_EQ(e.preferred_block, 4096u);
  EXPECT_EQ(e.max_block, g.max_io_size);
}

TEST(ExportInfoTest, FastZeroNeedsWriteZeroes) {
  Capabilities c;
  c.fast_zero = true;
  ExportInfo e = make_export_info(Geometry{}, c, "x", "", false);
  EXPECT_FALSE(e.base_flags & kFlagSendFastZero);
  EXPECT_EQ(e.transmission_flags(true) & kFlagSendDf, kFlagSendDf);
  EXPECT_EQ(e.transmission_flags(false) & kFlagSendDf, 0);
}

}  // namespace
}  // namespace bowstack::nbd
