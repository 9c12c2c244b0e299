#pragma once
// Errors: STRAND_CHECK for anything a user can cause (throws strand::Error with a message naming
// the values involved), STRAND_ASSERT for internal invariants.
#include <sstream>
#include <stdexcept>
#include <string>

namespace strand {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat_message(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* cond, const char* file, int line, const std::string& msg);
[[noreturn]] void throw_assert(const char* cond, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace strand

#define STRAND_CHECK(cond, ...)                                                          \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::strand::detail::throw_error(#cond, __FILE__, __LINE__,                           \
                                    ::strand::detail::concat_message(__VA_ARGS__));      \
  } while (0)

#define STRAND_ASSERT(cond, ...)                                                         \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::strand::detail::throw_assert(#cond, __FILE__, __LINE__,                          \
                                     ::strand::detail::concat_message("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
