// A YAML file in a fresh temporary folder named after the running test, removed with the
// object (test-only).
#pragma once

#include <unistd.h>  // getpid

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

class TempYaml {
 public:
  explicit TempYaml(const std::string& text) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string("pf_yaml_") + info->test_suite_name() + "_" + info->name() + "_" +
            std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(path()) << text;
  }
  ~TempYaml() { std::filesystem::remove_all(dir_); }
  TempYaml(const TempYaml&) = delete;
  TempYaml& operator=(const TempYaml&) = delete;
  std::string path() const { return (dir_ / "run.yaml").string(); }

 private:
  std::filesystem::path dir_;
};
