// Integration tests of encrypted volumes (docs/encryption.md): `dst-aggregator create --encrypt`,
// then `serve` with the key file or passphrase that opens a key slot. Members are nbdkit
// processes serving our plugin on temp files; the aggregator is the real binary; clients are
// libnbd and fio. What a user checks: the data reads back through the aggregator, the export
// hosts' files hold none of it, tampering with their bytes is an error and not data, and a wrong
// or missing secret is one line before any I/O.
#include <algorithm>
#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/harness/aggregator_process.h"
#include "tests/harness/test_data.h"
#include "tests/integration/plugin_fixture.h"
#include "tests/integration/volume_fixture.h"

namespace dst::test::aggregator_encryption_test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kMemberSize = 8 * kMiB;
// The cheapest scrypt cost create accepts: the tests are about the format, not the KDF's cost.
const std::vector<std::string> kCheapPassphrase = {"--passphrase-cost", "10"};

// Text that a leak would show: 4096 bytes of one repeated sentence.
Bytes Marker() {
  const std::string line = "dst plaintext marker: this must never reach an export host. ";
  Bytes out;
  while (out.size() < kBlock)
    out.insert(out.end(), line.begin(), line.end());
  out.resize(kBlock);
  return out;
}

// Whether `haystack` holds the first 48 bytes of the marker anywhere.
bool HoldsMarker(const Bytes& haystack) {
  const Bytes marker = Marker();
  return std::search(haystack.begin(), haystack.end(), marker.begin(), marker.begin() + 48) !=
         haystack.end();
}

std::string WritePassphrase(const FileMembers& m, const std::string& name,
                            const std::string& text) {
  const std::string path = m.dir().File(name);
  WriteKeyFile(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  return path;
}

// An area's offset in a member's file, from `inspect`'s line for it ("data:  [1048576, +...").
uint64_t AreaOffset(const std::string& uri, const std::string& area) {
  const CommandResult r = RunAggregator({"inspect", uri});
  REQUIRE(r.exit_code == 0);
  const size_t line = r.stdout_text.find("\n" + area + ":");
  REQUIRE(line != std::string::npos);
  const size_t open = r.stdout_text.find('[', line);
  return std::stoull(r.stdout_text.substr(open + 1));
}

// fio writes and verifies 2 MiB of the volume from 4 MiB on, through the aggregator.
void FioVerifies(const std::string& uri) {
  CheckFioVerified(
      {kFio, "--name=encrypted", "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite", "--bs=16k",
       "--iodepth=16", "--offset=4M", "--size=2M", "--verify=crc32c", "--do_verify=1",
       "--verify_fatal=1", "--verify_state_save=0", "--output-format=normal"},
      60s);
}

TEST_SUITE_BEGIN("aggregator_encryption");

TEST_CASE("an encrypted mirror: export hosts hold only ciphertext, the passphrase reads it back") {
  FileMembers m(2, kMemberSize);
  const std::string name = "enc-mirror";
  const std::string pass = WritePassphrase(m, "pass", "correct horse battery staple\n");
  const CommandResult created = CreateOk(
      Concat({"--name", name, "--layout", "mirror", "--encrypt", "--passphrase-file", pass},
             kCheapPassphrase),
      m.uris());
  CHECK(Contains(created.stdout_text, "encryption: aes-256-xts, key slot 0: passphrase"));
  const CommandResult inspected = RunAggregator({"inspect", m.uri(0)});
  CHECK(
      Contains(inspected.stdout_text, "aes-256-xts, key slots: 0 passphrase (scrypt 2^10, 8, 1)"));
  CHECK(Contains(inspected.stdout_text, "checksum blake2b-keyed"));

  Bytes data;
  for (int i = 0; i < 64; ++i) {
    const Bytes marker = Marker();
    data.insert(data.end(), marker.begin(), marker.end());
  }
  {
    Served v(Concat({"--passphrase-file", pass}, m.uris()), name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, 1 * kMiB));
    REQUIRE_NBD_OK(client.Pwrite(Marker(), 3 * kMiB + 100));  // unaligned: read-modify-write
    CHECK(client.ReadOrThrow(data.size(), 1 * kMiB) == data);
    CHECK(client.ReadOrThrow(kBlock, 3 * kMiB + 100) == Marker());
    const CommandResult status = RunAggregator({"status", "--control", v.control_path()});
    CHECK(Contains(status.stdout_text, "encrypted/dirty"));
    FioVerifies(v.uri(name));
    v.Stop();
  }
  for (size_t i = 0; i < 2; ++i) {
    INFO("member " << i);
    const Bytes file = ReadFile(m.file(i));
    CHECK_FALSE(HoldsMarker(file));
    // What is there looks random: the written block's bytes take most of the 256 values.
    const uint64_t at = AreaOffset(m.uri(i), "data") + 1 * kMiB;
    std::array<bool, 256> seen{};
    for (uint64_t b = at; b < at + kBlock; ++b)
      seen[file[b]] = true;
    CHECK(std::count(seen.begin(), seen.end(), true) > 240);
  }
  // Both copies hold the same ciphertext.
  const Bytes a = ReadFile(m.file(0)), b = ReadFile(m.file(1));
  const uint64_t at = AreaOffset(m.uri(0), "data");
  CHECK(std::equal(a.begin() + at, a.begin() + at + 4 * kMiB, b.begin() + at));

  Served again(Concat({"--passphrase-file", pass}, m.uris()), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(again.uri(name)));
  CHECK(client.ReadOrThrow(data.size(), 1 * kMiB) == data);
}

