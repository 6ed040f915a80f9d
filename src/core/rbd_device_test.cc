// RbdDevice without a cluster: errors are values that name the image and
// what failed. I/O against a real cluster: tests/functional/test_rbd.sh.
#include "core/rbd_device.h"

#include <gtest/gtest.h>

#include "core/core_test_util.h"

namespace bowstack {
namespace {

TEST(RbdDevice, AMissingConfigIsAnErrorNamingIt) {
  RbdOptions o;
  o.image = "disk";
  o.conf = "/nonexistent/ceph.conf";
  auto d = RbdDevice::open(o);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), ENOENT);
  EXPECT_EQ(d.status().context(), "rbd:rbd/disk: cannot read the Ceph config '/nonexistent/ceph.conf'");
}

TEST(RbdDevice, AnUnreachableClusterFailsWithinTheConnectTimeout) {
  testing::TempDir dir;
  const std::string conf = dir / "ceph.conf";
  // A monitor address nobody listens on (port 1 on loopback).
  FILE* f = std::fopen(conf.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("[global]\nmon host = 127.0.0.1:1\nauth client required = none\n", f);
  std::fclose(f);
  RbdOptions o;
  o.image = "disk";
  o.pool = "p";
  o.snapshot = "s";
  o.conf = conf;
  o.connect_timeout = 2;
  auto d = RbdDevice::open(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().context().find("rbd:p/disk@s: cannot connect to the Ceph cluster of '" + conf +
                                      "' as client.admin"),
            std::string::npos)
      << d.status().context();
}

}  // namespace
}  // namespace bowstack
