#include "aggregator/serve_args.h"

#include <CLI/CLI.hpp>

#include "aggregator/serve_config_file.h"

namespace dst::aggregator {

namespace {

// Where serve listens when neither --listen nor --unix says.
constexpr const char* kDefaultListen = "127.0.0.1:10809";

// ---------------------------------------------------------------------------
// The command line: every option's text is kept as given and applied after parsing.

template <typename O, typename Given>
void AddTableOption(CLI::App& serve, const O& option, const std::string& shown_default,
                    Given* given) {
  const std::string flag = "--" + std::string(option.name);
  const std::string help(option.help);
  if (option.form == OptionForm::kBoolean) {
    serve.add_flag_function(
        flag + ",!--no-" + std::string(option.name),
        [given, &option](std::int64_t count) {
          given->emplace_back(&option, count > 0 ? "true" : "false");
        },
        help);
    return;
  }
  if (option.form == OptionForm::kTextList) {
    // --listen A --listen B; never takes the member URIs that follow.
    serve
        .add_option_function<std::vector<std::string>>(
            flag,
            [given, &option](const std::vector<std::string>& items) {
              for (const std::string& item : items)
                given->emplace_back(&option, item);
            },
            help)
        ->allow_extra_args(false);
    return;
  }
  CLI::Option* o = serve.add_option_function<std::string>(
      flag, [given, &option](const std::string& text) { given->emplace_back(&option, text); },
      help);
  if (!shown_default.empty()) o->default_str(shown_default);
}

// "--NAME VALUE: message".
template <typename O>
Status OnCommandLine(const O& option, const std::string& text, const Status& s) {
  return Status::Error(s.err(), "--" + std::string(option.name) + " " + text + ": " + s.message());
}

Status VolumeFromArgs(const ServeArgs& args, VolumeConfig* volume) {
  for (const auto& [option, text] : args.volume_options)
    if (Status s = option->apply(text, volume); !s.ok()) return OnCommandLine(*option, text, s);
  volume->members = args.members;
  return Status::Ok();
}

// "--name, --description, ... and --key-file".
std::string VolumeFlags() {
  std::string out;
  const auto options = VolumeOptions();
  for (size_t i = 0; i < options.size(); ++i)
    out += std::string(i == 0                    ? ""
                       : i + 1 == options.size() ? " and "
                                                 : ", ") +
           "--" + std::string(options[i].name);
  return out;
}

}  // namespace

CLI::App* AddServeCommand(CLI::App& app, ServeArgs* args) {
  CLI::App* serve = app.add_subcommand("serve", "serve volumes over NBD");
  const ServeConfig defaults;
  for (const ServeOption& option : ServeOptions())
    AddTableOption(*serve, option, option.show(defaults), &args->options);
  const VolumeConfig volume_defaults;
  for (const VolumeOption& option : VolumeOptions())
    AddTableOption(*serve, option, option.show(volume_defaults), &args->volume_options);
  serve->add_option("--config", args->config_file, "TOML file with listeners and volumes");
  serve->add_flag("-v,--verbose", args->verbose, "log every request error");
  serve->add_flag("--check-config", args->check_config,
                  "check the configuration (options and --config file) and exit, serving nothing");
  serve->add_option("members", args->members,
                    "member NBD URIs: raw in layout order, assembled in any order");
  return serve;
}

Status ServeConfigFromArgs(const ServeArgs& args, ServeConfig* config) {
  for (const auto& [option, text] : args.options)
    if (Status s = option->apply(text, config); !s.ok()) return OnCommandLine(*option, text, s);
  if (!args.config_file.empty()) {
    if (!args.members.empty())
      return Status::Invalid("--config cannot be combined with member URIs");
    if (!args.volume_options.empty())
      return Status::Invalid("--config: give " + VolumeFlags() +
                             " in the file's [[volume]] tables");
    DST_RETURN_IF_ERROR(LoadServeConfig(args.config_file, config));
  } else {
    VolumeConfig volume;
    DST_RETURN_IF_ERROR(VolumeFromArgs(args, &volume));
    config->volumes.push_back(std::move(volume));
  }
  if (config->listen.empty() && config->unix_sockets.empty())
    config->listen.push_back(kDefaultListen);
  return Status::Ok();
}

}  // namespace dst::aggregator