// --workers 2: large requests are encrypted, checksummed, verified and decrypted on two threads.
// What a client reads back, and what another start without workers reads, is what was written.
TEST_CASE("an encrypted volume served with --workers 2 reads back 4 MiB, with and without them") {
  FileMembers m(2, kMemberSize);
  const std::string name = "enc-workers";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 911));
  CreateOk({"--name", name, "--layout", "stripe", "--encrypt", "--key-file", key}, m.uris());
  const Bytes data = RandomBytes(4 * kMiB, 912);
  const Bytes patch = RandomBytes(3 * kBlock + 100, 913);  // unaligned, under the threshold
  Bytes expected = data;
  std::copy(patch.begin(), patch.end(), expected.begin() + 2 * kMiB + 10);
  {
    Served v(Concat({"--workers", "2", "--key-file", key}, m.uris()), name);
    CHECK(v.WaitForLog("workers: 2 threads"));
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, 1 * kMiB));
    REQUIRE_NBD_OK(client.Pwrite(patch, 3 * kMiB + 10));
    CHECK(client.ReadOrThrow(4 * kMiB, 1 * kMiB) == expected);
    for (uint64_t at = 0; at < 4 * kMiB; at += 1 * kMiB) {
      const Bytes part = client.ReadOrThrow(1 * kMiB, 1 * kMiB + at);
      CHECK(std::equal(part.begin(), part.end(), expected.begin() + at));
    }
    v.Stop();
  }
  for (size_t i = 0; i < 2; ++i) {  // ciphertext only on the export hosts
    const Bytes file = ReadFile(m.file(i));
    CHECK(std::search(file.begin(), file.end(), data.begin(), data.begin() + 64) == file.end());
  }
  Served inline_only(Concat({"--workers", "0", "--key-file", key}, m.uris()), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(inline_only.uri(name)));
  CHECK(client.ReadOrThrow(4 * kMiB, 1 * kMiB) == expected);
}

