#include "aggregator/serve_config_file.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

#include "aggregator/key_file.h"
#include "aggregator/serve_options.h"
#include "aggregator/volume_key.h"

namespace dst::aggregator {

namespace {

std::string Where(const std::string& path, const toml::node& node) {
  return path + ":" + std::to_string(node.source().begin.line);
}

// The text a scalar stands for, as it would be written on the command line; "" for what no
// option accepts (a float, a date, a table), which the option's parser then refuses.
std::string ScalarText(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  return "";
}

// One key of the file, read by the option's own parser (serve_options.h): the same as
// --NAME on the command line, with "FILE:LINE: NAME: " in front of any error.
template <typename Config>
Status ReadOption(const std::string& where, const toml::node& node, const Option<Config>& option,
                  Config* config) {
  switch (option.form) {
    case OptionForm::kText:
      if (!node.is_string()) return Status::Invalid(where + ": expected a string");
      break;
    case OptionForm::kBoolean:
      if (!node.is_boolean()) return Status::Invalid(where + ": expected true or false");
      break;
    case OptionForm::kTextList: {
      const auto* array = node.as_array();
      if (!array) return Status::Invalid(where + ": expected an array of strings");
      for (const auto& item : *array) {
        if (!item.is_string()) return Status::Invalid(where + ": expected an array of strings");
        const std::string text = item.as_string()->get();
        // An item is named by its value, as on the command line ("listen nowhere: ...").
        DST_RETURN_IF_ERROR(option.apply(text, config).Wrap(where + " " + text));
      }
      return Status::Ok();
    }
    case OptionForm::kNumber:
    case OptionForm::kQuantity:
      break;
  }
  return option.apply(ScalarText(node), config).Wrap(where);
}

// A [[volume]] table: the volume options, plus what only the file says per volume (its members,
// which the command line gives as arguments, and raw, which --raw sets for all).
Status ReadVolume(const std::string& path, const toml::table& table, VolumeConfig* v) {
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    const std::string where = Where(path, node) + ": " + k;
    if (const VolumeOption* option = FindVolumeOption(k)) {
      DST_RETURN_IF_ERROR(ReadOption(where, node, *option, v));
      if (k == "key-file") DST_RETURN_IF_ERROR(CheckKeyFile(v->key_file).Wrap(where));
      if (k == "passphrase-file")
        DST_RETURN_IF_ERROR(CheckPassphraseFile(v->passphrase_file).Wrap(where));
    } else if (k == "members") {
      const auto* array = node.as_array();
      if (!array) return Status::Invalid(where + ": expected an array of strings");
      for (const auto& item : *array) {
        if (!item.is_string()) return Status::Invalid(where + ": expected an array of strings");
        v->members.push_back(item.as_string()->get());
      }
    } else if (k == "raw") {
      const auto* b = node.as_boolean();
      if (!b) return Status::Invalid(where + ": expected true or false");
      v->raw = b->get();
    } else {
      return Status::Invalid(Where(path, node) + ": unknown key '" + k + "' in [[volume]]");
    }
  }
  return Status::Ok();
}

Status ReadTopLevel(const std::string& path, const std::string& k, const toml::node& node,
                    ServeConfig* config) {
  const std::string where = Where(path, node) + ": " + k;
  if (const ServeOption* option = FindServeOption(k))
    return ReadOption(where, node, *option, config);
  if (k == "volume") {
    const auto* tables = node.as_array();
    if (!tables || !tables->is_array_of_tables())
      return Status::Invalid(where + ": expected [[volume]] tables");
    for (const auto& table : *tables) {
      VolumeConfig v;
      DST_RETURN_IF_ERROR(ReadVolume(path, *table.as_table(), &v));
      config->volumes.push_back(std::move(v));
    }
    return Status::Ok();
  }
  return Status::Invalid(Where(path, node) + ": unknown key '" + k + "'");
}

}  // namespace

Status ParseServeConfig(std::string_view text, const std::string& source, ServeConfig* config) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const auto& err = parsed.error();
    return Status::Invalid(source + ":" + std::to_string(err.source().begin.line) + ": " +
                           std::string(err.description()));
  }
  for (const auto& [key, node] : parsed.table())
    DST_RETURN_IF_ERROR(ReadTopLevel(source, std::string(key.str()), node, config));
  return Status::Ok();
}

Status LoadServeConfig(const std::string& path, ServeConfig* config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::FromErrno(EIO, path);
  return ParseServeConfig(text.str(), path, config);
}

}  // namespace dst::aggregator
