// kapsel-agent, the guest's /init, stays one static, stripped ELF within its size budget
// (KAPSEL_AGENT_MAX_BYTES, tests/agent/size/CMakeLists.txt).
#include <elf.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace {

constexpr char kAgent[] = KAPSEL_AGENT_BINARY;
constexpr size_t kMaxBytes = KAPSEL_AGENT_MAX_BYTES;

std::string ReadAll(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(AgentSizeTest, StaticStrippedAndWithinBudget) {
  const std::string elf = ReadAll(kAgent);
  ASSERT_GE(elf.size(), sizeof(Elf64_Ehdr)) << kAgent;
  Elf64_Ehdr header;
  std::memcpy(&header, elf.data(), sizeof(header));
  ASSERT_EQ(std::memcmp(header.e_ident, ELFMAG, SELFMAG), 0) << kAgent << " is not an ELF file";
  ASSERT_EQ(header.e_ident[EI_CLASS], ELFCLASS64);
  ASSERT_EQ(header.e_phentsize, sizeof(Elf64_Phdr));
  ASSERT_LE(header.e_phoff + size_t{header.e_phnum} * sizeof(Elf64_Phdr), elf.size());
  ASSERT_EQ(header.e_shentsize, sizeof(Elf64_Shdr));
  ASSERT_LE(header.e_shoff + size_t{header.e_shnum} * sizeof(Elf64_Shdr), elf.size());

  // Static: nothing for a dynamic loader to do (the guest has no ld.so and no libraries).
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, elf.data() + header.e_phoff + i * sizeof(ph), sizeof(ph));
    EXPECT_NE(ph.p_type, PT_INTERP) << "kapsel-agent needs a program interpreter";
    EXPECT_NE(ph.p_type, PT_DYNAMIC) << "kapsel-agent is dynamically linked";
  }

  // Stripped: no symbol table, no debug information.
  ASSERT_LT(header.e_shstrndx, header.e_shnum);
  Elf64_Shdr names;
  std::memcpy(&names, elf.data() + header.e_shoff + header.e_shstrndx * sizeof(names),
              sizeof(names));
  ASSERT_LE(names.sh_offset + names.sh_size, elf.size());
  for (int i = 0; i < header.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, elf.data() + header.e_shoff + i * sizeof(sh), sizeof(sh));
    ASSERT_LT(sh.sh_name, names.sh_size);
    const char* name = elf.data() + names.sh_offset + sh.sh_name;
    EXPECT_NE(sh.sh_type, SHT_SYMTAB) << "kapsel-agent is not stripped";
    EXPECT_FALSE(absl::StartsWith(name, ".debug")) << "kapsel-agent carries " << name;
  }

  std::printf("kapsel-agent: %zu bytes (%.2f MiB); budget %zu bytes (%.2f MiB)\n", elf.size(),
              elf.size() / 1048576.0, kMaxBytes, kMaxBytes / 1048576.0);
  EXPECT_LE(elf.size(), kMaxBytes) << "kapsel-agent grew beyond its budget: what pulled in what? "
                                      "Link it unstripped with -Wl,-Map and look at the archive "
                                      "members, e.g. full protobuf instead of the lite runtime";
}

}  // namespace
