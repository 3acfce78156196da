// Kernel loading: crafted ELF and bzImage images (valid and hostile), format detection, and the
// real guest kernels the project builds.
#include "vmm/loader/kernel_loader.h"

#include <asm/bootparam.h>
#include <elf.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/arch/x86_64/boot_info.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/loader/mapped_file.h"

#ifndef KAPSEL_GUEST_DIR
#error "KAPSEL_GUEST_DIR must be defined (tests/vmm/unit/CMakeLists.txt)"
#endif

namespace kapsel::vmm {
namespace {

// Fields of the packed boot structures, by value: gtest binds its arguments to references, which
// must not point at misaligned fields.
template <typename T>
T Val(T value) {
  return value;
}

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kHdrS = 0x53726448;
constexpr uint32_t kXenPhys32Entry = 18;

template <typename T>
T Get(const std::vector<uint8_t>& image, size_t offset) {
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}
template <typename T>
void Put(std::vector<uint8_t>& image, size_t offset, const T& value) {
  std::memcpy(image.data() + offset, &value, sizeof(T));
}

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7);
  return bytes;
}

// ---- ELF images ----

struct Segment {
  uint32_t type;
  uint64_t paddr;
  std::vector<uint8_t> data;  // the file bytes
  uint64_t memsz;
};

// An ELF64 x86_64 executable: header, program headers, then each segment's bytes.
std::vector<uint8_t> MakeElf(uint64_t entry, const std::vector<Segment>& segments) {
  const size_t phoff = sizeof(Elf64_Ehdr);
  std::vector<uint8_t> image(phoff + segments.size() * sizeof(Elf64_Phdr));
  Elf64_Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = ET_EXEC;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_entry = entry;
  ehdr.e_phoff = phoff;
  ehdr.e_ehsize = sizeof(Elf64_Ehdr);
  ehdr.e_phentsize = sizeof(Elf64_Phdr);
  ehdr.e_phnum = static_cast<uint16_t>(segments.size());
  Put(image, 0, ehdr);
  for (size_t i = 0; i < segments.size(); ++i) {
    image.resize((image.size() + 15) & ~size_t{15});
    const Segment& s = segments[i];
    Elf64_Phdr phdr{};
    phdr.p_type = s.type;
    phdr.p_flags = PF_R;
    phdr.p_offset = image.size();
    phdr.p_vaddr = s.paddr + 0xffffffff80000000;
    phdr.p_paddr = s.paddr;
    phdr.p_filesz = s.data.size();
    phdr.p_memsz = s.memsz;
    phdr.p_align = 4;
    Put(image, phoff + i * sizeof(Elf64_Phdr), phdr);
    image.insert(image.end(), s.data.begin(), s.data.end());
  }
  return image;
}

Elf64_Ehdr GetEhdr(const std::vector<uint8_t>& image) { return Get<Elf64_Ehdr>(image, 0); }
Elf64_Phdr GetPhdr(const std::vector<uint8_t>& image, size_t i) {
  return Get<Elf64_Phdr>(image, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}
void PutPhdr(std::vector<uint8_t>& image, size_t i, const Elf64_Phdr& phdr) {
  Put(image, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), phdr);
}

// One ELF note: header, name (NUL included) and descriptor, each padded to 4 bytes.
std::vector<uint8_t> Note(const std::string& name, uint32_t type,
                          const std::vector<uint8_t>& desc) {
  auto align4 = [](size_t v) { return (v + 3) & ~size_t{3}; };
  const size_t name_offset = sizeof(Elf64_Nhdr);
  const size_t desc_offset = name_offset + align4(name.size() + 1);
  std::vector<uint8_t> note(desc_offset + align4(desc.size()), 0);
  Put(note, 0,
      Elf64_Nhdr{static_cast<Elf64_Word>(name.size() + 1), static_cast<Elf64_Word>(desc.size()),
                 type});
  std::memcpy(note.data() + name_offset, name.c_str(), name.size() + 1);
  if (!desc.empty()) std::memcpy(note.data() + desc_offset, desc.data(), desc.size());
  return note;
}

template <typename T>
std::vector<uint8_t> Bytes(T value) {
  std::vector<uint8_t> bytes(sizeof(T));
  std::memcpy(bytes.data(), &value, sizeof(T));
  return bytes;
}

std::vector<uint8_t> Concat(std::vector<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

class KernelLoaderTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kMemory = 32 * kMiB;
  void SetUp() override {
    auto memory = GuestMemory::Create({{0, kMemory}});
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *std::move(memory);
    // Non-zero everywhere, so zero-filling is visible.
    std::memset(memory_->regions()[0].host, 0xaa, kMemory);
  }

  std::vector<uint8_t> GuestBytes(uint64_t addr, uint64_t len) {
    std::vector<uint8_t> out(len);
    EXPECT_TRUE(memory_->Read(addr, out.data(), len).ok());
    return out;
  }

  absl::Status LoadElfStatus(const std::vector<uint8_t>& image) {
    return LoadElfKernel(image, *memory_).status();
  }

  std::unique_ptr<GuestMemory> memory_;
};

// Two PT_LOAD segments, the first with a zero-filled tail (a .bss).
std::vector<uint8_t> TwoSegmentElf() {
  return MakeElf(0x200010, {{PT_LOAD, 0x200000, Pattern(100, 1), 0x1000},
                            {PT_LOAD, 0x400000, Pattern(16, 2), 16}});
}

