#pragma once
// Reading architecture fields from a config.json (or a config table): what every backbone's
// from_json shares.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "nn/module.h"

namespace strand::models {

// Sets `out` from j[key] when present and not null; a value of the wrong type is a strand::Error
// naming the source, the key and the value.
template <class T>
void get_field(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    out = j[key].get<T>();
  } catch (const nlohmann::json::exception& e) {
    STRAND_CHECK(false, source, ": field '", key, "' has the wrong type (", j[key].dump(), "): ", e.what());
  }
}

// Parses a config.json text; anything but a JSON object is a strand::Error naming the source.
inline nlohmann::json parse_config_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    STRAND_CHECK(false, source, ": not valid JSON: ", e.what());
  }
  STRAND_CHECK(j.is_object(), source, ": expected a JSON object");
  return j;
}

// An empty module that only groups children under a name (HF's "attention", "output", ...).
inline std::shared_ptr<nn::Module> container(const char* type) { return std::make_shared<nn::Module>(type); }

}  // namespace strand::models
