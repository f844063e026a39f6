#pragma once
/// Units: plain classes that implement any subset of the lifecycle stages.
///
/// A stage is a member function named after the stage, taking `systempp::context&` (or
/// nothing). Sync stages (on_init, on_reload, pre_startup, post_shutdown, on_exit) return
/// void. Async stages (on_startup, post_startup, pre_shutdown, on_shutdown) return void or
/// `boost::asio::awaitable<void>`. A member with a stage's name and any other shape is a
/// compile error that names the stage, never a silently skipped hook.
///
/// Stage members must be public: the checks below see only what a caller outside the class
/// can call, so a private or protected stage member is not seen at all (it compiles and
/// never runs). A misspelt name (`on_start`) is an ordinary member and is never called.
/// Which process runs which stage: docs/guide.md, "The stage table".

#include <boost/asio/awaitable.hpp>

#include <array>
#include <concepts>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

#if defined(__GNUC__) && !defined(__clang__)
#include <tr2/type_traits>
#endif

#include "systempp/context.hpp"
#include "systempp/stage.hpp"

namespace systempp {

/// Optional empty base for units; only documents intent (the runtime never looks for it).
/// Compile time only.
struct unit {};

/// A unit that runs in processes of its own rather than in the serving workers (uWSGI's
/// mules): a scheduler, a queue consumer, a cache warmer. Declared as
///   static constexpr systempp::dedicated runs_in{.processes = 1};
/// Such a process runs the unit and what it depends on; the serving workers run every unit
/// that is not dedicated. It is supervised like a worker (READY, heartbeat, backoff,
/// drain, rolled on reload). No unit may depend on a dedicated unit. docs/guide.md,
/// "Dedicated processes".
struct dedicated {
  int processes = 1;         ///< how many such processes the pool keeps (1 to 16)
  bool may_overlap = false;  ///< in a reload the new one may start before the old one ended
};

namespace detail {

/// True for boost::asio::awaitable<void, Executor>: an async stage written as a coroutine.
/// Compile time only.
template <class T>
struct is_awaitable_void : std::false_type {};
template <class E>
struct is_awaitable_void<boost::asio::awaitable<void, E>> : std::true_type {};

/// A type-erased sync stage member: called outside the event loop by lifecycle::run.
using sync_hook = void (*)(void* self, context& ctx);
/// A type-erased async stage member (plain or coroutine), awaited inside ctx.io() by
/// lifecycle::run_async.
using async_hook = boost::asio::awaitable<void> (*)(void* self, context& ctx);

/// Keeps what is needed to restore a unit after a failed reload: a copy of the unit.
using keep_hook = std::shared_ptr<void> (*)(const void* self);
/// Restores a unit from what keep_hook returned (copy assignment).
using restore_hook = void (*)(void* self, const void* kept);

/// The hooks of one unit, indexed by stage id (built-in, hook or custom: stage.hpp); null
/// where the unit has no such stage. Built at
/// compile time by hooks_of; read in any process.
struct unit_hooks {
  std::array<sync_hook, max_stages> sync{};
  std::array<async_hook, max_stages> async{};
  /// The reload transaction (lifecycle::reload): a unit with on_reload either is copied
  /// before it (keep/restore) or undoes it itself (rollback); commit is optional.
  keep_hook keep = nullptr;
  restore_hook restore = nullptr;
  sync_hook rollback = nullptr;  ///< rollback_reload
  sync_hook commit = nullptr;    ///< commit_reload
};

/// The class a pointer to member belongs to. Compile time only.
template <class M>
struct member_class;
template <class R, class C>
struct member_class<R C::*> {
  using type = C;
};

/// U's `runs_in`, if it is a dedicated unit. Compile time only.
template <class U>
consteval std::optional<dedicated> dedicated_of() {
  if constexpr (requires { U::runs_in; }) {
    static_assert(std::is_same_v<std::remove_cvref_t<decltype(U::runs_in)>, dedicated>,
                  "systempp: runs_in must be a systempp::dedicated");
    static_assert(U::runs_in.processes >= 1 && U::runs_in.processes <= 16,
                  "systempp: a dedicated unit runs in 1 to 16 processes");
    return U::runs_in;
  } else {
    return std::nullopt;
  }
}

/// Whether a unit says that where it redefines a stage of its base class, it calls the
/// base's stage itself (`static constexpr bool calls_base_stages = true;`).
template <class U>
consteval bool calls_base_stages() {
  if constexpr (requires { bool{U::calls_base_stages}; })
    return U::calls_base_stages;
  else
    return false;
}

/// Whether U's own stage member hides one that a direct base class declares: C++ name
/// hiding would then keep the base's stage from ever running. GCC tells the bases
/// (std::tr2::direct_bases); other compilers skip this check. Compile time only.
#if defined(__GNUC__) && !defined(__clang__)
template <template <class> class Trait, class... Bases>
consteval bool any_declares(std::tr2::__reflection_typelist<Bases...>) {
  return (Trait<Bases>::declared || ...);
}
template <class U, template <class> class Trait>
consteval bool hides_base_stage() {
  if constexpr (!Trait<U>::declared_here())
    return false;
  else
    return any_declares<Trait>(typename std::tr2::direct_bases<U>::type{});
}
#else
template <class U, template <class> class Trait>
consteval bool hides_base_stage() {
  return false;
}
#endif

// One trait per stage member name: whether a unit declares the member at all (any shape),
// and how to call it. `&U::name` catches a member whose parameters are wrong; the call
// checks catch overloads and templates. ASYNC says whether the stage runs inside the loop.
// Used for the built-in stages below and, nested in each stage type, for hooks and custom
// stages (stage_types.hpp).
#define SYSTEMPP_DETAIL_MEMBER_TRAIT(TRAIT, NAME, ASYNC)                                    \
  template <class U>                                                                       \
  struct TRAIT {                                                                           \
    static constexpr bool with_context = requires(U& u, ::systempp::context& c) { u.NAME(c); }; \
    static constexpr bool without_context = requires(U& u) { u.NAME(); };                  \
    static constexpr bool declared =                                                       \
        with_context || without_context || requires { &U::NAME; };                        \
    static consteval bool declared_here() {                                                \
      if constexpr (requires { &U::NAME; })                                                \
        return std::is_same_v<typename ::systempp::detail::member_class<decltype(&U::NAME)>::type, U>; \
      else                                                                                 \
        return false;                                                                      \
    }                                                                                      \
    static decltype(auto) call(U& u, ::systempp::context& c) {                             \
      if constexpr (with_context)                                                          \
        return u.NAME(c);                                                                  \
      else                                                                                 \
        return u.NAME();                                                                   \
    }                                                                                      \
    static consteval bool check() {                                                        \
      static_assert(!::systempp::detail::hides_base_stage<U, TRAIT>() ||                   \
                        ::systempp::detail::calls_base_stages<U>(),                        \
                    "systempp: a unit redefines stage '" #NAME "' of its base class, which " \
                    "hides the base's (it would never run): call the base's " #NAME          \
                    " from it and declare `static constexpr bool calls_base_stages = true;`"); \
      if constexpr (declared) {                                                            \
        static_assert(with_context || without_context,                                     \
                      "systempp: stage member '" #NAME                                     \
                      "' must be callable as " #NAME "(systempp::context&) or " #NAME "()"); \
        if constexpr (with_context || without_context) {                                   \
          using result = decltype(call(std::declval<U&>(), std::declval<::systempp::context&>())); \
          if constexpr (ASYNC) {                                                           \
            static_assert(std::is_void_v<result> ||                                        \
                              ::systempp::detail::is_awaitable_void<result>::value,        \
                          "systempp: async stage '" #NAME                                  \
                          "' must return void or boost::asio::awaitable<void>");           \
          } else {                                                                         \
            static_assert(!::systempp::detail::is_awaitable_void<result>::value,           \
                          "systempp: sync stage '" #NAME                                   \
                          "' runs outside the event loop and cannot be a coroutine; "      \
                          "return void");                                                  \
            static_assert(std::is_void_v<result> ||                                        \
                              ::systempp::detail::is_awaitable_void<result>::value,        \
                          "systempp: sync stage '" #NAME "' must return void");            \
          }                                                                                \
        }                                                                                  \
      }                                                                                    \
      return true;                                                                         \
    }                                                                                      \
  };

#define SYSTEMPP_DETAIL_STAGE_TRAIT(NAME, ...) \
  SYSTEMPP_DETAIL_MEMBER_TRAIT(NAME##_trait, NAME, is_async(stage::NAME))

/// on_init_trait<U> ... on_exit_trait<U>, one per row of SYSTEMPP_STAGES: whether U
/// declares that stage, how to call it, and check() with the static_asserts behind the
/// compile errors quoted in docs/guide.md. Compile time only.
SYSTEMPP_STAGES(SYSTEMPP_DETAIL_STAGE_TRAIT)
#undef SYSTEMPP_DETAIL_STAGE_TRAIT

/// Calls U's sync stage member through the type-erased pointer. Runs where the stage runs.
template <class U, template <class> class Trait>
void call_sync(void* self, context& ctx) {
  Trait<U>::call(*static_cast<U*>(self), ctx);
}

/// Calls U's async stage member as a coroutine: a plain `void` member is called and
/// completes at once, a coroutine is awaited. Runs on the process's loop, where the stage runs.
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

/// Checks one stage member of U (static_assert) and stores its hook under stage `Id`, if
/// U has one. Compile-time check; the store runs where app_instance is constructed.
template <class U, template <class> class Trait, stage Id, stage_loop Loop>
void register_hook(unit_hooks& hooks) {
  using trait = Trait<U>;
  static_assert(trait::check());
  if constexpr (trait::with_context || trait::without_context) {
    constexpr auto index = static_cast<std::size_t>(Id);
    if constexpr (Loop == stage_loop::async)
      hooks.async[index] = &call_async<U, Trait>;
    else
      hooks.sync[index] = &call_sync<U, Trait>;
  }
}

// The two members a unit may add to take part in the reload transaction, and how to call
// them (with or without the context, like a stage).
#define SYSTEMPP_DETAIL_TRANSACTION_HOOK(NAME)                                             \
  template <class U>                                                                       \
  struct NAME##_member {                                                                   \
    static constexpr bool with_context = requires(U& u, context& c) { u.NAME(c); };        \
    static constexpr bool declared = with_context || requires(U& u) { u.NAME(); };         \
    static void call(void* self, context& c) {                                             \
      if constexpr (with_context)                                                          \
        static_cast<U*>(self)->NAME(c);                                                    \
      else                                                                                 \
        static_cast<U*>(self)->NAME();                                                     \
    }                                                                                      \
  };
SYSTEMPP_DETAIL_TRANSACTION_HOOK(rollback_reload)
SYSTEMPP_DETAIL_TRANSACTION_HOOK(commit_reload)
#undef SYSTEMPP_DETAIL_TRANSACTION_HOOK

/// How U takes part in a reload: a unit with on_reload is restored from a copy when the
/// reload fails, unless it declares rollback_reload (then it undoes on_reload itself). One
/// that can do neither is a compile error: it could be left half-reloaded.
template <class U>
void register_transaction(unit_hooks& h) {
  constexpr bool reloads = on_reload_trait<U>::with_context || on_reload_trait<U>::without_context;
  constexpr bool copyable = std::is_copy_constructible_v<U> && std::is_copy_assignable_v<U>;
  static_assert(!reloads || rollback_reload_member<U>::declared || copyable,
                "systempp: a unit with on_reload must be copyable (the runtime keeps a copy to "
                "restore when the reload fails) or declare rollback_reload(systempp::context&)");
  if constexpr (rollback_reload_member<U>::declared) {
    h.rollback = &rollback_reload_member<U>::call;
  } else if constexpr (reloads && copyable) {
    h.keep = [](const void* self) -> std::shared_ptr<void> {
      return std::make_shared<U>(*static_cast<const U*>(self));
    };
    h.restore = [](void* self, const void* kept) { *static_cast<U*>(self) = *static_cast<const U*>(kept); };
  }
  if constexpr (commit_reload_member<U>::declared) h.commit = &commit_reload_member<U>::call;
}

/// Every stage hook of U, checked at compile time. Called by app_instance in the launching
/// process (and in each exec'd worker image).
template <class U>
unit_hooks hooks_of() {
  unit_hooks h;
#define SYSTEMPP_DETAIL_REGISTER_HOOK(NAME, LOOP, ...) \
  register_hook<U, NAME##_trait, stage::NAME, stage_loop::LOOP>(h);
  SYSTEMPP_STAGES(SYSTEMPP_DETAIL_REGISTER_HOOK)
#undef SYSTEMPP_DETAIL_REGISTER_HOOK
  register_transaction<U>(h);
  return h;
}

}  // namespace detail
}  // namespace systempp
