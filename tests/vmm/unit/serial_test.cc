// The legacy devices: the 16550 UART, the console sink behind it, and the i8042 reset line.
#include "vmm/devices/legacy/serial.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/devices/bus.h"
#include "vmm/devices/legacy/console_output.h"
#include "vmm/devices/legacy/i8042.h"

namespace kapsel::vmm {
namespace {

// Registers offsets.
constexpr uint64_t kData = 0;
constexpr uint64_t kIer = 1;
constexpr uint64_t kIir = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

class RecordingInterrupt : public InterruptLine {
 public:
  explicit RecordingInterrupt(int* count) : count_(count) {}
  void Trigger() override { ++*count_; }

 private:
  int* count_;
};

// A non-blocking pipe: the console writes into one end, the test reads the other.
struct Pipe {
  Pipe() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_end.reset(fds[0]);
    write_end = fds[1];
  }
  // Everything written so far ("" when nothing is).
  std::string ReadAll() {
    std::string out;
    char buffer[4096];
    while (true) {
      ssize_t n = read(read_end.get(), buffer, sizeof(buffer));
      if (n <= 0) break;
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }
  UniqueFd read_end;
  int write_end = -1;  // owned by the ConsoleOutput
};

class SerialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    console_ = std::make_shared<ConsoleOutput>(pipe_.write_end, /*owns_fd=*/true, nullptr);
    serial_ = std::make_unique<Serial>(console_, std::make_unique<RecordingInterrupt>(&irqs_));
  }
  uint8_t In(uint64_t offset) {
    uint8_t value = 0xaa;
    serial_->Read(offset, absl::MakeSpan(&value, 1));
    return value;
  }
  void Out(uint64_t offset, uint8_t value) {
    serial_->Write(offset, absl::MakeConstSpan(&value, 1));
  }
  void OutString(const std::string& text) {
    for (char c : text) Out(kData, static_cast<uint8_t>(c));
  }

  Pipe pipe_;
  int irqs_ = 0;
  std::shared_ptr<ConsoleOutput> console_;
  std::unique_ptr<Serial> serial_;
};

TEST_F(SerialTest, ResetState) {
  EXPECT_EQ(serial_->name(), "serial");
  EXPECT_EQ(In(kIer), 0);
  EXPECT_EQ(In(kIir), 0x01);  // no interrupt pending
  EXPECT_EQ(In(kLcr), 0x03);
  EXPECT_EQ(In(kMcr), 0x08);
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);  // THRE | TEMT
  EXPECT_EQ(In(kLsr) & 0x01, 0);     // no received data
  EXPECT_EQ(In(kData), 0);
  EXPECT_EQ(In(kMsr) & 0xb0, 0xb0);  // CTS, DSR, DCD
  EXPECT_EQ(irqs_, 0);
}

TEST_F(SerialTest, TransmittedBytesReachTheConsole) {
  OutString("hello");
  EXPECT_EQ(pipe_.ReadAll(), "");  // buffered until the end of the line
  OutString(" world\n");
  EXPECT_EQ(pipe_.ReadAll(), "hello world\n");
  OutString("no newline");
  console_->Flush();
  EXPECT_EQ(pipe_.ReadAll(), "no newline");
  EXPECT_EQ(irqs_, 0);  // THR-empty interrupts are off
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);
}

TEST_F(SerialTest, ThrEmptyInterrupt) {
  Out(kIer, 0x02);  // enable THR-empty: the transmitter is empty now
  EXPECT_EQ(irqs_, 1);
  EXPECT_EQ(In(kIer), 0x02);
  EXPECT_EQ(In(kIir), 0x02);  // THR empty, once
  EXPECT_EQ(In(kIir), 0x01);  // then nothing
  Out(kIer, 0x02);            // already enabled: no new edge
  EXPECT_EQ(irqs_, 1);
  EXPECT_EQ(In(kIir), 0x01);

  Out(kData, 'x');
  EXPECT_EQ(irqs_, 2);
  Out(kData, 'y');
  EXPECT_EQ(irqs_, 3);
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_EQ(In(kIir), 0x01);

  // Disabling withdraws a pending interrupt and stops new ones.
  Out(kData, 'z');
  EXPECT_EQ(irqs_, 4);
  Out(kIer, 0x00);
  EXPECT_EQ(In(kIir), 0x01);
  Out(kData, '\n');
  EXPECT_EQ(irqs_, 4);
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(pipe_.ReadAll(), "xyz\n");

  // Re-enabling raises it again.
  Out(kIer, 0x02);
  EXPECT_EQ(irqs_, 5);
  EXPECT_EQ(In(kIir), 0x02);
}

