#include "autograd/autocast.h"

namespace strand {

namespace {
thread_local bool t_autocast = false;
}  // namespace
bool autocast_enabled() { return t_autocast; }
void set_autocast_enabled(bool on) { t_autocast = on; }

}  // namespace strand
