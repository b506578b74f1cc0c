#include "aggregator/member_tls_options.h"

#include <cstdint>

#include <CLI/CLI.hpp>

#include "aggregator/serve_options.h"

namespace dst::aggregator {

// The options are serve's (serve_options.cc): the same names, help and parsers here.
void AddMemberTlsOptions(CLI::App& command, member::MemberTls* tls) {
  for (const ServeOption& option : ServeOptions()) {
    if (option.name.rfind("member-tls-", 0) != 0) continue;
    // Applied as serve applies them, to a configuration holding only *tls. They cannot fail.
    auto apply = [tls, &option](const std::string& text) {
      ServeConfig config;
      config.member_tls = *tls;
      if (option.apply(text, &config).ok()) *tls = config.member_tls;
    };
    const std::string flag = "--" + std::string(option.name);
    if (option.form == OptionForm::kBoolean)
      command.add_flag_function(
          flag + ",!--no-" + std::string(option.name),
          [apply](std::int64_t count) { apply(count > 0 ? "true" : "false"); },
          std::string(option.help));
    else
      command.add_option_function<std::string>(flag, apply, std::string(option.help));
  }
}

}  // namespace dst::aggregator