TEST_F(SerialTest, FifoControlShowsInIir) {
  Out(kIir, 0x07);  // FCR: enable and clear the FIFOs
  EXPECT_EQ(In(kIir), 0xc1);
  Out(kIer, 0x02);
  EXPECT_EQ(In(kIir), 0xc2);
  Out(kIir, 0x00);
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(SerialTest, DivisorLatch) {
  Out(kIer, 0x02);
  ASSERT_EQ(In(kIir), 0x02);
  Out(kLcr, 0x83);  // DLAB on
  EXPECT_EQ(In(kLcr), 0x83);
  EXPECT_EQ(In(kData), 0x0c);  // 9600 baud
  EXPECT_EQ(In(kIer), 0x00);
  Out(kData, 0x01);  // 115200 baud
  Out(kIer, 0x00);
  EXPECT_EQ(In(kData), 0x01);
  EXPECT_EQ(In(kIer), 0x00);
  Out(kIer, 0x12);
  EXPECT_EQ(In(kIer), 0x12);
  EXPECT_EQ(irqs_, 1);  // latch writes are not data and raise nothing

  Out(kLcr, 0x03);            // DLAB off
  EXPECT_EQ(In(kIer), 0x02);  // the real IER is unchanged
  EXPECT_EQ(In(kData), 0);
  Out(kData, '!');
  Out(kData, '\n');
  EXPECT_EQ(pipe_.ReadAll(), "!\n");

  Out(kLcr, 0x83);
  EXPECT_EQ(In(kData), 0x01);
  EXPECT_EQ(In(kIer), 0x12);
}

TEST_F(SerialTest, Loopback) {
  Out(kMcr, 0x1a);  // LOOP | OUT2 | RTS, as Linux's autoconfig writes it
  EXPECT_EQ(In(kMcr), 0x1a);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x90);  // DCD | CTS
  Out(kMcr, 0x1f);
  EXPECT_EQ(In(kMsr) & 0xf0, 0xf0);
  Out(kMcr, 0x10);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x00);
  // In loopback nothing leaves the UART.
  Out(kData, 'L');
  Out(kData, '\n');
  console_->Flush();
  EXPECT_EQ(pipe_.ReadAll(), "");
  Out(kMcr, 0xff);
  EXPECT_EQ(In(kMcr), 0x1f);  // bits 5..7 are reserved
  Out(kMcr, 0x0b);
  EXPECT_EQ(In(kMsr) & 0xb0, 0xb0);
  Out(kData, 'o');
  Out(kData, '\n');
  EXPECT_EQ(pipe_.ReadAll(), "o\n");
}

TEST_F(SerialTest, ScratchRegister) {
  Out(kScr, 0x5a);
  EXPECT_EQ(In(kScr), 0x5a);
  Out(kScr, 0xa5);
  EXPECT_EQ(In(kScr), 0xa5);
}

TEST_F(SerialTest, OnlyOneByteAccessesCount) {
  const uint8_t two[2] = {'A', '\n'};
  serial_->Write(kData, absl::MakeConstSpan(two));
  const uint8_t enable[4] = {0x02, 0, 0, 0};
  serial_->Write(kIer, absl::MakeConstSpan(enable));
  serial_->Write(kScr, absl::MakeConstSpan(enable, 2));
  EXPECT_EQ(irqs_, 0);
  EXPECT_EQ(In(kIer), 0);
  EXPECT_EQ(In(kScr), 0);
  console_->Flush();
  EXPECT_EQ(pipe_.ReadAll(), "");
  uint8_t wide[4] = {0xaa, 0xaa, 0xaa, 0xaa};
  serial_->Read(kLsr, absl::MakeSpan(wide));
  for (uint8_t b : wide) EXPECT_EQ(b, 0);
  uint8_t word[2] = {0xaa, 0xaa};
  serial_->Read(kLcr, absl::MakeSpan(word));
  EXPECT_EQ(word[0], 0);
  EXPECT_EQ(word[1], 0);
}

TEST_F(SerialTest, OnTheIoBus) {
  Bus bus("io");
  ASSERT_TRUE(
      bus.Insert(std::shared_ptr<Serial>(std::move(serial_)), x86::kCom1Port, Serial::kLength)
          .ok());
  const uint8_t ok[3] = {'o', 'k', '\n'};
  for (uint8_t b : ok) EXPECT_TRUE(bus.Write(x86::kCom1Port, absl::MakeConstSpan(&b, 1)));
  EXPECT_EQ(pipe_.ReadAll(), "ok\n");
  uint8_t lsr = 0;
  EXPECT_TRUE(bus.Read(x86::kCom1Port + kLsr, absl::MakeSpan(&lsr, 1)));
  EXPECT_EQ(lsr & 0x60, 0x60);
  EXPECT_FALSE(bus.Read(x86::kCom1Port + Serial::kLength, absl::MakeSpan(&lsr, 1)));
}

// ---- ConsoleOutput ----

constexpr char kPanicLine[] =
    "[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)";

struct PanicRecorder {
  std::vector<std::string> lines;
  std::function<void(const std::string&)> Callback() {
    return [this](const std::string& line) { lines.push_back(line); };
  }
};

void PutString(ConsoleOutput& console, const std::string& text) {
  for (char c : text) console.Put(static_cast<uint8_t>(c));
}