TEST_F(KernelLoaderTest, ElfWithTwoSegments) {
  const std::vector<uint8_t> image = TwoSegmentElf();
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(kernel->entry, 0x200010u);
  EXPECT_EQ(kernel->end, 0x400010u);
  EXPECT_FALSE(kernel->bzimage_header.has_value());

  EXPECT_EQ(GuestBytes(0x200000, 100), Pattern(100, 1));
  EXPECT_EQ(GuestBytes(0x200000 + 100, 0x1000 - 100), std::vector<uint8_t>(0x1000 - 100, 0));
  EXPECT_EQ(GuestBytes(0x201000, 1), std::vector<uint8_t>{0xaa});  // past memsz: untouched
  EXPECT_EQ(GuestBytes(0x1fffff, 1), std::vector<uint8_t>{0xaa});
  EXPECT_EQ(GuestBytes(0x400000, 16), Pattern(16, 2));
  EXPECT_EQ(GuestBytes(0x400010, 1), std::vector<uint8_t>{0xaa});
}

TEST_F(KernelLoaderTest, ElfZeroPagesTakeNoHostMemory) {
  // A segment of a data page, two pages of zeros in the file and two of .bss, loaded over memory
  // that held 0xaa everywhere: the zero pages read as zeros but are punched out of the memory
  // file (not resident), the data page is written, the bytes around the segment are untouched.
  constexpr uint64_t kPage = 4096;
  std::vector<uint8_t> file = Pattern(kPage, 3);
  file.resize(3 * kPage, 0);
  const std::vector<uint8_t> image = MakeElf(0x200000, {{PT_LOAD, 0x200000, file, 5 * kPage}});
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  // mincore() on the (shared) mapping tells which pages of the memory file exist; first, since
  // reading a hole below allocates it.
  uint8_t* host = memory_->regions()[0].host + 0x200000;
  std::vector<unsigned char> resident(6);
  ASSERT_EQ(mincore(host, 6 * kPage, resident.data()), 0);
  EXPECT_EQ(resident[0] & 1, 1) << "the data page";
  for (int i = 1; i < 5; ++i) EXPECT_EQ(resident[i] & 1, 0) << "zero page " << i;
  EXPECT_EQ(resident[5] & 1, 1) << "past the segment: still the 0xaa page";
  EXPECT_EQ(GuestBytes(0x200000, kPage), Pattern(kPage, 3));
  EXPECT_EQ(GuestBytes(0x200000 + kPage, 4 * kPage), std::vector<uint8_t>(4 * kPage, 0));
  EXPECT_EQ(GuestBytes(0x200000 + 5 * kPage, 1), std::vector<uint8_t>{0xaa});
  EXPECT_EQ(GuestBytes(0x1fffff, 1), std::vector<uint8_t>{0xaa});
}

// ---- Kernel text shared with the file ----

constexpr uint64_t kPage = 4096;
constexpr uint64_t kVirtualBase = 0xffffffff80000000;

struct Symbol {
  std::string name;
  uint64_t value;  // a virtual address
};

// A vmlinux-shaped ELF: segments at file offsets page aligned with their addresses (offset ==
// paddr + `skew`, so a skew that is not a page multiple breaks the alignment), then a string
// table, a symbol table with `symbols` and the section headers.
std::vector<uint8_t> KernelElf(const std::vector<Segment>& segments,
                               const std::vector<Symbol>& symbols, uint64_t skew = 0) {
  std::vector<uint8_t> image = MakeElf(segments[0].paddr, segments);
  std::vector<uint8_t> laid_out(
      image.begin(), image.begin() + sizeof(Elf64_Ehdr) + segments.size() * sizeof(Elf64_Phdr));
  for (size_t i = 0; i < segments.size(); ++i) {
    Elf64_Phdr phdr = GetPhdr(image, i);
    phdr.p_offset = segments[i].paddr + skew;
    phdr.p_align = kPage;
    laid_out.resize(std::max<size_t>(laid_out.size(), phdr.p_offset));
    if (laid_out.size() > phdr.p_offset) laid_out.resize(phdr.p_offset);
    laid_out.insert(laid_out.end(), segments[i].data.begin(), segments[i].data.end());
    PutPhdr(laid_out, i, phdr);
  }
  std::string strings(1, '\0');
  std::vector<Elf64_Sym> syms(1);  // entry 0 is the null symbol
  for (const Symbol& symbol : symbols) {
    Elf64_Sym sym{};
    sym.st_name = static_cast<Elf64_Word>(strings.size());
    sym.st_value = symbol.value;
    syms.push_back(sym);
    strings += symbol.name + '\0';
  }
  const uint64_t strtab_offset = laid_out.size();
  laid_out.insert(laid_out.end(), strings.begin(), strings.end());
  laid_out.resize((laid_out.size() + 7) & ~size_t{7});
  const uint64_t symtab_offset = laid_out.size();
  laid_out.resize(symtab_offset + syms.size() * sizeof(Elf64_Sym));
  std::memcpy(laid_out.data() + symtab_offset, syms.data(), syms.size() * sizeof(Elf64_Sym));
  const uint64_t shoff = laid_out.size();
  Elf64_Shdr sections[3] = {};
  sections[1].sh_type = SHT_STRTAB;
  sections[1].sh_offset = strtab_offset;
  sections[1].sh_size = strings.size();
  sections[2].sh_type = SHT_SYMTAB;
  sections[2].sh_offset = symtab_offset;
  sections[2].sh_size = syms.size() * sizeof(Elf64_Sym);
  sections[2].sh_entsize = sizeof(Elf64_Sym);
  sections[2].sh_link = 1;
  laid_out.resize(shoff + sizeof(sections));
  std::memcpy(laid_out.data() + shoff, sections, sizeof(sections));
  Elf64_Ehdr ehdr = GetEhdr(laid_out);
  ehdr.e_shoff = shoff;
  ehdr.e_shentsize = sizeof(Elf64_Shdr);
  ehdr.e_shnum = 3;
  Put(laid_out, 0, ehdr);
  return laid_out;
}

