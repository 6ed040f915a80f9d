// CPU cost of the bow target's write paths, without NBD or disk: random 4 KiB
// writes from several threads through (a) a memory device alone, (b) bow in
// CHECKPOINT writing into free space, (c) bow saving checkpoint data (first
// overwrites). Prints ns per write and the ratio to (a). Run it under
// `valgrind --tool=callgrind --instr-atstart=no` (it toggles collection
// around the timed loop) for instruction counts that do not depend on what
// else the machine is doing.
//
// Usage: bow_write_micro [free|overwrite|passthrough] [writes] [threads]
#include <valgrind/callgrind.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/memory_device.h"
#include "targets/bow/bow_target.h"

using namespace bowstack;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "free";
  const uint64_t writes = argc > 2 ? std::stoull(argv[2]) : 200000;
  const int threads = argc > 3 ? std::stoi(argv[3]) : 4;
  const uint64_t bs = 4096, size = uint64_t{2} << 30, half = size / 2;
  auto mem = std::make_shared<MemoryDevice>(size);
  std::shared_ptr<BlockDevice> top = mem;
  uint64_t region = 0;  // writes land in [region, region + half/2)
  if (mode != "passthrough") {
    auto bow = bow::BowTarget::open(mem, bow::BowOptions{.block_size = 4096}).value();
    if (!bow->trim(half, half, 0).ok() || !bow->checkpoint().ok()) {
      std::fprintf(stderr, "setup failed\n");
      return 1;
    }
    top = bow;
    region = mode == "free" ? half : 0;
  }
  // Distinct blocks per thread, in random order: every write is a first write.
  const uint64_t blocks = half / 2 / bs;
  std::vector<uint64_t> order(blocks);
  for (uint64_t i = 0; i < blocks; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
  const uint64_t n = std::min<uint64_t>(writes, blocks);
  std::atomic<uint64_t> next{0};
  std::atomic<int> errors{0};
  auto t0 = std::chrono::steady_clock::now();
  CALLGRIND_START_INSTRUMENTATION;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::vector<std::byte> buf(bs, std::byte{0x5a});
      for (uint64_t i; (i = next.fetch_add(1)) < n;) {
        if (!top->write(region + order[i] * bs, buf, 0).ok()) ++errors;
      }
    });
  }
  for (auto& th : pool) th.join();
  if (!top->flush().ok()) ++errors;
  CALLGRIND_STOP_INSTRUMENTATION;
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %llu writes, %d threads, %.0f ns/write, errors %d\n", mode.c_str(), (unsigned long long)n,
              threads, ns / static_cast<double>(n), errors.load());
  return errors.load() == 0 ? 0 : 1;
}
