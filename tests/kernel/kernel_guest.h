// KernelGuest: a qemu virtual machine running the stock Debian kernel of
// scripts/build-kernel-guest.sh, so that tests can drive the Linux kernel's
// own NBD client. The machine is emulated (TCG: no KVM needed, the test
// machines have none), has one virtio NIC on qemu's user-mode network (the
// host's loopback is 10.0.2.2 from inside) and its serial console in a file.
//
// The guest's /init runs one shell script and powers off; the script and any
// data files are appended to the image's initramfs as a second cpio archive.
// The console is the only channel back: the script prints marker lines that
// the host waits for.
//
// Like every harness process, qemu is killed when the object dies.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace dst::test {

// A file to put into the guest's root file system.
struct GuestFile {
  std::string path;  // absolute, e.g. "/test/run"; parent directories are created
  std::string content;
  uint32_t mode = 0644;
};

// Builds the guest image, or finds it in its cache, by running the builder
// script; returns the directory holding vmlinuz and initrd.cpio. Throws
// std::runtime_error with the script's output if it fails or takes longer
// than `timeout`.
std::string BuildKernelGuest(const std::string& builder, std::chrono::milliseconds timeout);

// A program of this machine's build for the guest: `program` stripped of its symbols (a
// sanitizer build is large) at `guest_path`, and every shared library ldd finds for it at its
// path here (the guest's libc is this machine's too). Throws std::runtime_error if strip or ldd
// fails.
std::vector<GuestFile> ProgramFiles(const std::string& program, const std::string& guest_path);

// The files as one cpio archive in the "newc" format the kernel unpacks.
std::string NewcArchive(const std::vector<GuestFile>& files);

struct KernelGuestOptions {
  std::string qemu = "qemu-system-x86_64";
  std::string image_dir;  // from BuildKernelGuest
  std::vector<GuestFile> files;
  std::string script = "/test/run";  // what /init runs
  int memory_mib = 768;
};

class KernelGuest {
 public:
  // Starts qemu; throws if it cannot be started.
  explicit KernelGuest(KernelGuestOptions options);
  KernelGuest(const KernelGuest&) = delete;
  KernelGuest& operator=(const KernelGuest&) = delete;

  // Everything the guest has printed on its console so far.
  std::string Console() const;
  // Waits until the console holds `needle`; false on timeout or once qemu
  // has exited without printing it.
  bool WaitForConsole(std::string_view needle, std::chrono::milliseconds timeout);
  // Waits for the machine to power off; the guest script's exit code (from
  // the "dst-guest: exit N" line of /init), or nullopt if qemu did not exit
  // in time (it is then killed) or the script never finished.
  std::optional<int> WaitForExit(std::chrono::milliseconds timeout);
  // qemu's own stderr, for when it fails to start a machine at all.
  std::string QemuErrors() const;

 private:
  Argv BuildArgv(const KernelGuestOptions& options) const;

  TempDir dir_{"dst-kernel-guest"};
  std::optional<Process> qemu_;
};

}  // namespace dst::test