// The image in a file (a memfd), as kapsel-vmm opens the kernel.
int ImageFile(const std::vector<uint8_t>& image) {
  const int fd = memfd_create("vmlinux", MFD_CLOEXEC);
  if (fd >= 0 && write(fd, image.data(), image.size()) != static_cast<ssize_t>(image.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

// Text from 0x200000 for 3.5 pages; then the file holds 2 more pages of data (a gap the kernel
// frees, rodata), then a .bss.
struct TextKernel {
  static constexpr uint64_t kText = 0x200000;
  std::vector<uint8_t> file = Pattern(6 * kPage + 100, 5);
  std::vector<Segment> segments = {{PT_LOAD, kText, file, 8 * kPage}};
  std::vector<Symbol> symbols = {{"_stext", kVirtualBase + kText + 16},
                                 {"_text", kVirtualBase + kText},
                                 {"_etext", kVirtualBase + kText + 3 * kPage + 2048}};
};

TEST_F(KernelLoaderTest, ElfTextIsMappedFromTheFile) {
  const TextKernel k;
  const std::vector<uint8_t> image = KernelElf(k.segments, k.symbols);
  const int fd = ImageFile(image);
  ASSERT_GE(fd, 0);
  auto kernel = LoadElfKernel(image, *memory_, fd);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  // Whole pages from _text up to the page that holds _etext.
  EXPECT_EQ(kernel->shared_bytes, 4 * kPage);
  ASSERT_EQ(memory_->file_ranges().size(), 1u);
  EXPECT_EQ(memory_->file_ranges()[0].start, TextKernel::kText);
  EXPECT_EQ(memory_->file_ranges()[0].size, 4 * kPage);
  // The guest sees exactly what copying would have given it, shared or not.
  EXPECT_EQ(GuestBytes(TextKernel::kText, k.file.size()), k.file);
  EXPECT_EQ(GuestBytes(TextKernel::kText + k.file.size(), 8 * kPage - k.file.size()),
            std::vector<uint8_t>(8 * kPage - k.file.size(), 0));
  EXPECT_EQ(GuestBytes(TextKernel::kText + 8 * kPage, 1), std::vector<uint8_t>{0xaa});
  // The text pages are the file's: a change to the file shows (none is allowed in use), while
  // the page after the text is a copy.
  const uint8_t changed = 0x01;
  ASSERT_EQ(pwrite(fd, &changed, 1, static_cast<off_t>(TextKernel::kText + kPage)), 1);
  ASSERT_EQ(pwrite(fd, &changed, 1, static_cast<off_t>(TextKernel::kText + 4 * kPage)), 1);
  EXPECT_EQ(GuestBytes(TextKernel::kText + kPage, 1), std::vector<uint8_t>{changed});
  EXPECT_EQ(GuestBytes(TextKernel::kText + 4 * kPage, 1), std::vector<uint8_t>{k.file[4 * kPage]});
  close(fd);
}

TEST_F(KernelLoaderTest, ElfRodataIsSharedAroundItsRoAfterInitData) {
  // Text in pages 0-1, a gap, rodata in pages 4-9 with the data written at boot from the middle
  // of page 6 to the middle of page 7 (whose pages stay copies), then .data.
  constexpr uint64_t kBase = 0x200000;
  const std::vector<uint8_t> file = Pattern(12 * kPage, 9);
  const std::vector<Segment> segments = {{PT_LOAD, kBase, file, 12 * kPage}};
  auto at = [](uint64_t offset) { return kVirtualBase + kBase + offset; };
  std::vector<Symbol> symbols = {{"_text", at(0)},
                                 {"_etext", at(2 * kPage)},
                                 {"__start_rodata", at(4 * kPage)},
                                 {"__end_rodata", at(9 * kPage + 8)},
                                 {"__start_ro_after_init", at(6 * kPage + 100)},
                                 {"__end_ro_after_init", at(7 * kPage + 50)}};
  const std::vector<uint8_t> image = KernelElf(segments, symbols);
  const int fd = ImageFile(image);
  ASSERT_GE(fd, 0);
  auto kernel = LoadElfKernel(image, *memory_, fd);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const std::vector<GuestRange>& ranges = memory_->file_ranges();
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0].start, kBase);
  EXPECT_EQ(ranges[0].size, 2 * kPage);
  EXPECT_EQ(ranges[1].start, kBase + 4 * kPage);
  EXPECT_EQ(ranges[1].size, 2 * kPage);  // pages 4 and 5
  EXPECT_EQ(ranges[2].start, kBase + 8 * kPage);
  EXPECT_EQ(ranges[2].size, 2 * kPage);  // pages 8 and 9 (__end_rodata is inside 9)
  EXPECT_EQ(kernel->shared_bytes, 6 * kPage);
  EXPECT_EQ(GuestBytes(kBase, file.size()), file);
  close(fd);

  // Without the ro_after_init symbols the read-only data is not shared, only the text.
  SetUp();
  symbols.resize(4);
  const std::vector<uint8_t> plain = KernelElf(segments, symbols);
  const int plain_fd = ImageFile(plain);
  ASSERT_GE(plain_fd, 0);
  kernel = LoadElfKernel(plain, *memory_, plain_fd);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->shared_bytes, 2 * kPage);
  EXPECT_EQ(GuestBytes(kBase, file.size()), file);
  close(plain_fd);
}

