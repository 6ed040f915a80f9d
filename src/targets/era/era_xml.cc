#include "targets/era/era_xml.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <pugixml.hpp>
#include <set>

namespace bowstack::era {

namespace {

// fmt::print to a FILE*, remembering write errors (checked once at the end).
class Out {
 public:
  explicit Out(std::FILE* f) : f_(f) {}
  template <typename... Args>
  void print(fmt::format_string<Args...> f, Args&&... args) {
    fmt::print(f_, f, std::forward<Args>(args)...);
  }
  Status finish() {
    if (std::fflush(f_) != 0 || std::ferror(f_) != 0) return Status::Error(EIO, "cannot write the output");
    return Status::Ok();
  }

 private:
  std::FILE* f_;
};

// Runs of set bits among the first nr bits.
template <typename Fn>
void for_each_run(const std::vector<uint64_t>& bits, uint64_t nr, Fn fn) {
  uint64_t b = 0;
  while (b < nr) {
    if (!test_bit(bits, b)) {
      // Skip clear words quickly.
      if (b % 64 == 0 && bits[b / 64] == 0) {
        b += 64;
      } else {
        ++b;
      }
      continue;
    }
    uint64_t e = b + 1;
    while (e < nr && test_bit(bits, e)) ++e;
    fn(b, e);
    b = e;
  }
}

void xml_writeset(Out& out, uint32_t era, const std::vector<uint64_t>& bits, uint64_t nr, bool compact) {
  out.print("  <writeset era=\"{}\" nr_bits=\"{}\">\n", era, nr);
  if (compact) {
    for_each_run(bits, nr, [&](uint64_t b, uint64_t e) {
      out.print("    <marked block_begin=\"{}\" len=\"{}\"/>\n", b, e - b);
    });
  } else {
    for (uint64_t b = 0; b < nr; ++b) {
      out.print("    <bit block=\"{}\" value=\"{}\"/>\n", b, test_bit(bits, b) ? "true" : "false");
    }
  }
  out.print("  </writeset>\n");
}

void json_writeset(Out& out, uint32_t era, const std::vector<uint64_t>& bits, uint64_t nr, bool first) {
  out.print("{}{{\"era\":{},\"nr_bits\":{},\"marked\":[", first ? "" : ",", era, nr);
  bool first_run = true;
  for_each_run(bits, nr, [&](uint64_t b, uint64_t e) {
    out.print("{}[{},{}]", first_run ? "" : ",", b, e);
    first_run = false;
  });
  out.print("]}}");
}

}  // namespace

Status write_xml(EraSource& src, const DumpOptions& opts, std::FILE* f) {
  Out out(f);
  const uint64_t nr = src.sb.nr_blocks;
  out.print("<superblock uuid=\"{}\" block_size=\"{}\" nr_blocks=\"{}\" current_era=\"{}\">\n",
            uuid_string(src.sb.uuid), src.sb.data_block_size / 512, nr, src.current_era);
  if (!opts.logical) {
    if (src.unfolded_era != 0) xml_writeset(out, src.unfolded_era, src.unfolded, nr, opts.compact);
    xml_writeset(out, src.current_era, src.current, nr, opts.compact);
  }
  out.print("  <era_array>\n");
  Status s = for_each_era(src, opts.logical, nullptr, [&](uint64_t first, std::span<const uint32_t> eras) {
    for (size_t e = 0; e < eras.size(); ++e)
      out.print("    <era block=\"{}\" era=\"{}\"/>\n", first + e, eras[e]);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  out.print("  </era_array>\n</superblock>\n");
  return out.finish();
}

Status write_json(EraSource& src, const DumpOptions& opts, std::FILE* f) {
  Out out(f);
  const uint64_t nr = src.sb.nr_blocks;
  out.print(
      "{{\"uuid\":\"{}\",\"block_size\":{},\"block_size_sectors\":{},\"nr_blocks\":{},\"current_era\":{},"
      "\"generation\":{},\"snapshot\":{},\"logical\":{},",
      uuid_string(src.sb.uuid), src.sb.data_block_size, src.sb.data_block_size / 512, nr, src.current_era,
      src.sb.generation, src.snapshot, opts.logical);
  if (src.sb.snap_held) {
    out.print("\"metadata_snapshot\":{{\"era\":{},\"block\":{}}},", src.sb.snap_era,
              src.md->layout().snap_writeset(0));
  } else {
    out.print("\"metadata_snapshot\":null,");
  }
  out.print("\"writesets\":[");
  if (!opts.logical) {
    bool first = true;
    if (src.unfolded_era != 0) {
      json_writeset(out, src.unfolded_era, src.unfolded, nr, first);
      first = false;
    }
    json_writeset(out, src.current_era, src.current, nr, first);
  }
  out.print("],\"era_array\":[");
  Status s = for_each_era(src, opts.logical, nullptr, [&](uint64_t first, std::span<const uint32_t> eras) {
    for (size_t e = 0; e < eras.size(); ++e) out.print("{}{}", first + e == 0 ? "" : ",", eras[e]);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  out.print("]}}\n");
  return out.finish();
}

// ---- Parsing ----------------------------------------------------------------

namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Status error(const pugi::xml_node& at, const std::string& what) const {
    return Status::Error(EINVAL, fmt::format("XML line {}: {}", line_of(at.offset_debug()), what));
  }
  size_t line_of(ptrdiff_t offset) const {
    if (offset < 0) return 0;
    const size_t end = std::min(static_cast<size_t>(offset), text_.size());
    return 1 +
           static_cast<size_t>(std::count(text_.begin(), text_.begin() + static_cast<ptrdiff_t>(end), '\n'));
  }

  // Checks that `node` has exactly the attributes `names`.
  Status attributes(const pugi::xml_node& node, std::initializer_list<const char*> names) const {
    for (const pugi::xml_attribute& a : node.attributes()) {
      if (std::none_of(names.begin(), names.end(),
                       [&](const char* n) { return std::strcmp(n, a.name()) == 0; })) {
        return error(node, fmt::format("<{}> has an unknown attribute '{}'", node.name(), a.name()));
      }
    }
    for (const char* n : names) {
      if (!node.attribute(n))
        return error(node, fmt::format("<{}> needs the attribute '{}'", node.name(), n));
    }
    return Status::Ok();
  }

  Result<uint64_t> number(const pugi::xml_node& node, const char* name, uint64_t max) const {
    const std::string_view v = node.attribute(name).value();
    uint64_t n = 0;
    if (v.empty() || v.size() > 20) return error(node, fmt::format("{}=\"{}\" is not a number", name, v));
    for (char c : v) {
      if (c < '0' || c > '9') return error(node, fmt::format("{}=\"{}\" is not a number", name, v));
      const uint64_t d = static_cast<uint64_t>(c - '0');
      if (d > max || n > (max - d) / 10)
        return error(node, fmt::format("{}=\"{}\" is too large (at most {})", name, v, max));
      n = n * 10 + d;
    }
    return n;
  }

  Result<bool> boolean(const pugi::xml_node& node, const char* name) const {
    const std::string_view v = node.attribute(name).value();
    if (v == "true" || v == "1") return true;
    if (v == "false" || v == "0") return false;
    return error(node, fmt::format("{}=\"{}\" is not true or false", name, v));
  }

 private:
  std::string_view text_;
};

}  // namespace

Result<EraModel> parse_xml(std::string_view text, const ParseLimits& limits) {
  Parser p(text);
  pugi::xml_document doc;
  const pugi::xml_parse_result r =
      doc.load_buffer(text.data(), text.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) {
    return Status::Error(EINVAL, fmt::format("XML line {}: {}", p.line_of(r.offset), r.description()));
  }
  pugi::xml_node sb;
  for (const pugi::xml_node& n : doc.children()) {
    if (n.type() != pugi::node_element) continue;
    if (sb || std::strcmp(n.name(), "superblock") != 0) {
      return p.error(n, fmt::format("expected one <superblock> element, found <{}>", n.name()));
    }
    sb = n;
  }
  if (!sb) return Status::Error(EINVAL, "XML: no <superblock> element");
  if (Status s = p.attributes(sb, {"uuid", "block_size", "nr_blocks", "current_era"}); !s.ok()) return s;
  EraModel m;
  m.uuid = sb.attribute("uuid").value();
  auto bs = p.number(sb, "block_size", 1u << 21);
  if (!bs.ok()) return bs.status();
  auto nr = p.number(sb, "nr_blocks", kMaxDataBlocks);
  if (!nr.ok()) return nr.status();
  auto cur = p.number(sb, "current_era", UINT32_MAX);
  if (!cur.ok()) return cur.status();
  if (*bs == 0 || (*bs & (*bs - 1)) != 0)
    return p.error(sb, fmt::format("block_size {} is not a power of two", *bs));
  if (*nr == 0) return p.error(sb, "nr_blocks is 0");
  if (*nr > limits.max_blocks) {
    return p.error(sb, fmt::format("nr_blocks=\"{}\" is more than {} can hold ({} blocks)", *nr,
                                   limits.max_blocks_why, limits.max_blocks));
  }
  // The era array: 4 bytes a block (plus a bit to see duplicates).
  const uint64_t array_bytes = *nr * 4 + *nr / 8;
  if (limits.max_bytes != 0 && array_bytes > limits.max_bytes) {
    return p.error(sb, fmt::format("nr_blocks=\"{}\" needs {} bytes of memory to restore; {} are available",
                                   *nr, array_bytes, limits.max_bytes));
  }
  if (*cur < kFirstEra) return p.error(sb, fmt::format("current_era must be at least {}", kFirstEra));
  m.block_size_sectors = static_cast<uint32_t>(*bs);
  m.nr_blocks = *nr;
  m.current_era = static_cast<uint32_t>(*cur);
  m.eras.assign(m.nr_blocks, 0);
  std::vector<bool> seen_era;
  bool seen_array = false;
  std::set<uint32_t> seen_writesets;
  const uint64_t words = (m.nr_blocks + 63) / 64;

  for (const pugi::xml_node& child : sb.children()) {
    if (child.type() != pugi::node_element) continue;
    const std::string_view name = child.name();
    if (name == "writeset") {
      if (Status s = p.attributes(child, {"era", "nr_bits"}); !s.ok()) return s;
      auto era = p.number(child, "era", m.current_era);
      if (!era.ok()) return era.status();
      auto bits = p.number(child, "nr_bits", kMaxDataBlocks);
      if (!bits.ok()) return bits.status();
      if (*bits != m.nr_blocks) {
        return p.error(child,
                       fmt::format("writeset nr_bits {} differs from nr_blocks {}", *bits, m.nr_blocks));
      }
      if (!seen_writesets.insert(static_cast<uint32_t>(*era)).second) {
        return p.error(child, fmt::format("a second writeset for era {}", *era));
      }
      const uint64_t model_bytes = array_bytes + (m.writesets.size() + 1) * words * 8;
      if (limits.max_bytes != 0 && model_bytes > limits.max_bytes) {
        return p.error(child,
                       fmt::format("{} writesets of {} blocks need {} bytes of memory to restore; {} are "
                                   "available",
                                   m.writesets.size() + 1, m.nr_blocks, model_bytes, limits.max_bytes));
      }
      EraModel::Writeset ws;
      ws.era = static_cast<uint32_t>(*era);
      ws.nr_bits = *bits;
      ws.bits.assign(words, 0);
      // Runs are set once merged: overlapping claims (a hostile file may
      // repeat the whole device a million times) cost no more than one.
      std::vector<std::pair<uint64_t, uint64_t>> runs;
      for (const pugi::xml_node& bit : child.children()) {
        if (bit.type() != pugi::node_element) continue;
        const std::string_view bn = bit.name();
        if (bn == "bit") {
          if (Status s = p.attributes(bit, {"block", "value"}); !s.ok()) return s;
          auto block = p.number(bit, "block", m.nr_blocks - 1);
          if (!block.ok()) return block.status();
          auto value = p.boolean(bit, "value");
          if (!value.ok()) return value.status();
          if (*value) set_bit(ws.bits, *block);
        } else if (bn == "marked") {
          if (Status s = p.attributes(bit, {"block_begin", "len"}); !s.ok()) return s;
          auto begin = p.number(bit, "block_begin", m.nr_blocks - 1);
          if (!begin.ok()) return begin.status();
          auto len = p.number(bit, "len", m.nr_blocks - *begin);
          if (!len.ok()) return len.status();
          if (*len != 0) runs.emplace_back(*begin, *begin + *len);
        } else {
          return p.error(bit, fmt::format("unexpected <{}> in <writeset>", bn));
        }
      }
      std::sort(runs.begin(), runs.end());
      uint64_t done = 0;  // blocks below are set
      for (auto [b, e] : runs) {
        for (b = std::max(b, done); b < e && b % 64 != 0; ++b) set_bit(ws.bits, b);
        for (; b + 64 <= e; b += 64) ws.bits[b / 64] = ~uint64_t{0};
        for (; b < e; ++b) set_bit(ws.bits, b);
        done = std::max(done, e);
      }
      m.writesets.push_back(std::move(ws));
    } else if (name == "era_array") {
      if (seen_array) return p.error(child, "a second <era_array>");
      seen_array = true;
      if (Status s = p.attributes(child, {}); !s.ok()) return s;
      seen_era.assign(m.nr_blocks, false);
      for (const pugi::xml_node& e : child.children()) {
        if (e.type() != pugi::node_element) continue;
        if (std::strcmp(e.name(), "era") != 0) {
          return p.error(e, fmt::format("unexpected <{}> in <era_array>", e.name()));
        }
        if (Status s = p.attributes(e, {"block", "era"}); !s.ok()) return s;
        auto block = p.number(e, "block", m.nr_blocks - 1);
        if (!block.ok()) return block.status();
        auto era = p.number(e, "era", m.current_era);
        if (!era.ok()) return era.status();
        if (seen_era[*block]) return p.error(e, fmt::format("block {} appears twice in <era_array>", *block));
        seen_era[*block] = true;
        m.eras[*block] = static_cast<uint32_t>(*era);
      }
    } else {
      return p.error(child, fmt::format("unexpected <{}> in <superblock>", name));
    }
  }
  return m;
}

}  // namespace bowstack::era
