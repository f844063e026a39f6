#pragma once
/// Stages as types: the built-in stages and their hooks (systempp::stages::on_startup,
/// systempp::stages::before_on_startup, ...) and the app's own custom stages, declared with
/// SYSTEMPP_STAGE and listed in the app:
///
///   // every unit's `warmup` runs after post_startup, before the worker reports READY
///   SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);
///   using my_app = systempp::app<settings, cache, warmup>;
///
///   struct cache {
///     boost::asio::awaitable<void> warmup(systempp::context& ctx);   // a stage member
///     void after_on_init(systempp::context& ctx);                    // a hook: no declaration
///   };
///
/// A custom stage is anchored before or after a built-in stage, a hook or an earlier custom
/// stage, and must be sync or async like its anchor. Its direction (forward: units in start
/// order; backward: the reverse) is its own; whether a failure stops it is its anchor's
/// (forward anchors stop at the first failure, backward ones run every unit). It runs for
/// the units that take the anchor, and its failure is the anchor's (same exit code).
/// Several stages at one place run in declaration order, the hook nearest the anchor.
/// See docs/guide.md, "Hooks and custom stages".

#include <string_view>
#include <type_traits>

#include "systempp/stage.hpp"
#include "systempp/unit.hpp"

namespace systempp::detail {

/// The base of every custom stage type (SYSTEMPP_STAGE): how an app tells its custom
/// stages from its units. Compile time only.
struct custom_stage_tag {};

template <class T>
inline constexpr bool is_custom_stage = std::is_base_of_v<custom_stage_tag, T>;

}  // namespace systempp::detail

/// A stage type: NAME (the member units write), LOOP (sync | async), DIRECTION (forward |
/// backward), PLACE (before | after) and ANCHOR (a stage type). Used for the hooks below
/// and, through SYSTEMPP_STAGE, for custom stages.
#define SYSTEMPP_DETAIL_STAGE_TYPE(NAME, LOOP, DIRECTION, PLACE, ANCHOR, BASE)                 \
  struct NAME : BASE {                                                                        \
    static constexpr std::string_view name = #NAME;                                           \
    static constexpr ::systempp::stage_loop loop = ::systempp::stage_loop::LOOP;              \
    static constexpr ::systempp::stage_direction direction = ::systempp::stage_direction::DIRECTION; \
    static constexpr ::systempp::stage_place place = ::systempp::stage_place::PLACE;          \
    using anchor = ANCHOR;                                                                    \
    static_assert(loop == anchor::loop, "systempp: stage '" #NAME "' must be sync or async "  \
                                        "like the stage it is anchored to");                  \
    SYSTEMPP_DETAIL_MEMBER_TRAIT(trait, NAME, loop == ::systempp::stage_loop::async)          \
  }

/// Declares a custom stage: a type to list in the app, and the member name units implement.
///   SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);
#define SYSTEMPP_STAGE(NAME, LOOP, DIRECTION, PLACE, ANCHOR) \
  SYSTEMPP_DETAIL_STAGE_TYPE(NAME, LOOP, DIRECTION, PLACE, ANCHOR, ::systempp::detail::custom_stage_tag)

namespace systempp::stages {

// The built-in stages as anchors: systempp::stages::on_init ... on_exit.
#define SYSTEMPP_DETAIL_BUILTIN_TYPE(NAME, LOOP, ...)                        \
  struct NAME {                                                             \
    static constexpr ::systempp::stage id = ::systempp::stage::NAME;         \
    static constexpr ::systempp::stage_loop loop = ::systempp::stage_loop::LOOP; \
  };
SYSTEMPP_STAGES(SYSTEMPP_DETAIL_BUILTIN_TYPE)
#undef SYSTEMPP_DETAIL_BUILTIN_TYPE

/// The base of a hook type: its fixed id (stage.hpp, hook_of).
template <stage Id>
struct hook_base {
  static constexpr stage id = Id;
};

// The hooks: before_on_init, after_on_init, ... after_on_exit. Each runs where its stage
// runs, in the same direction, nearest to it.
#define SYSTEMPP_DETAIL_HOOK_TYPES(NAME, LOOP, DIRECTION, ...)                                   \
  SYSTEMPP_DETAIL_STAGE_TYPE(before_##NAME, LOOP, DIRECTION, before, NAME,                     \
                             hook_base<hook_of(::systempp::stage::NAME, ::systempp::stage_place::before)>); \
  SYSTEMPP_DETAIL_STAGE_TYPE(after_##NAME, LOOP, DIRECTION, after, NAME,                       \
                             hook_base<hook_of(::systempp::stage::NAME, ::systempp::stage_place::after)>);
SYSTEMPP_STAGES(SYSTEMPP_DETAIL_HOOK_TYPES)
#undef SYSTEMPP_DETAIL_HOOK_TYPES

}  // namespace systempp::stages

namespace systempp::detail {

/// Every hook type, in id order, then void (the end). Compile time only.
template <class... Hs>
struct hook_list {};
using all_hooks = hook_list<
#define SYSTEMPP_DETAIL_HOOK_ENTRY(NAME, ...) stages::before_##NAME, stages::after_##NAME,
    SYSTEMPP_STAGES(SYSTEMPP_DETAIL_HOOK_ENTRY)
#undef SYSTEMPP_DETAIL_HOOK_ENTRY
    void>;

}  // namespace systempp::detail
