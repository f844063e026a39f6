#pragma once
/// Units: plain classes that implement any subset of the lifecycle stages.
///
/// A stage is a member function named after the stage, taking `systempp::context&` (or
/// nothing). Sync stages (on_init, on_reload, pre_startup, post_shutdown, on_exit) return
/// void. Async stages (on_startup, post_startup, pre_shutdown, on_shutdown) return void or
/// `boost::asio::awaitable<void>`. A member with a stage's name and any other shape is a
/// compile error that names the stage, never a silently skipped hook.

#include <boost/asio/awaitable.hpp>

#include <array>
#include <concepts>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

#include "systempp/context.hpp"
#include "systempp/stage.hpp"

namespace systempp {

/// Optional empty base for units; only documents intent.
struct unit {};

namespace detail {

template <class T>
struct is_awaitable_void : std::false_type {};
template <class E>
struct is_awaitable_void<boost::asio::awaitable<void, E>> : std::true_type {};

using sync_hook = void (*)(void* self, context& ctx);
using async_hook = boost::asio::awaitable<void> (*)(void* self, context& ctx);

/// The hooks of one unit, indexed by stage; null where the unit has no such stage.
struct unit_hooks {
  std::array<sync_hook, stage_count> sync{};
  std::array<async_hook, stage_count> async{};
};

// One trait per stage name: whether a unit declares the member at all (any shape), and
// how to call it. `&U::name` catches a member whose parameters are wrong; the call checks
// catch overloads and templates.
#define SYSTEMPP_DETAIL_STAGE_TRAIT(NAME)                                                  \
  template <class U>                                                                       \
  struct NAME##_trait {                                                                    \
    static constexpr stage id = stage::NAME;                                               \
    static constexpr bool with_context = requires(U& u, context& c) { u.NAME(c); };        \
    static constexpr bool without_context = requires(U& u) { u.NAME(); };                  \
    static constexpr bool declared =                                                       \
        with_context || without_context || requires { &U::NAME; };                        \
    static decltype(auto) call(U& u, context& c) {                                         \
      if constexpr (with_context)                                                          \
        return u.NAME(c);                                                                  \
      else                                                                                 \
        return u.NAME();                                                                   \
    }                                                                                      \
    static consteval bool check() {                                                        \
      if constexpr (declared) {                                                            \
        static_assert(with_context || without_context,                                     \
                      "systempp: stage member '" #NAME                                     \
                      "' must be callable as " #NAME "(systempp::context&) or " #NAME "()"); \
        if constexpr (with_context || without_context) {                                   \
          using result = decltype(call(std::declval<U&>(), std::declval<context&>()));     \
          if constexpr (is_async(stage::NAME)) {                                           \
            static_assert(std::is_void_v<result> || is_awaitable_void<result>::value,      \
                          "systempp: async stage '" #NAME                                  \
                          "' must return void or boost::asio::awaitable<void>");           \
          } else {                                                                         \
            static_assert(!is_awaitable_void<result>::value,                               \
                          "systempp: sync stage '" #NAME                                   \
                          "' runs outside the event loop and cannot be a coroutine; "      \
                          "return void");                                                  \
            static_assert(std::is_void_v<result> || is_awaitable_void<result>::value,      \
                          "systempp: sync stage '" #NAME "' must return void");            \
          }                                                                                \
        }                                                                                  \
      }                                                                                    \
      return true;                                                                         \
    }                                                                                      \
  };

SYSTEMPP_DETAIL_STAGE_TRAIT(on_init)
SYSTEMPP_DETAIL_STAGE_TRAIT(on_reload)
SYSTEMPP_DETAIL_STAGE_TRAIT(pre_startup)
SYSTEMPP_DETAIL_STAGE_TRAIT(on_startup)
SYSTEMPP_DETAIL_STAGE_TRAIT(post_startup)
SYSTEMPP_DETAIL_STAGE_TRAIT(pre_shutdown)
SYSTEMPP_DETAIL_STAGE_TRAIT(on_shutdown)
SYSTEMPP_DETAIL_STAGE_TRAIT(post_shutdown)
SYSTEMPP_DETAIL_STAGE_TRAIT(on_exit)
#undef SYSTEMPP_DETAIL_STAGE_TRAIT

template <class U, template <class> class Trait>
void call_sync(void* self, context& ctx) {
  Trait<U>::call(*static_cast<U*>(self), ctx);
}

template <class U, template <class> class Trait>
boost::asio::awaitable<void> call_async(void* self, context& ctx) {
  using result = decltype(Trait<U>::call(std::declval<U&>(), ctx));
  if constexpr (std::is_void_v<result>) {
    Trait<U>::call(*static_cast<U*>(self), ctx);
    co_return;
  } else {
    co_await Trait<U>::call(*static_cast<U*>(self), ctx);
  }
}

template <class U, template <class> class Trait>
void register_hook(unit_hooks& hooks) {
  using trait = Trait<U>;
  static_assert(trait::check());
  if constexpr (trait::with_context || trait::without_context) {
    constexpr auto index = static_cast<std::size_t>(trait::id);
    if constexpr (is_async(trait::id))
      hooks.async[index] = &call_async<U, Trait>;
    else
      hooks.sync[index] = &call_sync<U, Trait>;
  }
}

/// Every stage hook of U, checked at compile time.
template <class U>
unit_hooks hooks_of() {
  unit_hooks h;
  register_hook<U, on_init_trait>(h);
  register_hook<U, on_reload_trait>(h);
  register_hook<U, pre_startup_trait>(h);
  register_hook<U, on_startup_trait>(h);
  register_hook<U, post_startup_trait>(h);
  register_hook<U, pre_shutdown_trait>(h);
  register_hook<U, on_shutdown_trait>(h);
  register_hook<U, post_shutdown_trait>(h);
  register_hook<U, on_exit_trait>(h);
  return h;
}

/// Demangled type name without namespaces or template arguments.
std::string short_type_name(const std::type_info& type);

/// The unit's name in logs and status: `static constexpr std::string_view name` if the unit
/// has one, otherwise its type name.
template <class U>
std::string unit_name() {
  if constexpr (requires { std::string_view{U::name}; })
    return std::string(U::name);
  else
    return short_type_name(typeid(U));
}

}  // namespace detail
}  // namespace systempp
