"""Conan 2 recipe: accelerate-cpp, header-only by default; with -o "accelerate-cpp/*:header_only=False"
the non-template code is compiled once into the package's acc::compiled library, which acc::acc links
(CMake option ACC_SEPARATE_COMPILATION).

Consumers write find_package(acc) and link acc::acc, as with a plain `cmake --install`: the package
carries our own accConfig.cmake (Conan generates no config for it), which finds libtorch, Gloo and
NCCL on the machine (no Conan package provides libtorch: point CMAKE_PREFIX_PATH at it) and the
Conan packages below through CMakeDeps.
"""
import os
import re

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load


class AccelerateCppConan(ConanFile):
    name = "accelerate-cpp"
    license = "MIT"
    description = "Hugging Face Accelerate for libtorch: DDP, FSDP and mixed precision for C++ training loops"
    topics = ("deep-learning", "libtorch", "distributed-training", "header-only")
    settings = "os", "arch", "compiler", "build_type"
    options = {"header_only": [True, False]}
    default_options = {"header_only": True}
    exports_sources = "CMakeLists.txt", "LICENSE", "cmake/*", "include/*", "src/*"
    no_copy_source = True

    def set_version(self):
        # The version is defined once, in include/acc/version.hpp.
        header = load(self, os.path.join(self.recipe_folder, "include", "acc", "version.hpp"))
        parts = [re.search(rf"#define ACC_VERSION_{part} (\d+)", header).group(1) for part in ("MAJOR", "MINOR", "PATCH")]
        self.version = ".".join(parts)

    def configure(self):
        self.package_type = "header-library" if self.options.header_only else "static-library"

    def requirements(self):
        self.requires("range-v3/0.12.0")
        self.requires("yaml-cpp/0.8.0")
        self.requires("boost/1.83.0")  # Hana
        self.requires("nlohmann_json/3.11.3")

    def layout(self):
        cmake_layout(self)

    def generate(self):
        toolchain = CMakeToolchain(self)
        for option in ("ACC_BUILD_TESTS", "ACC_BUILD_EXAMPLES", "ACC_BUILD_BENCH", "ACC_BUILD_CLI"):
            toolchain.cache_variables[option] = False
        toolchain.cache_variables["ACC_INSTALL"] = True
        toolchain.cache_variables["ACC_SEPARATE_COMPILATION"] = not self.options.header_only
        toolchain.generate()
        CMakeDeps(self).generate()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        cmake = CMake(self)
        cmake.configure()
        cmake.install()

    def package_id(self):
        if self.info.options.header_only:
            self.info.clear()

    def package_info(self):
        # find_package(acc) reads the installed lib/cmake/acc/accConfig.cmake: the same target
        # acc::acc, compile definitions and dependency search as for every other consumer.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs.append(os.path.join("lib", "cmake", "acc"))
        self.cpp_info.bindirs = []
        if self.options.header_only:
            self.cpp_info.libdirs = []
