// Helpers shared by the modelpkg unit tests: a protobuf writer for hand-made ONNX files and a
// temporary directory.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <stdlib.h>

namespace cairn::modelpkg::testing {

inline void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
inline void put_bytes(std::string& out, std::uint32_t field, const std::string& data) {
  put_varint(out, (std::uint64_t{field} << 3) | 2);
  put_varint(out, data.size());
  out += data;
}
inline void put_int(std::string& out, std::uint32_t field, std::uint64_t v) {
  put_varint(out, std::uint64_t{field} << 3);
  put_varint(out, v);
}

struct FakeTensor {
  std::string name;
  std::string data;  // float32 bytes
};

// ModelProto{ir_version=8, graph=GraphProto{node..., initializer=TensorProto{...}}}.
inline std::string make_onnx(const std::vector<FakeTensor>& tensors) {
  std::string graph;
  std::string node;
  put_bytes(node, 4, "Conv");  // op_type
  put_bytes(graph, 1, node);
  for (const auto& t : tensors) {
    std::string tp;
    put_int(tp, 1, t.data.size() / 4);  // dims
    put_int(tp, 2, 1);                  // FLOAT
    put_bytes(tp, 8, t.name);
    put_bytes(tp, 9, t.data);
    put_bytes(graph, 5, tp);
  }
  put_bytes(graph, 2, "test-graph");
  std::string model;
  put_int(model, 1, 8);
  put_bytes(model, 2, "cairn-tests");
  put_bytes(model, 7, graph);
  return model;
}

inline std::string random_floats(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::string out(count * 4, '\0');
  for (std::size_t i = 0; i < count; ++i) {
    float f = dist(rng);
    std::memcpy(out.data() + 4 * i, &f, 4);
  }
  return out;
}

inline std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-modelpkg-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace cairn::modelpkg::testing