TEST_F(KernelLoaderTest, ElfTextIsCopiedWhenItCannotBeShared) {
  const TextKernel k;
  struct Case {
    const char* why;
    std::vector<uint8_t> image;
    bool give_fd;
  };
  std::vector<Case> cases = {
      {"no file descriptor", KernelElf(k.segments, k.symbols), false},
      {"no symbol table", MakeElf(TextKernel::kText, k.segments), true},
      {"no _etext", KernelElf(k.segments, {k.symbols[1]}), true},
      {"_etext before _text",
       KernelElf(k.segments, {{"_text", k.symbols[2].value}, {"_etext", k.symbols[1].value}}),
       true},
      {"file offsets not page aligned with addresses", KernelElf(k.segments, k.symbols, 512), true},
      {"text outside every segment",
       KernelElf(k.segments,
                 {{"_text", kVirtualBase + 0x800000}, {"_etext", kVirtualBase + 0x900000}}),
       true},
  };
  // A symbol table whose strings run past the file: ignored, not an error.
  std::vector<uint8_t> broken = KernelElf(k.segments, k.symbols);
  const Elf64_Ehdr ehdr = GetEhdr(broken);
  auto strtab = Get<Elf64_Shdr>(broken, ehdr.e_shoff + sizeof(Elf64_Shdr));
  strtab.sh_size = broken.size();
  Put(broken, ehdr.e_shoff + sizeof(Elf64_Shdr), strtab);
  cases.push_back({"string table past the end of the file", broken, true});
  std::vector<uint8_t> bad_link = KernelElf(k.segments, k.symbols);
  auto symtab = Get<Elf64_Shdr>(bad_link, ehdr.e_shoff + 2 * sizeof(Elf64_Shdr));
  symtab.sh_link = 7;
  Put(bad_link, ehdr.e_shoff + 2 * sizeof(Elf64_Shdr), symtab);
  cases.push_back({"symbol table linked to a missing section", bad_link, true});

  for (const Case& c : cases) {
    SetUp();
    const int fd = c.give_fd ? ImageFile(c.image) : -1;
    if (c.give_fd) {
      ASSERT_GE(fd, 0);
    }
    auto kernel = LoadElfKernel(c.image, *memory_, fd);
    ASSERT_TRUE(kernel.ok()) << c.why << ": " << kernel.status();
    EXPECT_EQ(kernel->shared_bytes, 0u) << c.why;
    EXPECT_TRUE(memory_->file_ranges().empty()) << c.why;
    EXPECT_EQ(GuestBytes(TextKernel::kText, k.file.size()), k.file) << c.why;
    if (fd >= 0) close(fd);
  }
}

TEST_F(KernelLoaderTest, ElfEndIsTheHighestSegmentEndWhateverTheOrder) {
  const std::vector<uint8_t> image = MakeElf(
      0x300000, {{PT_LOAD, 0x600000, Pattern(8, 1), 0x2000}, {PT_LOAD, 0x300000, {}, 0x10}});
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->end, 0x602000u);
  EXPECT_EQ(GuestBytes(0x300000, 0x10), std::vector<uint8_t>(0x10, 0));
}

TEST_F(KernelLoaderTest, ElfPvhNoteWithFourByteEntry) {
  const std::vector<uint8_t> notes =
      Concat({Note("GNU", NT_GNU_BUILD_ID, Pattern(20, 9)),
              Note("Xen", 5, Bytes<uint64_t>(0xdeadbeef)),             // another Xen note: ignored
              Note("Linux", kXenPhys32Entry, Bytes<uint32_t>(0xbad)),  // not Xen: ignored
              Note("Xen", kXenPhys32Entry, Bytes<uint32_t>(0x200040))});
  const std::vector<uint8_t> image = MakeElf(0x200000, {{PT_NOTE, 0x200800, notes, notes.size()},
                                                        {PT_LOAD, 0x200000, Pattern(64, 3), 64}});
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kPvh);
  EXPECT_EQ(kernel->entry, 0x200040u);
  EXPECT_EQ(kernel->end, 0x200040u);
  // Notes are not loaded by themselves.
  EXPECT_EQ(GuestBytes(0x200800, 1), std::vector<uint8_t>{0xaa});
}

TEST_F(KernelLoaderTest, ElfPvhNoteWithEightByteEntry) {
  const std::vector<uint8_t> notes = Note("Xen", kXenPhys32Entry, Bytes<uint64_t>(0x1000500));
  const std::vector<uint8_t> image = MakeElf(
      0x200000, {{PT_LOAD, 0x200000, Pattern(64, 3), 64}, {PT_NOTE, 0, notes, notes.size()}});
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kPvh);
  EXPECT_EQ(kernel->entry, 0x1000500u);
}

