// A test fixture with real ONNX models (affine_v1..3, tiny_mlp, slow, ...), written once per
// test suite into a fresh directory by the project's generator script,
// tests/models/make_onnx_models.py.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include <unistd.h>

namespace cairn::infer::testing {

class GeneratedModels : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        std::filesystem::temp_directory_path() / ("cairn-infer-unit-" + std::to_string(::getpid()));
    const std::string cmd = std::string("/usr/bin/python3 ") + CAIRN_SOURCE_DIR +
                            "/tests/models/make_onnx_models.py " + dir_.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static std::string model(const std::string& file) { return (dir_ / file).string(); }

  static inline std::filesystem::path dir_;
};

}  // namespace cairn::infer::testing
