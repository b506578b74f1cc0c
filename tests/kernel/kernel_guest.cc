#include "tests/kernel/kernel_guest.h"

#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/harness/test_data.h"

namespace dst::test {
namespace {

using namespace std::chrono_literals;

// The line /init prints after the script: "dst-guest: exit CODE".
constexpr std::string_view kExitMark = "dst-guest: exit ";

std::string LastLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  const size_t newline = text.rfind('\n');
  return newline == std::string::npos ? text : text.substr(newline + 1);
}

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Hex8(uint64_t value) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08llx", static_cast<unsigned long long>(value));
  return buf;
}

void PadTo4(std::string& out) {
  out.append((4 - out.size() % 4) % 4, '\0');
}

// One newc entry: header, name, data, each padded to four bytes.
void AppendEntry(std::string& out, uint32_t ino, std::string_view name, uint32_t mode,
                 std::string_view data) {
  const uint64_t fields[] = {ino, mode, 0, 0, 1, 0, data.size(), 0, 0, 0, 0, name.size() + 1, 0};
  out += "070701";
  for (uint64_t f : fields)
    out += Hex8(f);
  out += name;
  out += '\0';
  PadTo4(out);
  out += data;
  PadTo4(out);
}

// "test/sub/run" -> {"test", "test/sub"}.
std::vector<std::string> ParentDirs(const std::string& name) {
  std::vector<std::string> dirs;
  for (size_t slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1))
    dirs.push_back(name.substr(0, slash));
  return dirs;
}

std::string ReadText(const std::string& path) {
  const Bytes bytes = ReadFile(path);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

std::string BuildKernelGuest(const std::string& builder, std::chrono::milliseconds timeout) {
  const CommandResult r = RunCommand({"bash", builder}, timeout);
  const std::string dir = LastLine(r.stdout_text);
  if (r.exit_code != 0 || dir.empty())
    throw std::runtime_error(builder + " failed with exit code " + std::to_string(r.exit_code) +
                             ":\n" + r.stderr_text + r.stdout_text);
  for (const char* name : {"/vmlinuz", "/initrd.cpio"})
    if (!IsFile(dir + name))
      throw std::runtime_error(builder + " printed " + dir + ", which has no " + (name + 1));
  return dir;
}

std::vector<GuestFile> ProgramFiles(const std::string& program, const std::string& guest_path) {
  TempDir dir("dst-guest-program");
  const std::string stripped = dir.File("program");
  const CommandResult strip = RunCommand({"strip", "-o", stripped, program}, 60s);
  if (strip.exit_code != 0)
    throw std::runtime_error("strip " + program + " failed:\n" + strip.stderr_text);
  const Bytes bytes = ReadFile(stripped);
  std::vector<GuestFile> files = {{guest_path, std::string(bytes.begin(), bytes.end()), 0755}};
  const CommandResult ldd = RunCommand({"ldd", program}, 30s);
  if (ldd.exit_code != 0)
    throw std::runtime_error("ldd " + program + " failed:\n" + ldd.stderr_text);
  // "\tlibfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "\t/lib64/ld-linux... (0x...)".
  std::istringstream lines(ldd.stdout_text);
  for (std::string line; std::getline(lines, line);) {
    const size_t arrow = line.find("=> ");
    const size_t start = line.find('/', arrow == std::string::npos ? 0 : arrow);
    if (start == std::string::npos) continue;
    const std::string path = line.substr(start, line.find(' ', start) - start);
    const Bytes library = ReadFile(path);
    files.push_back({path, std::string(library.begin(), library.end()), 0755});
  }
  return files;
}

std::string NewcArchive(const std::vector<GuestFile>& files) {
  std::string out;
  std::set<std::string> dirs;
  uint32_t ino = 1;
  for (const GuestFile& file : files) {
    if (file.path.size() < 2 || file.path[0] != '/')
      throw std::invalid_argument("guest path must be absolute: " + file.path);
    const std::string name = file.path.substr(1);
    for (const std::string& dir : ParentDirs(name))
      if (dirs.insert(dir).second) AppendEntry(out, ino++, dir, S_IFDIR | 0755, "");
    AppendEntry(out, ino++, name, S_IFREG | file.mode, file.content);
  }
  AppendEntry(out, 0, "TRAILER!!!", 0, "");
  return out;
}

KernelGuest::KernelGuest(KernelGuestOptions options) {
  // The kernel unpacks concatenated archives one after the other; a second
  // archive must start on a four-byte boundary.
  std::string initrd = ReadText(options.image_dir + "/initrd.cpio");
  PadTo4(initrd);
  initrd += NewcArchive(options.files);
  WriteFile(dir_.File("initrd.cpio"),
            {reinterpret_cast<const uint8_t*>(initrd.data()), initrd.size()});
  qemu_.emplace(BuildArgv(options));
}

Argv KernelGuest::BuildArgv(const KernelGuestOptions& options) const {
  // No default devices: only the serial console (qemu's stdout, captured by
  // Process) and one virtio NIC, without the option ROM that would spend
  // emulated time on network boot support.
  return {options.qemu,
          "-accel",
          "tcg",
          "-m",
          std::to_string(options.memory_mib),
          "-smp",
          "1",
          "-nodefaults",
          "-display",
          "none",
          "-monitor",
          "none",
          "-serial",
          "stdio",
          "-no-reboot",
          "-kernel",
          options.image_dir + "/vmlinuz",
          "-initrd",
          dir_.File("initrd.cpio"),
          "-append",
          "console=ttyS0 panic=-1 loglevel=4 dst.script=" + options.script,
          "-netdev",
          "user,id=net0",
          "-device",
          "virtio-net-pci,netdev=net0,romfile="};
}

std::string KernelGuest::Console() const {
  return qemu_->stdout_text();
}

std::string KernelGuest::QemuErrors() const {
  return qemu_->stderr_text();
}

bool KernelGuest::WaitForConsole(std::string_view needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Checked before the console, so that the last output is seen too.
    const bool running = qemu_->Running();
    if (Console().find(needle) != std::string::npos) return true;
    if (!running || std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

std::optional<int> KernelGuest::WaitForExit(std::chrono::milliseconds timeout) {
  if (!qemu_->Wait(timeout)) {
    qemu_->Kill(SIGKILL);
    qemu_->Wait(10s);
    return std::nullopt;
  }
  const std::string console = Console();
  const size_t at = console.rfind(kExitMark);
  if (at == std::string::npos) return std::nullopt;
  return std::stoi(console.substr(at + kExitMark.size()));
}

}  // namespace dst::test
