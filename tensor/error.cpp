#include "tensor/error.h"

namespace strand::detail {

void throw_error(const char* cond, const char* file, int line, const std::string& msg) {
  (void)cond;
  (void)file;
  (void)line;
  // User-facing: the message alone says what is wrong; the location is noise for a user.
  throw Error(msg);
}

void throw_assert(const char* cond, const char* file, int line, const std::string& msg) {
  throw Error(concat_message("internal error: assertion `", cond, "` failed at ", file, ":", line,
                             msg.empty() ? "" : ": ", msg));
}

}  // namespace strand::detail