TEST(ConsoleOutputTest, FlushesOnNewlineAndWhenFull) {
  Pipe pipe;
  ConsoleOutput console(pipe.write_end, true, nullptr);
  PutString(console, "partial");
  EXPECT_EQ(pipe.ReadAll(), "");
  PutString(console, " line\nnext");
  EXPECT_EQ(pipe.ReadAll(), "partial line\n");
  console.Flush();
  EXPECT_EQ(pipe.ReadAll(), "next");
  console.Flush();
  EXPECT_EQ(pipe.ReadAll(), "");
  // A long line without a newline does not stay buffered forever.
  const std::string chunk(600, 'c');
  PutString(console, chunk);
  const std::string flushed = pipe.ReadAll();
  EXPECT_GE(flushed.size(), 256u);
  console.Flush();
  EXPECT_EQ(flushed + pipe.ReadAll(), chunk);
}

TEST(ConsoleOutputTest, DestructorFlushesAndClosesAnOwnedFd) {
  Pipe pipe;
  {
    ConsoleOutput console(pipe.write_end, true, nullptr);
    PutString(console, "bye");
  }
  EXPECT_EQ(pipe.ReadAll(), "bye");
  // The write end is closed: the pipe now reads as end of file.
  char c;
  EXPECT_EQ(read(pipe.read_end.get(), &c, 1), 0);
}

TEST(ConsoleOutputTest, NotOwnedFdStaysOpen) {
  Pipe pipe;
  UniqueFd write_end(pipe.write_end);
  {
    ConsoleOutput console(write_end.get(), false, nullptr);
    PutString(console, "x\n");
  }
  EXPECT_EQ(pipe.ReadAll(), "x\n");
  EXPECT_EQ(write(write_end.get(), "y", 1), 1);
  EXPECT_EQ(pipe.ReadAll(), "y");
}

TEST(ConsoleOutputTest, NoFdDropsOutputButStillWatches) {
  PanicRecorder panics;
  {
    ConsoleOutput console(-1, true, panics.Callback());
    PutString(console, "some output\n");
    console.Flush();
    PutString(console, std::string(kPanicLine) + "\n");
  }
  ASSERT_EQ(panics.lines.size(), 1u);
  EXPECT_EQ(panics.lines[0], kPanicLine);
}

TEST(ConsoleOutputTest, PanicWatchFiresOnceWithTheLine) {
  Pipe pipe;
  PanicRecorder panics;
  ConsoleOutput console(pipe.write_end, true, panics.Callback());
  PutString(console, "[    0.000000] Linux version 6.1\r\n");
  const std::string line = kPanicLine;
  // Byte by byte, as the UART delivers it: nothing fires before the line ends.
  for (size_t i = 0; i < line.size(); ++i) {
    console.Put(static_cast<uint8_t>(line[i]));
    ASSERT_TRUE(panics.lines.empty()) << i;
  }
  console.Put('\r');
  console.Put('\n');
  ASSERT_EQ(panics.lines.size(), 1u);
  EXPECT_EQ(panics.lines[0], line);  // without the line ending
  // The panic line is still console output.
  EXPECT_EQ(pipe.ReadAll(), "[    0.000000] Linux version 6.1\r\n" + line + "\r\n");

  PutString(console, "[    1.3] ---[ end Kernel panic - not syncing: VFS ]---\n");
  PutString(console, line + "\n");
  EXPECT_EQ(panics.lines.size(), 1u);
}

TEST(ConsoleOutputTest, PanicWatchIgnoresOtherLines) {
  PanicRecorder panics;
  ConsoleOutput console(-1, false, panics.Callback());
  PutString(console, "Kernel panic\n");
  PutString(console, "Kernel panic - not\n syncing\n");  // split over two lines
  PutString(console, "kernel panic - not syncing: lower case\n");
  PutString(console, "Kernel panic - not syncing: no newline yet");
  EXPECT_TRUE(panics.lines.empty());
  console.Put('\n');
  EXPECT_EQ(panics.lines.size(), 1u);
}

// ---- I8042 ----

TEST(I8042Test, ResetCommandCallsTheCallback) {
  int resets = 0;
  I8042 i8042([&resets] { ++resets; });
  EXPECT_EQ(i8042.name(), "i8042");
  auto write = [&i8042](uint64_t offset, std::vector<uint8_t> data) {
    i8042.Write(offset, absl::MakeConstSpan(data));
  };
  write(0, {0xfe});     // data port
  write(4, {0xfd});     // another command
  write(4, {0xfe, 0});  // not a 1-byte access
  write(3, {0xfe});
  EXPECT_EQ(resets, 0);
  write(4, {0xfe});
  EXPECT_EQ(resets, 1);
  write(4, {0xfe});
  EXPECT_EQ(resets, 2);
}

TEST(I8042Test, ReadsAreZero) {
  I8042 i8042([] {});
  for (uint64_t offset = 0; offset < I8042::kLength; ++offset) {
    uint8_t value = 0xaa;
    i8042.Read(offset, absl::MakeSpan(&value, 1));
    EXPECT_EQ(value, 0) << offset;
  }
  uint8_t wide[4] = {1, 2, 3, 4};
  i8042.Read(4, absl::MakeSpan(wide));
  for (uint8_t b : wide) EXPECT_EQ(b, 0);
}

}  // namespace
}  // namespace kapsel::vmm