TEST_CASE("an encrypted volume refuses a wrong or missing secret before any I/O") {
  FileMembers m(2, kMemberSize);
  const std::string name = "enc-keys";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 901));
  const std::string wrong_key = m.dir().File("wrong.key");
  WriteKeyFile(wrong_key, RandomBytes(32, 902));
  const std::string pass = WritePassphrase(m, "pass", "a passphrase\n");
  CreateOk({"--name", name, "--layout", "stripe", "--encrypt", "--key-file", key}, m.uris());

  CheckServeRefused(m.uris(),
                    {"volume " + name + " is encrypted: give --key-file or --passphrase-file"});
  CheckServeRefused(
      Concat({"--key-file", wrong_key}, m.uris()),
      {"volume " + name, "--key-file " + wrong_key, "opens none of its key slots (0)"});
  CheckServeRefused(Concat({"--passphrase-file", pass}, m.uris()),
                    {"volume " + name, "has no passphrase key slot"});
  // The refusals wrote nothing: the superblocks still say clean at event 1.
  for (const std::string& uri : m.uris()) {
    const CommandResult r = RunAggregator({"inspect", uri});
    CHECK(Contains(r.stdout_text, "clean, event 1"));
  }
  Served v(Concat({"--key-file", key}, m.uris()), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  FioVerifies(v.uri(name));
}

TEST_CASE("an encrypted volume: changed, swapped or foreign blocks and changed entries are EIO") {
  FileMembers m(2, kMemberSize);
  const std::string name = "enc-tamper";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 903));
  CreateOk({"--name", name, "--encrypt", "--key-file", key}, {m.uri(0)});
  // Another volume under the same key file: same secret, another master key and UUID.
  CreateOk({"--name", "enc-other", "--encrypt", "--key-file", key}, {m.uri(1)});
  const uint64_t data_offset = AreaOffset(m.uri(0), "data");
  const uint64_t table_offset = AreaOffset(m.uri(0), "table");
  const Bytes written = RandomBytes(8 * kBlock, 904);
  // Block 130's entry is in the second table page (128 entries of 32 bytes to a page).
  const uint64_t far = 130;
  const Bytes far_block = RandomBytes(kBlock, 905);
  for (size_t i = 0; i < 2; ++i) {
    const std::string volume = i == 0 ? name : "enc-other";
    Served v(Concat({"--key-file", key}, {m.uri(i)}), volume);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(volume)));
    REQUIRE_NBD_OK(client.Pwrite(written, 0));
    REQUIRE_NBD_OK(client.Pwrite(far_block, far * kBlock));
    // A hole reads as zeros, and its bytes on the member stay zero: the cipher never saw it.
    CHECK(client.ReadOrThrow(kBlock, 8 * kBlock) == Bytes(kBlock, 0));
    v.Stop();
  }
  const Bytes file = ReadFile(m.file(0));
  const Bytes other = ReadFile(m.file(1));
  const auto block_at = [&](const Bytes& bytes, uint64_t b) {
    return Bytes(bytes.begin() + data_offset + b * kBlock,
                 bytes.begin() + data_offset + (b + 1) * kBlock);
  };
  CHECK(std::all_of(file.begin() + data_offset + 8 * kBlock,
                    file.begin() + data_offset + 9 * kBlock, [](uint8_t b) { return b == 0; }));
  // Behind the aggregator's back: block 2 gets one bit flipped, blocks 3 and 4 trade places, block
  // 5 is the other volume's block 5 (same address, same key file), block 130's entry changes.
  const uint8_t flipped = file[data_offset + 2 * kBlock + 17] ^ 0x01;
  WriteFileAt(m.file(0), data_offset + 2 * kBlock + 17, {&flipped, 1});
  WriteFileAt(m.file(0), data_offset + 3 * kBlock, block_at(file, 4));
  WriteFileAt(m.file(0), data_offset + 4 * kBlock, block_at(file, 3));
  WriteFileAt(m.file(0), data_offset + 5 * kBlock, block_at(other, 5));
  const uint8_t entry = file[table_offset + far * 32 + 9] ^ 0x80;
  WriteFileAt(m.file(0), table_offset + far * 32 + 9, {&entry, 1});

  Served v(Concat({"--key-file", key}, {m.uri(0)}), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  Bytes block(kBlock);
  for (uint64_t b : {uint64_t{2}, uint64_t{3}, uint64_t{4}, uint64_t{5}, far}) {
    INFO("block " << b);
    CHECK_NBD_ERR(client.Pread(block, b * kBlock), EIO);
  }
  for (uint64_t b : {0, 1, 6, 7})
    CHECK(client.ReadOrThrow(kBlock, b * kBlock) ==
          Bytes(written.begin() + b * kBlock, written.begin() + (b + 1) * kBlock));
  v.Stop();
  for (uint64_t b : {2, 3, 4, 5})
    CHECK(Contains(v.stderr_text(),
                   "checksum mismatch at volume offset " + std::to_string(b * kBlock) + " "));
  // A changed entry fails its table page's tag: the page's blocks are EIO.
  CHECK(Contains(v.stderr_text(), "checksum table: page 1 of member "));
  const CommandResult status = RunAggregator({"inspect", m.uri(0)});
  CHECK(Contains(status.stdout_text, "encryption:   aes-256-xts"));
  CHECK(Contains(status.stdout_text, "table tags:   ["));
}

