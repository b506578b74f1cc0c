#include "tests/harness/tls_credentials.h"

#include <sys/stat.h>

#include <fstream>
#include <stdexcept>

#include "tests/harness/process.h"

namespace dst::test {

namespace {

void Run(const Argv& argv) {
  const CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) throw std::runtime_error(JoinArgv(argv) + " failed:\n" + r.stderr_text);
}

// Private keys are for their owner only, as the aggregator requires (the
// tools make them so, but that is theirs to change).
void MakePrivate(const std::string& path) {
  if (::chmod(path.c_str(), 0600) != 0) throw std::runtime_error("cannot chmod 600 " + path);
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

// A private key, then a certificate from `info` (a certtool template),
// self-signed when no CA is given.
void MakeCertificate(const TempDir& dir, const std::string& name, const std::string& info,
                     bool self_signed) {
  const std::string key = dir.File(name + "-key.pem"), cert = dir.File(name + "-cert.pem");
  const std::string template_path = dir.File(name + ".info");
  WriteText(template_path, info + "expiration_days = 2\n");
  Run({"certtool", "--generate-privkey", "--outfile", key});
  MakePrivate(key);
  if (self_signed)
    Run({"certtool", "--generate-self-signed", "--load-privkey", key, "--template", template_path,
         "--outfile", cert});
  else
    Run({"certtool", "--generate-certificate", "--load-ca-certificate", dir.File("ca-cert.pem"),
         "--load-ca-privkey", dir.File("ca-key.pem"), "--load-privkey", key, "--template",
         template_path, "--outfile", cert});
}

}  // namespace

PskFile::PskFile(const std::string& identity) : path_(dir_.File("keys.psk")) {
  Run({"psktool", "-u", identity, "-p", path_});
  MakePrivate(path_);
}

X509Dir::X509Dir(const std::string& client_cn) {
  MakeCertificate(dir_, "ca", "cn = dst test CA\nca\ncert_signing_key\n", true);
  MakeCertificate(dir_, "server",
                  "organization = dst test\ncn = localhost\ndns_name = localhost\n"
                  "ip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n",
                  false);
  MakeCertificate(dir_, "client",
                  "cn = " + client_cn + "\ntls_www_client\nencryption_key\nsigning_key\n", false);
}

}  // namespace dst::test
