#pragma once
// How one unit's run of one stage went, and the sync call that produces it: shared by the
// stage engine (lifecycle.cpp) and the reload transaction (reload_transaction.cpp).

#include <fmt/format.h>

#include <chrono>
#include <exception>
#include <string>

#include "systempp/lifecycle.hpp"

namespace systempp {

struct detail::stage_attempt {
  stage_outcome outcome = stage_outcome::ok;
  std::string error;
  bool config = false;  ///< the unit threw config_error
  std::chrono::microseconds took{0};
};

namespace detail {

using clock_type = std::chrono::steady_clock;

inline stage_attempt failure_of(std::exception_ptr thrown) {
  try {
    std::rethrow_exception(thrown);
  } catch (const config_error& e) {
    return {stage_outcome::failed, e.what(), true, {}};
  } catch (const std::exception& e) {
    return {stage_outcome::failed, e.what(), false, {}};
  } catch (...) {
    return {stage_outcome::failed, "unknown exception", false, {}};
  }
}

inline stage_attempt timed_out(std::chrono::milliseconds limit) {
  return {stage_outcome::timed_out, fmt::format("exceeded the stage timeout of {} ms", limit.count()), false,
          {}};
}

inline std::chrono::microseconds since(clock_type::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0);
}

// A sync stage cannot be interrupted: an overrun is only known when it returns.
inline stage_attempt call_sync(sync_hook hook, void* self, context& ctx, std::chrono::milliseconds limit) {
  const auto t0 = clock_type::now();
  stage_attempt a;
  try {
    hook(self, ctx);
    if (clock_type::now() - t0 > limit) a = timed_out(limit);
  } catch (...) {
    a = failure_of(std::current_exception());
  }
  a.took = since(t0);
  return a;
}

}  // namespace detail
}  // namespace systempp
