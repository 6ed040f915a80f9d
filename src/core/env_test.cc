#include "core/env.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace bowstack {
namespace {

std::span<const std::byte> bytes(const char* s) { return std::as_bytes(std::span(s, std::strlen(s))); }

// The same contract, checked on the real filesystem and in memory.
void ExerciseEnv(Env* env, const std::string& path) {
  EXPECT_EQ(env->open(path, OpenMode::kRead).status().code(), ENOENT);
  EXPECT_EQ(env->remove(path).code(), ENOENT);
  {
    auto f = env->open(path, OpenMode::kCreateTruncate);
    ASSERT_TRUE(f.ok()) << f.status().message();
    ASSERT_TRUE((*f)->write(4, bytes("tail")).ok());
    ASSERT_TRUE((*f)->write(0, bytes("head")).ok());
    ASSERT_TRUE((*f)->sync().ok());
    EXPECT_EQ((*f)->size().value(), 8u);
  }
  ASSERT_TRUE(env->sync_dir(path).ok());
  {
    auto f = env->open(path, OpenMode::kRead);
    ASSERT_TRUE(f.ok());
    std::byte buf[16];
    auto n = (*f)->read(2, buf);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(*n, 6u);  // short at the end of the file
    EXPECT_EQ(std::memcmp(buf, "adtail", 6), 0);
    EXPECT_EQ((*f)->read(100, buf).value(), 0u);
  }
  {
    auto f = env->open(path, OpenMode::kReadWrite);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->truncate(3).ok());
    EXPECT_EQ((*f)->size().value(), 3u);
  }
  {
    auto f = env->open(path, OpenMode::kCreateTruncate);  // empties an existing file
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->size().value(), 0u);
  }
  ASSERT_TRUE(env->remove(path).ok());
  EXPECT_EQ(env->open(path, OpenMode::kReadWrite).status().code(), ENOENT);
}

TEST(Env, Posix) {
  auto dir = std::filesystem::temp_directory_path() / ("bowstack-env-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ExerciseEnv(Env::posix(), (dir / "f").string());
  std::filesystem::remove_all(dir);
}

TEST(Env, Memory) {
  MemEnv env;
  ExerciseEnv(&env, "/x/f");
  auto f = env.open("/x/g", OpenMode::kCreateTruncate).value();
  ASSERT_TRUE(f->write(0, bytes("abc")).ok());
  auto snap = env.snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap.at("/x/g").size(), 3u);
  env.restore({{"/x/h", std::vector<std::byte>(5)}});
  EXPECT_EQ(env.open("/x/g", OpenMode::kRead).status().code(), ENOENT);
  EXPECT_EQ(env.contents("/x/h")->size(), 5u);
}

}  // namespace
}  // namespace bowstack
