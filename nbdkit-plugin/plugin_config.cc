#include "nbdkit-plugin/plugin_config.h"

#include <cerrno>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

#include "common/duration.h"
#include "common/units.h"

namespace dst::plugin {

namespace {

std::string KeyValue(std::string_view key, std::string_view value) {
  return std::string(key) + "=" + std::string(value);
}

Status ParseSizeValue(std::string_view text, ExportSpec* spec) {
  const auto size = ParseSize(text);
  if (!size)
    return Status::Invalid("size=" + std::string(text) + ": not a size (e.g. 4096, 64M, 10G)");
  spec->size = size;
  spec->size_text = std::string(text);
  return Status::Ok();
}

Status ParseAccessValue(std::string_view text, ExportSpec* spec) {
  AccessRule rule;
  Status s = AccessRule::Parse(text, &rule);
  if (!s.ok()) return s.Wrap("access='" + std::string(text) + "'");
  spec->access.Add(std::move(rule));
  return Status::Ok();
}

// Reads a whole file, so that a missing or unreadable config is reported
// with errno rather than as a parse error.
Status ReadWholeFile(const std::string& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, "config=" + path + ": open");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::FromErrno(errno, "config=" + path + ": read");
  *text = buf.str();
  return Status::Ok();
}

// Parses one [[export]] table of a config file into *spec.
class ExportTableParser {
 public:
  ExportTableParser(const std::string& path, const toml::table& table)
      : path_(path), table_(table) {}

  Status Parse(ExportSpec* spec) {
    spec->origin = Where(table_);
    for (const auto& [key, node] : table_) {
      DST_RETURN_IF_ERROR(ParseKey(std::string(key.str()), node, spec));
    }
    if (spec->name.empty()) return Status::Invalid(spec->origin + ": export without a name");
    if (spec->file.empty())
      return Status::Invalid(spec->origin + ": export '" + spec->name + "' has no file");
    return Status::Ok();
  }

 private:
  std::string Where(const toml::node& node) const {
    return "config=" + path_ + ":" + std::to_string(node.source().begin.line);
  }

  Status ParseKey(const std::string& key, const toml::node& node, ExportSpec* spec) {
    const std::string where = Where(node) + ": " + key;
    if (key == "name" || key == "file" || key == "description") {
      const auto* value = node.as_string();
      if (!value) return Status::Invalid(where + ": expected a string");
      std::string& field = key == "name"   ? spec->name
                           : key == "file" ? spec->file
                                           : spec->description;
      field = value->get();
      return Status::Ok();
    }
    if (key == "readonly" || key == "direct") {
      const auto* value = node.as_boolean();
      if (!value) return Status::Invalid(where + ": expected true or false");
      (key == "readonly" ? spec->readonly : spec->direct) = value->get();
      return Status::Ok();
    }
    if (key == "size") return ParseSizeNode(where, node, spec);
    if (key == "access") return ParseAccessNode(where, node, spec);
    return Status::Invalid(Where(node) + ": unknown key '" + key + "' in [[export]]");
  }

  static Status ParseSizeNode(const std::string& where, const toml::node& node, ExportSpec* spec) {
    if (const auto* n = node.as_integer()) {
      if (n->get() < 0) return Status::Invalid(where + ": negative size");
      return ParseSizeValue(std::to_string(n->get()), spec);
    }
    if (const auto* s = node.as_string()) return ParseSizeValue(s->get(), spec).Wrap(where);
    return Status::Invalid(where + ": expected a size such as 64M");
  }

  static Status ParseAccessNode(const std::string& where, const toml::node& node,
                                ExportSpec* spec) {
    const auto* rules = node.as_array();
    if (!rules) return Status::Invalid(where + ": expected an array of rules");
    for (const auto& rule : *rules) {
      const auto* text = rule.as_string();
      if (!text) return Status::Invalid(where + ": expected rule strings");
      DST_RETURN_IF_ERROR(ParseAccessValue(text->get(), spec).Wrap(where));
    }
    return Status::Ok();
  }