// Security audit W1 (a) and (b): an export host that zeroes a block's table entry, or puts back an
// older block together with its older entry, gets EIO for the blocks of that table page, a log
// line and a counter; never a hole or the old data.
TEST_CASE("an encrypted volume: a zeroed entry or a block rolled back with its entry is EIO") {
  FileMembers m(1, kMemberSize);
  const std::string name = "enc-rollback";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 906));
  CreateOk({"--name", name, "--encrypt", "--key-file", key}, {m.uri(0)});
  const uint64_t data_offset = AreaOffset(m.uri(0), "data");
  const uint64_t table_offset = AreaOffset(m.uri(0), "table");
  const uint64_t far = 130;  // in table page 1
  const Bytes v1 = RandomBytes(kBlock, 907);
  // Each serve writes one thing and stops: every stop writes the table pages back.
  const auto serve_and_write = [&](uint64_t block, const Bytes& data) {
    Served v(Concat({"--key-file", key}, {m.uri(0)}), name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, block * kBlock));
    v.Stop();
  };
  serve_and_write(0, RandomBytes(4 * kBlock, 908));
  serve_and_write(far, v1);
  const Bytes old_file = ReadFile(m.file(0));
  serve_and_write(far, RandomBytes(kBlock, 909));
  serve_and_write(far + 1, RandomBytes(kBlock, 910));  // page 1 written back once more
  // (a) block 0's entry zeroed; (b) block 130's data and entry as they were after v1.
  WriteFileAt(m.file(0), table_offset, Bytes(32, 0));
  WriteFileAt(m.file(0), data_offset + far * kBlock,
              Bytes(old_file.begin() + data_offset + far * kBlock,
                    old_file.begin() + data_offset + (far + 1) * kBlock));
  WriteFileAt(m.file(0), table_offset + far * 32,
              Bytes(old_file.begin() + table_offset + far * 32,
                    old_file.begin() + table_offset + (far + 1) * 32));

  Served v(Concat({"--key-file", key}, {m.uri(0)}), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  Bytes block(kBlock);
  for (uint64_t b : {uint64_t{0}, uint64_t{1}, far, far + 1}) {
    INFO("block " << b);
    CHECK_NBD_ERR(client.Pread(block, b * kBlock), EIO);
  }
  CHECK(client.ReadOrThrow(kBlock, 256 * kBlock) == Bytes(kBlock, 0));  // page 2: never written
  CHECK(JsonNumber(StatusJson(v), "table_unverified") == 2);
  v.Stop();
  CHECK(Contains(v.stderr_text(), "checksum table: page 0 of member "));
  CHECK(Contains(v.stderr_text(), "checksum table: page 1 of member "));
  CHECK(Contains(v.stderr_text(), "blocks 128 to 255 of its data area read as EIO"));
}

