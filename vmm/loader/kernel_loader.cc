#include "vmm/loader/kernel_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "vmm/arch/x86_64/layout.h"

namespace kapsel::vmm {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint32_t kXenElfNotePhys32Entry = 18;
constexpr uint32_t kBzImageHeaderMagic = 0x53726448;  // "HdrS"
constexpr uint64_t kSetupHeaderOffset = 0x1f1;
constexpr uint16_t kMinBootProtocol = 0x020c;  // 2.12: xloadflags, 64-bit entry

absl::Status Truncated(const char* what) {
  return absl::InvalidArgumentError(absl::StrFormat("kernel image is truncated: %s", what));
}

// Whether [offset, offset + size) lies inside a buffer of `total` bytes, without overflow.
bool InBounds(uint64_t offset, uint64_t size, uint64_t total) {
  return offset <= total && size <= total - offset;
}

template <typename T>
T ReadAt(absl::Span<const uint8_t> image, uint64_t offset) {
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}

// Returns the PVH entry point from a PT_NOTE segment, if it has one.
absl::StatusOr<std::optional<uint64_t>> FindPvhEntry(absl::Span<const uint8_t> image,
                                                     const Elf64_Phdr& note) {
  if (!InBounds(note.p_offset, note.p_filesz, image.size())) return Truncated("note segment");
  uint64_t pos = note.p_offset;
  const uint64_t end = note.p_offset + note.p_filesz;
  auto align4 = [](uint64_t v) { return (v + 3) & ~uint64_t{3}; };
  while (end - pos >= sizeof(Elf64_Nhdr)) {
    const auto header = ReadAt<Elf64_Nhdr>(image, pos);
    pos += sizeof(Elf64_Nhdr);
    const uint64_t name_size = align4(header.n_namesz);
    const uint64_t desc_size = align4(header.n_descsz);
    if (!InBounds(pos - note.p_offset, name_size, note.p_filesz) ||
        !InBounds(pos + name_size - note.p_offset, desc_size, note.p_filesz)) {
      return absl::InvalidArgumentError("kernel image: malformed ELF note");
    }
    const bool is_xen = header.n_namesz == 4 && std::memcmp(image.data() + pos, "Xen", 4) == 0;
    const uint64_t desc = pos + name_size;
    if (is_xen && header.n_type == kXenElfNotePhys32Entry) {
      if (header.n_descsz == 4) return uint64_t{ReadAt<uint32_t>(image, desc)};
      if (header.n_descsz == 8) return ReadAt<uint64_t>(image, desc);
      return absl::InvalidArgumentError("kernel image: PVH entry note has a bad size");
    }
    pos = desc + desc_size;
  }
  return std::nullopt;
}

// Puts `data` followed by zeros up to `size` bytes at guest `addr` (host `dest`). Whole pages that
// would hold only zeros (a vmlinux has megabytes of them: alignment padding between sections,
// zeroed data, the .bss) are punched out of the memory file instead of written: they read as zeros
// and take no host memory until the guest writes them.
void LoadSparse(const GuestMemory& memory, uint64_t addr, uint8_t* dest,
                absl::Span<const uint8_t> data, uint64_t size) {
  static const uint8_t kZeros[kPage] = {};
  uint64_t hole_start = 0, hole_len = 0;  // a run of whole zero pages not yet discarded
  auto flush = [&] {
    if (hole_len == 0) return;
    if (!memory.Discard(addr + hole_start, hole_len).ok()) {
      std::memset(dest + hole_start, 0, hole_len);  // no hole punching: write the zeros
    }
    hole_len = 0;
  };
  for (uint64_t offset = 0; offset < size;) {
    const uint64_t chunk = std::min(kPage - (addr + offset) % kPage, size - offset);
    const uint64_t in_data = offset < data.size() ? std::min(chunk, data.size() - offset) : 0;
    const bool zero = in_data == 0 || std::memcmp(data.data() + offset, kZeros, in_data) == 0;
    if (zero && chunk == kPage) {
      if (hole_len == 0) hole_start = offset;
      hole_len += kPage;
    } else {
      flush();
      if (in_data > 0) std::memcpy(dest + offset, data.data() + offset, in_data);
      std::memset(dest + offset + in_data, 0, chunk - in_data);
    }
    offset += chunk;
  }
  flush();
}

// Virtual addresses [start, end).
struct AddressRange {
  uint64_t start;
  uint64_t end;
};

uint64_t PageDown(uint64_t v) { return v / kPage * kPage; }
uint64_t PageUp(uint64_t v) { return v > UINT64_MAX - kPage ? 0 : PageDown(v + kPage - 1); }

// The parts of the kernel image every VM booting it can share, from the ELF symbol table: the
// text, [_text, _etext), and the read-only data, [__start_rodata, __end_rodata), without the
// data written once at boot inside it ([__start_ro_after_init, __end_ro_after_init), which also
// holds the vDSO image user space maps, and so could hand to a device). Linux frees none of these
// pages and never hands them to devices itself. Each range in whole pages: outward at its ends
// (Linux frees only from the page after), inward around the excluded part. Empty when the image
// has no usable symbol table (it is not needed to boot, so a malformed one only means no
// sharing); rodata only when the ro_after_init symbols are there too.
std::vector<AddressRange> FindSharableRanges(absl::Span<const uint8_t> image,
                                             const Elf64_Ehdr& ehdr) {
  if (ehdr.e_shoff == 0 || ehdr.e_shentsize != sizeof(Elf64_Shdr) ||
      !InBounds(ehdr.e_shoff, uint64_t{ehdr.e_shnum} * sizeof(Elf64_Shdr), image.size())) {
    return {};
  }
  auto section = [&](uint64_t i) {
    return ReadAt<Elf64_Shdr>(image, ehdr.e_shoff + i * sizeof(Elf64_Shdr));
  };
  static constexpr absl::string_view kNames[] = {"_text",
                                                 "_etext",
                                                 "__start_rodata",
                                                 "__end_rodata",
                                                 "__start_ro_after_init",
                                                 "__end_ro_after_init"};
  for (uint16_t i = 0; i < ehdr.e_shnum; ++i) {
    const Elf64_Shdr symtab = section(i);
    if (symtab.sh_type != SHT_SYMTAB || symtab.sh_entsize != sizeof(Elf64_Sym) ||
        symtab.sh_link >= ehdr.e_shnum ||
        !InBounds(symtab.sh_offset, symtab.sh_size, image.size())) {
      continue;
    }
    const Elf64_Shdr strtab = section(symtab.sh_link);
    if (!InBounds(strtab.sh_offset, strtab.sh_size, image.size())) continue;
    const absl::string_view strings(reinterpret_cast<const char*>(image.data() + strtab.sh_offset),
                                    strtab.sh_size);
    std::optional<uint64_t> values[std::size(kNames)];
    for (uint64_t j = 0; j < symtab.sh_size / sizeof(Elf64_Sym); ++j) {
      const auto sym = ReadAt<Elf64_Sym>(image, symtab.sh_offset + j * sizeof(Elf64_Sym));
      if (sym.st_name >= strings.size()) continue;
      const absl::string_view rest = strings.substr(sym.st_name);
      const size_t nul = rest.find('\0');
      if (nul == absl::string_view::npos) continue;
      const absl::string_view name = rest.substr(0, nul);
      for (size_t k = 0; k < std::size(kNames); ++k) {
        if (name == kNames[k]) values[k] = sym.st_value;
      }
    }
    const auto& [text, etext, rodata, erodata, ro_after_init, ero_after_init] = values;
    std::vector<AddressRange> ranges;
    if (text && etext && *text < *etext) ranges.push_back({PageDown(*text), PageUp(*etext)});
    if (rodata && erodata && ro_after_init && ero_after_init && *rodata <= *ro_after_init &&
        *ro_after_init <= *ero_after_init && *ero_after_init <= *erodata) {
      ranges.push_back({PageDown(*rodata), PageDown(*ro_after_init)});
      ranges.push_back({PageUp(*ero_after_init), PageUp(*erodata)});
    }
    if (!ranges.empty()) return ranges;
  }
  return {};
}

// The guest pages of `segment` that hold `range` (page aligned) and can be mapped from the file:
// whole pages of the segment's file bytes, at a file offset that is page aligned with their
// address. Empty when none.
GuestRange SharablePages(const Elf64_Phdr& segment, const AddressRange& range) {
  if (segment.p_offset % kPage != segment.p_paddr % kPage ||
      segment.p_vaddr % kPage != segment.p_paddr % kPage ||
      segment.p_vaddr > UINT64_MAX - segment.p_filesz ||
      segment.p_paddr > UINT64_MAX - segment.p_filesz - kPage) {
    return {0, 0};
  }
  const uint64_t lo = std::max(range.start, segment.p_vaddr);
  const uint64_t hi = std::min(range.end, segment.p_vaddr + segment.p_filesz);
  if (lo >= hi) return {0, 0};
  // Inward to the pages the file holds entirely.
  const uint64_t file_start = PageUp(segment.p_paddr);
  const uint64_t file_end = PageDown(segment.p_paddr + segment.p_filesz);
  const uint64_t start = std::max(file_start, PageDown(segment.p_paddr + (lo - segment.p_vaddr)));
  const uint64_t end = std::min(file_end, PageUp(segment.p_paddr + (hi - segment.p_vaddr)));
  if (start >= end) return {0, 0};
  return {start, end - start};
}

}  // namespace