  const std::string& path_;
  const toml::table& table_;
};

constexpr const char* kDurationHelp = "not a duration (e.g. 30, 500ms, 5s)";

// The text of a root-table value that may be written as a number or a string.
bool ScalarText(const toml::node& node, std::string* text) {
  if (const auto* n = node.as_integer()) {
    if (n->get() < 0) return false;
    *text = std::to_string(n->get());
    return true;
  }
  if (const auto* s = node.as_string()) {
    *text = s->get();
    return true;
  }
  if (const auto* b = node.as_boolean()) {
    *text = b->get() ? "true" : "false";
    return true;
  }
  return false;
}

bool IsGlobalKey(std::string_view key) {
  return key == "fence-wait" || key == "parallel-requests" || key == "debug-hold-write";
}

}  // namespace

Status ParseHoldWrite(std::string_view text, PluginConfig::HoldWrite* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return Status::Invalid("expected OFFSET:MILLISECONDS (e.g. 1M:1500)");
  const std::string_view offset_text = text.substr(0, colon);
  const std::string_view ms_text = text.substr(colon + 1);
  const auto offset = ParseSize(offset_text);
  if (!offset)
    return Status::Invalid("offset '" + std::string(offset_text) + "': not a size (e.g. 0, 1M)");
  const auto duration = ParseDuration(ms_text, std::chrono::milliseconds(1));
  if (!duration)
    return Status::Invalid("milliseconds '" + std::string(ms_text) + "': " + kDurationHelp);
  *out = {*offset, *duration};
  return Status::Ok();
}

bool ParseBool(std::string_view text, bool* value) {
  std::string s;
  for (char c : text)
    s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "true" || s == "yes" || s == "on" || s == "1")
    *value = true;
  else if (s == "false" || s == "no" || s == "off" || s == "0")
    *value = false;
  else
    return false;
  return true;
}

const char* PluginConfig::Help() {
  return "file=<PATH>            (required, or config=) file or block device to serve\n"
         "size=<SIZE>            create or extend file= to SIZE (sparse)\n"
         "readonly=true|false    serve file= read-only\n"
         "direct=true|false      use O_DIRECT for aligned requests\n"
         "name=<NAME>            export name of file= (default: default)\n"
         "description=<TEXT>     export description shown by NBD_OPT_LIST\n"
         "access='<RANGE> <MODE>' access rule, repeatable: RANGE is ADDR[/PREFIX],\n"
         "                       unix or all; MODE is rw, ro or deny; first match wins\n"
         "config=<FILE>          TOML file describing several exports (see docs)\n"
         "fence-wait=<DURATION>  how long a fenced open of a newer epoch waits for\n"
         "                       older writes (seconds, or 500ms, 5s; default 30)\n"
         "parallel-requests=true|false  run a connection's requests in parallel\n"
         "                       (default false: unsafe under nbdkit before 1.33.10)\n"
         "debug-hold-write=<OFFSET>:<MS> fault injection for tests only: hold the\n"
         "                       first write covering OFFSET for MS milliseconds";
}

Status PluginConfig::SetGlobal(std::string_view key, std::string_view value,
                               const std::string& where) {
  std::string& set_at = key == "fence-wait"          ? fence_wait_where_
                        : key == "parallel-requests" ? parallel_where_
                                                     : hold_write_where_;
  if (!set_at.empty()) return Status::Invalid(where + ": already given as " + set_at);
  if (key == "fence-wait") {
    const auto wait = ParseDuration(value);
    if (!wait) return Status::Invalid(where + ": " + kDurationHelp);
    fence_wait_ = *wait;
  } else if (key == "parallel-requests") {
    if (!ParseBool(value, &parallel_requests_))
      return Status::Invalid(where + ": expected true or false");
  } else {
    HoldWrite hold;
    DST_RETURN_IF_ERROR(ParseHoldWrite(value, &hold).Wrap(where));
    debug_hold_write_ = hold;
  }
  set_at = where;
  return Status::Ok();
}