// With --state-dir the aggregator records every table page's generation on its own host: a member
// file put back whole, as it was two stops ago (superblocks, table, tags and data), is older than
// what was recorded, and its written table pages read as EIO, logged and counted.
TEST_CASE("an encrypted volume served with --state-dir: a member put back as it was is EIO") {
  FileMembers m(1, kMemberSize);
  const std::string name = "enc-state";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 911));
  const std::string state = m.dir().File("state");
  REQUIRE(std::filesystem::create_directory(state));
  CreateOk({"--name", name, "--encrypt", "--key-file", key}, {m.uri(0)});
  const std::vector<std::string> serve =
      Concat({"--key-file", key, "--state-dir", state}, {m.uri(0)});
  const auto serve_and_write = [&](uint64_t block, const Bytes& data) {
    Served v(serve, name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, block * kBlock));
    v.Stop();
  };
  serve_and_write(0, RandomBytes(4 * kBlock, 912));
  const Bytes old_file = ReadFile(m.file(0));
  serve_and_write(2, RandomBytes(kBlock, 913));    // table page 0, generation 2
  serve_and_write(200, RandomBytes(kBlock, 914));  // table page 1, generation 1
  WriteFileAt(m.file(0), 0, old_file);

  Served v(serve, name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  Bytes block(kBlock);
  for (uint64_t b : {0, 2, 200}) {
    INFO("block " << b);
    CHECK_NBD_ERR(client.Pread(block, b * kBlock), EIO);
  }
  CHECK(client.ReadOrThrow(kBlock, 300 * kBlock) == Bytes(kBlock, 0));  // page 2: never written
  CHECK(JsonNumber(StatusJson(v), "table_rolled_back") == 2);
  v.Stop();
  CHECK(Contains(v.stderr_text(), "table generations anchored in " + state + "/"));
  CHECK(Contains(v.stderr_text(), "checksum table: page 0 of member " + m.uri(0) +
                                      " is generation 1, older than generation 2 anchored"));
  CHECK(Contains(v.stderr_text(), "checksum table: page 1 of member " + m.uri(0) +
                                      " is generation 0, older than generation 1 anchored"));
}

TEST_CASE("key add, list and remove change the slots of every member while serving") {
  FileMembers m(2, kMemberSize);
  const std::string name = "enc-slots";
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 906));
  const std::string pass = WritePassphrase(m, "pass", "a new passphrase\n");
  CreateOk({"--name", name, "--layout", "mirror", "--encrypt", "--key-file", key}, m.uris());
  const Bytes data = RandomBytes(64 * kKiB, 907);
  {
    Served v(Concat({"--key-file", key}, m.uris()), name);
    NbdClient client;
    REQUIRE_NBD_OK(client.Connect(v.uri(name)));
    REQUIRE_NBD_OK(client.Pwrite(data, 0));
    const auto key_cmd = [&v](std::vector<std::string> args) {
      return RunAggregator(Concat({"key", "--control", v.control_path()}, args));
    };
    CommandResult r = key_cmd({"add", name, "--passphrase-file", pass, "--passphrase-cost", "10"});
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_text == "ok: volume " + name + ": key slot 1 added (passphrase)\n");
    r = key_cmd({"list", name});
    CHECK(r.stdout_text == "slot 0: key-file\nslot 1: passphrase (scrypt 2^10, 8, 1)\n");
    CHECK(key_cmd({"remove", name, "0"}).stdout_text ==
          "ok: volume " + name + ": key slot 0 removed\n");
    CheckRefused(key_cmd({"remove", name, "1"}),
                 {"key slot 1 is the last one: nothing would open the volume"});
    CheckRefused(key_cmd({"remove", name, "5"}), {"key slot 5 is empty"});
    CheckRefused(key_cmd({"add", name, "--key-file", m.dir().File("missing.key")}),
                 {"--key-file " + m.dir().File("missing.key"), "No such file or directory"});
    CheckRefused(key_cmd({"add", name}), {"key add needs --key-file or --passphrase-file"});
    // Both copies' superblocks hold the change.
    for (const std::string& uri : m.uris())
      CHECK(Contains(RunAggregator({"inspect", uri}).stdout_text,
                     "key slots: 1 passphrase (scrypt 2^10, 8, 1)\n"));
    v.Stop();
  }
  CheckServeRefused(Concat({"--key-file", key}, m.uris()),
                    {"volume " + name, "has no key-file key slot"});
  Served v(Concat({"--passphrase-file", pass}, m.uris()), name);
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri(name)));
  CHECK(client.ReadOrThrow(data.size(), 0) == data);
}