absl::StatusOr<LoadedKernel> LoadElfKernel(absl::Span<const uint8_t> image, GuestMemory& memory,
                                           int share_fd) {
  if (image.size() < sizeof(Elf64_Ehdr)) return Truncated("ELF header");
  const auto ehdr = ReadAt<Elf64_Ehdr>(image, 0);
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError("kernel image is not an ELF file");
  }
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_ident[EI_DATA] != ELFDATA2LSB ||
      ehdr.e_machine != EM_X86_64) {
    return absl::InvalidArgumentError("kernel image is not a 64-bit little-endian x86_64 ELF");
  }
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr) || ehdr.e_phnum == 0) {
    return absl::InvalidArgumentError("kernel ELF has no usable program headers");
  }
  const uint64_t phdrs_size = uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr);
  if (!InBounds(ehdr.e_phoff, phdrs_size, image.size())) return Truncated("program headers");

  LoadedKernel kernel{BootProtocol::kLinux64, ehdr.e_entry, 0, std::nullopt};
  const std::vector<AddressRange> sharable =
      share_fd >= 0 ? FindSharableRanges(image, ehdr) : std::vector<AddressRange>{};
  bool loaded_any = false;
  for (uint16_t i = 0; i < ehdr.e_phnum; ++i) {
    const auto phdr = ReadAt<Elf64_Phdr>(image, ehdr.e_phoff + i * sizeof(Elf64_Phdr));
    if (phdr.p_type == PT_NOTE) {
      ASSIGN_OR_RETURN(std::optional<uint64_t> pvh, FindPvhEntry(image, phdr));
      if (pvh.has_value()) {
        kernel.protocol = BootProtocol::kPvh;
        kernel.entry = *pvh;
      }
      continue;
    }
    if (phdr.p_type != PT_LOAD) continue;
    if (!InBounds(phdr.p_offset, phdr.p_filesz, image.size())) return Truncated("a segment");
    if (phdr.p_filesz > phdr.p_memsz) {
      return absl::InvalidArgumentError("kernel ELF segment is larger in the file than in memory");
    }
    absl::StatusOr<uint8_t*> dest = memory.Translate(phdr.p_paddr, phdr.p_memsz);
    if (!dest.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "kernel ELF segment %#x+%#x does not fit in guest memory (give the VM more memory?)",
          phdr.p_paddr, phdr.p_memsz));
    }
    const absl::Span<const uint8_t> data = image.subspan(phdr.p_offset, phdr.p_filesz);
    std::vector<GuestRange> shared;
    for (const AddressRange& range : sharable) {
      const GuestRange pages = SharablePages(phdr, range);
      if (pages.size > 0 && memory
                                .MapFileCopyOnWrite(pages.start, pages.size, share_fd,
                                                    phdr.p_offset + (pages.start - phdr.p_paddr))
                                .ok()) {
        shared.push_back(pages);
        kernel.shared_bytes += pages.size;
      }
    }
    std::sort(shared.begin(), shared.end(), StartsBefore);
    // Everything around the shared pages is loaded as usual.
    uint64_t done = 0;  // bytes of the segment loaded or shared
    auto load_until = [&](uint64_t until) {
      if (until <= done) return;
      const uint64_t from = std::min<uint64_t>(done, data.size());
      const uint64_t to = std::min<uint64_t>(until, data.size());
      LoadSparse(memory, phdr.p_paddr + done, *dest + done, data.subspan(from, to - from),
                 until - done);
      done = until;
    };
    for (const GuestRange& pages : shared) {
      load_until(pages.start - phdr.p_paddr);
      done = pages.start - phdr.p_paddr + pages.size;
    }
    load_until(phdr.p_memsz);
    kernel.end = std::max(kernel.end, phdr.p_paddr + phdr.p_memsz);
    loaded_any = true;
  }
  if (!loaded_any) return absl::InvalidArgumentError("kernel ELF has no loadable segment");
  return kernel;
}

