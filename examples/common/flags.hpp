// The examples' command lines: `--name value` flags with defaults, and --help. A bad flag prints
// the usage and exits with 2; --help prints it and exits with 0.
//
//   int64_t epochs = 3;
//   examples::Flags flags("early_stopping", "Stops every process at once when the loss is low enough.");
//   flags.add("--epochs", epochs, "passes over the training set");
//   flags.parse(argc, argv);
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace examples {

class Flags {
 public:
  Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

  // A flag that sets `value` (int64_t, double or std::string); its default is value's value now.
  template <class T>
  Flags& add(const std::string& name, T& value, const std::string& help) {
    std::ostringstream fallback;
    fallback << value;
    flags_.push_back({name, help + " (default " + fallback.str() + ")", [&value](const std::string& text) {
                        if constexpr (std::is_same_v<T, std::string>) {
                          value = text;
                          return true;
                        } else {
                          std::istringstream in(text);
                          T parsed{};
                          if (!(in >> parsed) || !in.eof()) return false;
                          value = parsed;
                          return true;
                        }
                      }});
    return *this;
  }

  void parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      const std::string name = argv[i];
      if (name == "--help" || name == "-h") {
        std::cout << usage();
        std::exit(0);
      }
      const Flag* flag = find(name);
      if (!flag) fail("unknown flag '" + name + "'");
      if (i + 1 == argc) fail(name + " needs a value");
      const std::string text = argv[++i];
      if (!flag->set(text)) fail(name + "='" + text + "' is not a valid value");
    }
  }

 private:
  struct Flag {
    std::string name, help;
    std::function<bool(const std::string&)> set;
  };

  const Flag* find(const std::string& name) const {
    for (const auto& flag : flags_)
      if (flag.name == name) return &flag;
    return nullptr;
  }
  std::string usage() const {
    std::ostringstream out;
    out << "usage: " << program_ << " [flags]\n" << summary_ << "\n";
    for (const auto& flag : flags_) out << "  " << flag.name << " VALUE  " << flag.help << "\n";
    out << "The strategy and mixed precision come from the config (acc config, acc launch flags, ACCELERATE_* "
           "variables).\n";
    return out.str();
  }
  [[noreturn]] void fail(const std::string& message) const {
    std::cerr << program_ << ": " << message << "\n" << usage();
    std::exit(2);
  }

  std::string program_, summary_;
  std::vector<Flag> flags_;
};

}  // namespace examples