TEST_CASE("an encrypted volume added live opens with its passphrase, and only with it") {
  FileMembers m(3, kMemberSize);
  const std::string pass = WritePassphrase(m, "pass", "live passphrase\n");
  const std::string wrong = WritePassphrase(m, "wrong", "not it\n");
  CreateOk(Concat({"--name", "enc-live", "--encrypt", "--passphrase-file", pass}, kCheapPassphrase),
           {m.uri(1), m.uri(2)});
  CreateOk({"--name", "plain"}, {m.uri(0)});
  Served v({m.uri(0)});
  const auto add = [&v, &m](const std::string& secret) {
    return RunAggregator({"volume", "--control", v.control_path(), "add", "enc-live",
                          "--passphrase-file", secret, m.uri(1), m.uri(2)});
  };
  CheckRefused(add(wrong), {"volume enc-live", "opens none of its key slots (0)"});
  const CommandResult added = add(pass);
  INFO(added.stderr_text);
  REQUIRE(added.exit_code == 0);
  CHECK(Contains(added.stdout_text, "ok: volume enc-live added"));
  NbdClient client;
  REQUIRE_NBD_OK(client.Connect(v.uri("enc-live")));
  const Bytes data = RandomBytes(3 * kBlock + 5, 908);
  REQUIRE_NBD_OK(client.Pwrite(data, 777));
  CHECK(client.ReadOrThrow(data.size(), 777) == data);
}

TEST_CASE("create --encrypt refuses what cannot be combined with it") {
  FileMembers m(1, kMemberSize);
  const std::string key = m.dir().File("volume.key");
  WriteKeyFile(key, RandomBytes(32, 905));
  const std::string pass = WritePassphrase(m, "pass", "words\n");
  CheckRefused(
      Create({"--name", "x", "--encrypt", "--checksum", "crc32c", "--key-file", key}, m.uris()),
      {"--checksum crc32c cannot be combined with --encrypt"});
  CheckRefused(
      Create({"--name", "x", "--encrypt", "--checksum", "blake2b", "--key-file", key}, m.uris()),
      {"--checksum blake2b cannot be combined with --encrypt"});
  CheckRefused(Create({"--name", "x", "--encrypt"}, m.uris()),
               {"--encrypt: give --key-file or --passphrase-file"});
  CheckRefused(
      Create({"--name", "x", "--encrypt", "--key-file", key, "--passphrase-file", pass}, m.uris()),
      {"give --key-file or --passphrase-file, not both"});
  CheckRefused(Create({"--name", "x", "--passphrase-file", pass}, m.uris()),
               {"--passphrase-file is for --encrypt"});
  CheckRefused(
      Create({"--name", "x", "--encrypt", "--passphrase-file", pass, "--passphrase-cost", "40"},
             m.uris()),
      {"--passphrase-cost 40: scrypt's log2 N, 10 to 20"});
  CHECK(m.AllBlank());  // nothing was written
}

TEST_SUITE_END();

}  // namespace
}  // namespace dst::test::aggregator_encryption_test
