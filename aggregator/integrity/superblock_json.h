// Superblocks for people and scripts: the output of `dst-aggregator inspect` (text) and
// `inspect --json` (one JSON object per superblock; the caller wraps them with URI and slot).
// Field names are the ones docs/format.md uses. Version 2 superblocks add their own fields
// (copies, set and copy of the member, generation, history, epochs, the missed-write map area and
// one object per slot); version 1 output is unchanged. Sizes and offsets are JSON integers; those
// above 2^53 (8 PiB) lose precision in JavaScript-style parsers but not in Python or jq 1.7.
//
// Threading: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

#include "aggregator/integrity/superblock.h"

namespace dst::integrity {

// `text` as a JSON string literal, quotes included (RFC 8259 escaping; UTF-8 passes through).
std::string JsonQuote(std::string_view text);

// One JSON object on one line, no trailing newline.
std::string SuperblockToJson(const Superblock& sb);

// "key: value" lines, each ending in a newline.
std::string SuperblockToText(const Superblock& sb);

// "2024-05-01T12:00:00Z", or the number of seconds when it is not a representable date.
std::string FormatTimeUtc(uint64_t seconds);

}  // namespace dst::integrity