Status PluginConfig::Set(std::string_view key, std::string_view value) {
  const std::string kv = KeyValue(key, value);
  if (key == "config") {
    config_path_ = std::string(value);
    return Status::Ok();
  }
  if (key == "file") {
    single_.file = std::string(value);
    have_file_ = true;
    return Status::Ok();
  }
  // Plugin-wide keys go with file= and with config= alike.
  if (IsGlobalKey(key)) return SetGlobal(key, value, kv);
  single_keys_used_ = true;
  if (key == "size") return ParseSizeValue(value, &single_);
  if (key == "name") {
    single_.name = std::string(value);
    return Status::Ok();
  }
  if (key == "description") {
    single_.description = std::string(value);
    return Status::Ok();
  }
  if (key == "readonly" || key == "direct") {
    bool b;
    if (!ParseBool(value, &b)) return Status::Invalid(kv + ": expected true or false");
    (key == "readonly" ? single_.readonly : single_.direct) = b;
    return Status::Ok();
  }
  if (key == "access") return ParseAccessValue(value, &single_);
  return Status::Invalid("unknown parameter '" + std::string(key) + "' (in " + kv + ")");
}

Status PluginConfig::Complete() {
  if (!config_path_.empty()) {
    if (have_file_ || single_keys_used_)
      return Status::Invalid("config=" + config_path_ +
                             ": config= cannot be combined with file= or other export keys");
    return LoadConfigFile();
  }
  if (!have_file_) return Status::Invalid("file=PATH or config=FILE is required");
  if (single_.file.empty()) return Status::Invalid("file=: empty path");
  if (single_.name.empty()) single_.name = kDefaultExportName;
  single_.origin = "file=" + single_.file;
  default_export_ = single_.name;
  exports_.push_back(std::move(single_));
  return Status::Ok();
}

Status PluginConfig::LoadConfigFile() {
  const std::string& path = config_path_;
  std::string text;
  DST_RETURN_IF_ERROR(ReadWholeFile(path, &text));
  toml::parse_result parsed = toml::parse(text, path);
  if (!parsed) {
    const auto& err = parsed.error();
    return Status::Invalid("config=" + path + ":" + std::to_string(err.source().begin.line) + ": " +
                           std::string(err.description()));
  }
  const toml::table& root = parsed.table();
  std::set<std::string> names;
  for (const auto& [key, node] : root) {
    const std::string where = "config=" + path + ":" + std::to_string(node.source().begin.line);
    if (key.str() == "default") {
      if (!node.is_string()) return Status::Invalid(where + ": default: expected a string");
      default_export_ = node.as_string()->get();
    } else if (key.str() == "export") {
      const auto* tables = node.as_array();
      if (!tables || !tables->is_array_of_tables())
        return Status::Invalid(where + ": export: expected [[export]] tables");
      for (const auto& table : *tables) {
        ExportSpec spec;
        DST_RETURN_IF_ERROR(ExportTableParser(path, *table.as_table()).Parse(&spec));
        if (!names.insert(spec.name).second)
          return Status::Invalid(spec.origin + ": duplicate export name '" + spec.name + "'");
        exports_.push_back(std::move(spec));
      }
    } else if (IsGlobalKey(key.str())) {
      std::string text;
      if (!ScalarText(node, &text))
        return Status::Invalid(where + ": " + std::string(key.str()) +
                               ": expected a string or a non-negative integer");
      DST_RETURN_IF_ERROR(SetGlobal(key.str(), text, where + ": " + std::string(key.str())));
    } else {
      return Status::Invalid(where + ": unknown key '" + std::string(key.str()) + "'");
    }
  }
  if (exports_.empty()) return Status::Invalid("config=" + path + ": no [[export]] defined");
  if (default_export_.empty()) default_export_ = exports_.front().name;
  if (!names.count(default_export_))
    return Status::Invalid("config=" + path + ": default export '" + default_export_ +
                           "' is not defined");
  return Status::Ok();
}

}  // namespace dst::plugin