absl::StatusOr<LoadedKernel> LoadBzImage(absl::Span<const uint8_t> image,
                                         const GuestMemory& memory) {
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) return Truncated("setup header");
  auto header = ReadAt<setup_header>(image, kSetupHeaderOffset);
  if (header.header != kBzImageHeaderMagic) {
    return absl::InvalidArgumentError("kernel image is not a bzImage (no HdrS magic)");
  }
  if (header.version < kMinBootProtocol) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage boot protocol %#x is too old (want 2.12 or newer)", uint16_t{header.version}));
  }
  if (!(header.xloadflags & XLF_KERNEL_64)) {
    return absl::InvalidArgumentError("bzImage has no 64-bit entry point");
  }
  if (!(header.loadflags & LOADED_HIGH)) {
    return absl::InvalidArgumentError("bzImage is not a high-loaded kernel");
  }
  const uint64_t setup_sects = header.setup_sects == 0 ? 4 : header.setup_sects;
  const uint64_t kernel_offset = (setup_sects + 1) * 512;
  if (kernel_offset >= image.size()) return Truncated("protected-mode code");
  const uint64_t kernel_size = image.size() - kernel_offset;
  const uint64_t load_address = x86::kHighMemoryStart;
  absl::StatusOr<uint8_t*> dest = memory.Translate(load_address, kernel_size);
  if (!dest.ok()) {
    return absl::InvalidArgumentError("bzImage does not fit in guest memory");
  }
  // The decompressor unpacks the kernel to pref_address and needs init_size bytes there.
  if (!memory.Translate(header.pref_address, header.init_size).ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage needs %#x bytes of memory at %#x to decompress (give the VM more memory)",
        uint32_t{header.init_size}, uint64_t{header.pref_address}));
  }
  std::memcpy(*dest, image.data() + kernel_offset, kernel_size);
  header.code32_start = static_cast<uint32_t>(load_address);
  // The decompressor's area belongs to the kernel too: nothing (the initrd) may be placed there.
  const uint64_t end =
      std::max<uint64_t>(load_address + kernel_size, header.pref_address + header.init_size);
  return LoadedKernel{BootProtocol::kLinux64, load_address + 0x200, end, header};
}

absl::StatusOr<LoadedKernel> LoadKernel(absl::Span<const uint8_t> image, GuestMemory& memory,
                                        int share_fd) {
  if (image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    return LoadElfKernel(image, memory, share_fd);
  }
  if (image.size() >= 0x206 && ReadAt<uint32_t>(image, 0x202) == kBzImageHeaderMagic) {
    return LoadBzImage(image, memory);
  }
  return absl::InvalidArgumentError("kernel image is neither an ELF vmlinux nor a bzImage");
}

}  // namespace kapsel::vmm