TEST_F(KernelLoaderTest, ElfNoteWithoutPvhEntryKeepsTheElfEntry) {
  const std::vector<uint8_t> notes =
      Concat({Note("GNU", NT_GNU_BUILD_ID, Pattern(20, 9)), std::vector<uint8_t>(8, 0)});
  const std::vector<uint8_t> image = MakeElf(
      0x200004, {{PT_NOTE, 0, notes, notes.size()}, {PT_LOAD, 0x200000, Pattern(64, 3), 64}});
  auto kernel = LoadElfKernel(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(kernel->entry, 0x200004u);
}

TEST_F(KernelLoaderTest, ElfPvhNoteWithBadDescriptorSize) {
  const std::vector<uint8_t> notes = Note("Xen", kXenPhys32Entry, Bytes<uint16_t>(0x1234));
  const std::vector<uint8_t> image = MakeElf(
      0x200000, {{PT_NOTE, 0, notes, notes.size()}, {PT_LOAD, 0x200000, Pattern(64, 3), 64}});
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfMalformedNotes) {
  const std::vector<uint8_t> good = Note("Xen", kXenPhys32Entry, Bytes<uint32_t>(0x200000));
  auto with_note = [](const std::vector<uint8_t>& notes) {
    return MakeElf(0x200000,
                   {{PT_LOAD, 0x200000, Pattern(64, 3), 64}, {PT_NOTE, 0, notes, notes.size()}});
  };
  // namesz runs beyond the segment (the file continues, the segment does not).
  std::vector<uint8_t> notes = good;
  Put<uint32_t>(notes, 0, 1000);
  EXPECT_EQ(LoadElfStatus(with_note(notes)).code(), absl::StatusCode::kInvalidArgument);
  // A huge namesz, whose rounding up must not wrap.
  Put<uint32_t>(notes, 0, 0xffffffff);
  EXPECT_EQ(LoadElfStatus(with_note(notes)).code(), absl::StatusCode::kInvalidArgument);
  // descsz beyond the segment.
  notes = good;
  Put<uint32_t>(notes, 4, 0xfffffffd);
  EXPECT_EQ(LoadElfStatus(with_note(notes)).code(), absl::StatusCode::kInvalidArgument);
  // The note segment itself lies beyond the file.
  std::vector<uint8_t> image = with_note(good);
  Elf64_Phdr phdr = GetPhdr(image, 1);
  phdr.p_offset = image.size() - 4;
  PutPhdr(image, 1, phdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
  phdr.p_offset = kMax - 2;
  PutPhdr(image, 1, phdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfBadHeaders) {
  const std::vector<uint8_t> good = TwoSegmentElf();
  ASSERT_TRUE(LoadElfStatus(good).ok());

  EXPECT_FALSE(LoadElfStatus(Pattern(4096, 0)).ok());  // not an ELF file
  EXPECT_FALSE(LoadElfStatus({}).ok());

  std::vector<uint8_t> image = good;
  image[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  image = good;
  image[EI_DATA] = ELFDATA2MSB;
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  image = good;
  Elf64_Ehdr ehdr = GetEhdr(image);
  ehdr.e_machine = EM_AARCH64;
  Put(image, 0, ehdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  image.assign(good.begin(), good.begin() + sizeof(Elf64_Ehdr) - 1);  // truncated header
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  image.assign(good.begin(), good.begin() + sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr));
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);  // 1 of 2 phdrs

  for (uint64_t phoff : {uint64_t{good.size()}, good.size() - sizeof(Elf64_Phdr), kMax - 8}) {
    image = good;
    ehdr = GetEhdr(image);
    ehdr.e_phoff = phoff;
    Put(image, 0, ehdr);
    EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument) << phoff;
  }

  image = good;
  ehdr = GetEhdr(image);
  ehdr.e_phnum = 0xffff;
  Put(image, 0, ehdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  ehdr.e_phnum = 0;
  Put(image, 0, ehdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  ehdr = GetEhdr(good);
  ehdr.e_phentsize = sizeof(Elf64_Phdr) - 8;
  Put(image, 0, ehdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfNoLoadableSegment) {
  const std::vector<uint8_t> notes = Note("GNU", NT_GNU_BUILD_ID, Pattern(20, 9));
  EXPECT_EQ(LoadElfStatus(MakeElf(0x200000, {{PT_NOTE, 0, notes, notes.size()}})).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfSegmentBeyondTheFile) {
  const std::vector<uint8_t> good = TwoSegmentElf();
  std::vector<uint8_t> image = good;
  Elf64_Phdr phdr = GetPhdr(image, 1);
  phdr.p_filesz = 17;  // one byte past the end of the file
  phdr.p_memsz = 17;
  PutPhdr(image, 1, phdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);

  for (uint64_t offset : {uint64_t{good.size()} + 1, kMax - 4}) {
    image = good;
    phdr = GetPhdr(image, 1);
    phdr.p_offset = offset;
    PutPhdr(image, 1, phdr);
    EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument) << offset;
  }

  image = good;
  phdr = GetPhdr(image, 0);
  phdr.p_filesz = kMax;
  phdr.p_memsz = kMax;
  PutPhdr(image, 0, phdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfSegmentLargerInFileThanInMemory) {
  std::vector<uint8_t> image = TwoSegmentElf();
  Elf64_Phdr phdr = GetPhdr(image, 1);
  phdr.p_memsz = phdr.p_filesz - 1;
  PutPhdr(image, 1, phdr);
  EXPECT_EQ(LoadElfStatus(image).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelLoaderTest, ElfSegmentOutsideGuestMemory) {
  struct Case {
    uint64_t paddr;
    uint64_t memsz;
  };
  for (const Case& c :
       {Case{64 * kMiB, 16}, Case{kMemory - 8, 16}, Case{kMemory, 0}, Case{0x200000, kMemory},
        Case{kMax - 8, 16}, Case{0x200000, kMax}, Case{x86::kMmioHoleStart, 16}}) {
    std::vector<uint8_t> image = TwoSegmentElf();
    Elf64_Phdr phdr = GetPhdr(image, 1);
    phdr.p_paddr = c.paddr;
    phdr.p_memsz = c.memsz;
    phdr.p_filesz = std::min<uint64_t>(phdr.p_filesz, c.memsz);
    PutPhdr(image, 1, phdr);
    absl::Status status = LoadElfStatus(image);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.paddr << "+" << c.memsz;
    EXPECT_NE(status.message().find("guest memory"), std::string::npos) << status;
  }
}

// ---- bzImages ----

struct BzImageSpec {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint16_t xloadflags = XLF_KERNEL_64;
  uint8_t loadflags = LOADED_HIGH;
  uint64_t pref_address = 0x1000000;
  uint32_t init_size = 0x400000;
  size_t kernel_size = 0x3000;
};

size_t KernelOffset(const BzImageSpec& spec) {
  return (size_t{spec.setup_sects == 0 ? 4u : spec.setup_sects} + 1) * 512;
}

// The real-mode part (boot sector + setup sectors) with a setup header, then the 64-bit code.
std::vector<uint8_t> MakeBzImage(const BzImageSpec& spec) {
  const size_t offset = KernelOffset(spec);
  std::vector<uint8_t> image(offset, 0);
  setup_header header{};
  header.setup_sects = spec.setup_sects;
  header.syssize = static_cast<uint32_t>(spec.kernel_size / 16);
  header.boot_flag = 0xaa55;
  header.jump = 0x66eb;
  header.header = kHdrS;
  header.version = spec.version;
  header.loadflags = spec.loadflags;
  header.code32_start = 0x100000;
  header.initrd_addr_max = 0x7fffffff;
  header.kernel_alignment = 0x200000;
  header.relocatable_kernel = 1;
  header.min_alignment = 21;
  header.xloadflags = spec.xloadflags;
  header.cmdline_size = 2047;
  header.pref_address = spec.pref_address;
  header.init_size = spec.init_size;
  Put(image, 0x1f1, header);
  const std::vector<uint8_t> code = Pattern(spec.kernel_size, 5);
  image.insert(image.end(), code.begin(), code.end());
  return image;
}

TEST_F(KernelLoaderTest, BzImage) {
  const BzImageSpec spec;
  const std::vector<uint8_t> image = MakeBzImage(spec);
  auto kernel = LoadBzImage(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(kernel->entry, 0x100200u);
  // The loaded code, and the memory the decompressor works in, are both the kernel's.
  EXPECT_GE(kernel->end, x86::kHighMemoryStart + spec.kernel_size);
  EXPECT_EQ(kernel->end, spec.pref_address + spec.init_size);
  ASSERT_TRUE(kernel->bzimage_header.has_value());
  const setup_header& header = *kernel->bzimage_header;
  EXPECT_EQ(Val(header.header), kHdrS);
  EXPECT_EQ(Val(header.version), 0x020f);
  EXPECT_EQ(Val(header.setup_sects), 4);
  EXPECT_EQ(Val(header.code32_start), 0x100000u);
  EXPECT_EQ(Val(header.pref_address), spec.pref_address);
  EXPECT_EQ(Val(header.init_size), spec.init_size);
  EXPECT_EQ(Val(header.xloadflags), XLF_KERNEL_64);
  EXPECT_EQ(Val(header.cmdline_size), 2047u);
  EXPECT_EQ(GuestBytes(0x100000, spec.kernel_size), Pattern(spec.kernel_size, 5));
  EXPECT_EQ(GuestBytes(0x100000 + spec.kernel_size, 1), std::vector<uint8_t>{0xaa});
  EXPECT_EQ(GuestBytes(0xfffff, 1), std::vector<uint8_t>{0xaa});
}

TEST_F(KernelLoaderTest, BzImageEndIsTheLoadedCodeWhenItIsHigher) {
  BzImageSpec spec;
  spec.pref_address = 0x100000;
  spec.init_size = 0x1000;  // smaller than the code: unrealistic, but end must cover the code
  auto kernel = LoadBzImage(MakeBzImage(spec), *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->end, 0x100000 + spec.kernel_size);
}

TEST_F(KernelLoaderTest, BzImageZeroSetupSectsMeansFour) {
  BzImageSpec spec;
  spec.setup_sects = 0;
  const std::vector<uint8_t> image = MakeBzImage(spec);
  ASSERT_EQ(image.size(), 5 * 512 + spec.kernel_size);
  auto kernel = LoadBzImage(image, *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(GuestBytes(0x100000, spec.kernel_size), Pattern(spec.kernel_size, 5));

  spec.setup_sects = 1;
  auto one = LoadBzImage(MakeBzImage(spec), *memory_);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->bzimage_header->setup_sects, 1);
  EXPECT_EQ(GuestBytes(0x100000, spec.kernel_size), Pattern(spec.kernel_size, 5));
}

TEST_F(KernelLoaderTest, BzImageRejections) {
  auto status = [this](const BzImageSpec& spec) {
    return LoadBzImage(MakeBzImage(spec), *memory_).status();
  };
  BzImageSpec spec;
  spec.version = 0x020b;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  spec = {};
  spec.xloadflags = 0;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  spec = {};
  spec.loadflags = 0;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  // The code does not fit, or the decompressor's memory is missing.
  spec = {};
  spec.kernel_size = kMemory;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  spec = {};
  spec.init_size = kMemory;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  spec = {};
  spec.pref_address = kMax - 0x1000;
  EXPECT_EQ(status(spec).code(), absl::StatusCode::kInvalidArgument);
  // Nothing was loaded by the failed attempts.
  EXPECT_EQ(GuestBytes(0x100000, 1), std::vector<uint8_t>{0xaa});
}

TEST_F(KernelLoaderTest, BzImageTruncatedOrWithoutMagic) {
  const BzImageSpec spec;
  const std::vector<uint8_t> good = MakeBzImage(spec);
  std::vector<uint8_t> image(good.begin(), good.begin() + 0x210);  // mid-header
  EXPECT_EQ(LoadBzImage(image, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  image.assign(good.begin(), good.begin() + KernelOffset(spec));  // no protected-mode code
  EXPECT_EQ(LoadBzImage(image, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  image.assign(good.begin(), good.begin() + 0x1f1);
  EXPECT_EQ(LoadBzImage(image, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  image = good;
  Put<uint32_t>(image, 0x202, 0x12345678);
  EXPECT_EQ(LoadBzImage(image, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  // setup_sects pointing past the end of the file.
  image = good;
  image[0x1f1] = 0xff;
  EXPECT_EQ(LoadBzImage(image, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
}

// The decompressor's memory must not be handed out to the initrd.
TEST(KernelLoaderInitrdTest, InitrdStaysClearOfTheBzImageDecompressionArea) {
  auto memory = GuestMemory::Create({{0, 32 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  BzImageSpec spec;
  spec.pref_address = 16 * kMiB;
  spec.init_size = 8 * kMiB;
  auto kernel = LoadBzImage(MakeBzImage(spec), **memory);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  // 9 MiB at the top of 32 MiB would start inside [16 MiB, 24 MiB).
  const std::vector<uint8_t> big(9 * kMiB, 1);
  EXPECT_FALSE(x86::LoadInitrd(big, **memory, kernel->end).ok());
  const std::vector<uint8_t> small(7 * kMiB, 1);
  auto initrd = x86::LoadInitrd(small, **memory, kernel->end);
  ASSERT_TRUE(initrd.ok()) << initrd.status();
  EXPECT_GE(initrd->start, spec.pref_address + spec.init_size);
}

// ---- Format detection ----

TEST_F(KernelLoaderTest, LoadKernelDetectsTheFormat) {
  auto elf = LoadKernel(TwoSegmentElf(), *memory_);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_FALSE(elf->bzimage_header.has_value());
  EXPECT_EQ(elf->entry, 0x200010u);

  auto bz = LoadKernel(MakeBzImage({}), *memory_);
  ASSERT_TRUE(bz.ok()) << bz.status();
  EXPECT_TRUE(bz->bzimage_header.has_value());
  EXPECT_EQ(bz->entry, 0x100200u);

  EXPECT_EQ(LoadKernel(Pattern(8192, 3), *memory_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadKernel({}, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<uint8_t> short_elf = {0x7f, 'E', 'L'};
  EXPECT_EQ(LoadKernel(short_elf, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  // ELF magic with a truncated header, and HdrS with a truncated setup header.
  std::vector<uint8_t> elf_magic = {0x7f, 'E', 'L', 'F', 2, 1, 1};
  EXPECT_EQ(LoadKernel(elf_magic, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> hdrs(0x206, 0);
  Put<uint32_t>(hdrs, 0x202, kHdrS);
  EXPECT_EQ(LoadKernel(hdrs, *memory_).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- MappedFile ----

TEST(MappedFileTest, MapsAFileAndNamesThePathInErrors) {
  char dir_template[] = "/tmp/kapsel-mapped-file-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string file = dir + "/image";
  const std::string empty = dir + "/empty";
  {
    const std::vector<uint8_t> data = Pattern(5000, 4);
    int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int empty_fd = open(empty.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    bool written = fd >= 0 && write(fd, data.data(), data.size()) == 5000;
    if (fd >= 0) close(fd);
    if (empty_fd >= 0) close(empty_fd);
    if (written && empty_fd >= 0) {
      auto mapped = MappedFile::Open(file);
      EXPECT_TRUE(mapped.ok()) << mapped.status();
      if (mapped.ok()) {
        EXPECT_EQ(std::vector<uint8_t>((*mapped)->bytes().begin(), (*mapped)->bytes().end()), data);
      }
      auto missing = MappedFile::Open(dir + "/missing");
      EXPECT_FALSE(missing.ok());
      EXPECT_NE(missing.status().message().find(dir + "/missing"), std::string::npos);
      auto directory = MappedFile::Open(dir);
      EXPECT_FALSE(directory.ok());
      EXPECT_NE(directory.status().message().find(dir), std::string::npos);
      auto empty_file = MappedFile::Open(empty);
      EXPECT_FALSE(empty_file.ok());
      EXPECT_NE(empty_file.status().message().find(empty), std::string::npos);
    } else {
      ADD_FAILURE() << "cannot create test files in " << dir;
    }
  }
  unlink(file.c_str());
  unlink(empty.c_str());
  EXPECT_EQ(rmdir(dir.c_str()), 0);
}

// ---- The real guest kernels (kernel-config/build; scripts/test builds them first) ----

class RealKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = GuestMemory::Create(x86::RamRanges(256 * kMiB));
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *std::move(memory);
  }
  std::unique_ptr<MappedFile> Open(const std::string& name) {
    const std::string path = std::string(KAPSEL_GUEST_DIR) + "/" + name;
    auto file = MappedFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status()
                           << " (build the guest kernel with kernel-config/build; scripts/test "
                              "does it before running the tests)";
    return file.ok() ? *std::move(file) : nullptr;
  }
  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(RealKernelTest, VmlinuxBootsThroughPvh) {
  std::unique_ptr<MappedFile> file = Open("vmlinux");
  ASSERT_NE(file, nullptr);
  const std::vector<uint8_t> image(file->bytes().begin(), file->bytes().end());
  auto kernel = LoadKernel(file->bytes(), *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kPvh);
  EXPECT_FALSE(kernel->bzimage_header.has_value());
  EXPECT_GE(kernel->entry, x86::kHighMemoryStart);
  EXPECT_LT(kernel->entry, kernel->end);
  EXPECT_LE(kernel->end, 256 * kMiB);
  EXPECT_LT(kernel->entry, 0x100000000u);  // PVH enters in 32-bit mode

  // Every PT_LOAD segment is where its physical address says, and the entry is inside one.
  const Elf64_Ehdr ehdr = GetEhdr(image);
  bool entry_loaded = false;
  for (size_t i = 0; i < ehdr.e_phnum; ++i) {
    const Elf64_Phdr phdr = Get<Elf64_Phdr>(image, ehdr.e_phoff + i * sizeof(Elf64_Phdr));
    if (phdr.p_type != PT_LOAD) continue;
    const uint64_t n = std::min<uint64_t>(phdr.p_filesz, 256);
    std::vector<uint8_t> loaded(n);
    ASSERT_TRUE(memory_->Read(phdr.p_paddr, loaded.data(), n).ok());
    EXPECT_EQ(0, std::memcmp(loaded.data(), image.data() + phdr.p_offset, n)) << "segment " << i;
    if (phdr.p_memsz > phdr.p_filesz) {
      auto last = memory_->ReadObj<uint8_t>(phdr.p_paddr + phdr.p_memsz - 1);
      ASSERT_TRUE(last.ok());
      EXPECT_EQ(*last, 0);
    }
    EXPECT_LE(phdr.p_paddr + phdr.p_memsz, kernel->end);
    if (kernel->entry >= phdr.p_paddr && kernel->entry < phdr.p_paddr + phdr.p_filesz) {
      entry_loaded = true;
    }
  }
  EXPECT_TRUE(entry_loaded) << std::hex << kernel->entry;
}

TEST_F(RealKernelTest, VmlinuxTextIsSharedAndLoadsTheSameBytes) {
  std::unique_ptr<MappedFile> file = Open("vmlinux");
  ASSERT_NE(file, nullptr);
  auto shared = LoadKernel(file->bytes(), *memory_, file->fd());
  ASSERT_TRUE(shared.ok()) << shared.status();
  auto copy_memory = GuestMemory::Create(x86::RamRanges(256 * kMiB));
  ASSERT_TRUE(copy_memory.ok());
  auto copied = LoadKernel(file->bytes(), **copy_memory);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(copied->shared_bytes, 0u);
  // The guest kernel's text is megabytes, all of it shared; so is its read-only data, around
  // the part written at boot.
  EXPECT_GE(shared->shared_bytes, 2 * kMiB);
  ASSERT_EQ(memory_->file_ranges().size(), 3u);
  uint64_t mapped = 0;
  for (const GuestRange& range : memory_->file_ranges()) mapped += range.size;
  EXPECT_EQ(mapped, shared->shared_bytes);
  // Byte for byte what copying loads, over the whole kernel.
  const uint64_t start = x86::kHighMemoryStart;
  ASSERT_EQ(shared->end, copied->end);
  for (uint64_t at = start; at < shared->end; at += kMiB) {
    const uint64_t n = std::min(kMiB, shared->end - at);
    auto a = memory_->Slice(at, n);
    auto b = (*copy_memory)->Slice(at, n);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(0, std::memcmp(a->data(), b->data(), n)) << std::hex << "at " << at;
  }
}

TEST_F(RealKernelTest, BzImageBootsThroughThe64BitProtocol) {
  std::unique_ptr<MappedFile> file = Open("bzImage");
  ASSERT_NE(file, nullptr);
  auto kernel = LoadKernel(file->bytes(), *memory_);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(kernel->entry, 0x100200u);
  ASSERT_TRUE(kernel->bzimage_header.has_value());
  const setup_header& header = *kernel->bzimage_header;
  EXPECT_EQ(Val(header.header), kHdrS);
  EXPECT_GE(Val(header.version), 0x020c);
  EXPECT_TRUE(header.xloadflags & XLF_KERNEL_64);
  EXPECT_TRUE(header.loadflags & LOADED_HIGH);
  const size_t setup_sects = header.setup_sects == 0 ? 4 : header.setup_sects;
  const size_t offset = (setup_sects + 1) * 512;
  const size_t code_size = file->bytes().size() - offset;
  EXPECT_GE(kernel->end, x86::kHighMemoryStart + code_size);
  EXPECT_GE(kernel->end, Val(header.pref_address) + Val(header.init_size));
  std::vector<uint8_t> loaded(4096);
  ASSERT_TRUE(memory_->Read(x86::kHighMemoryStart, loaded.data(), loaded.size()).ok());
  EXPECT_EQ(0, std::memcmp(loaded.data(), file->bytes().data() + offset, loaded.size()));
}

}  // namespace
}  // namespace kapsel::vmm
