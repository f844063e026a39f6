#pragma once
/// Composing units into an app.
///
///   using my_app = systempp::app<settings, database, http_server>;
///   using my_app_with_jobs = systempp::app<my_app, job_runner>;   // extends my_app
///
/// Forward stages run units in this order, backward stages in reverse, except that a unit
/// that declares `depends_on` (dependencies.hpp) comes after what it depends on. An app
/// listed inside another app is flattened in place, so a base app's units come first
/// forward and last backward.

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "systempp/command_line.hpp"
#include "systempp/config.hpp"
#include "systempp/dependencies.hpp"
#include "systempp/metrics.hpp"
#include "systempp/options.hpp"
#include "systempp/stage_types.hpp"
#include "systempp/unit.hpp"

namespace systempp {

/// Declared here so detail::flatten_one can recognise a nested app; defined below.
template <class... Ts>
struct app;

namespace detail {

/// Concatenates type_lists: concat<type_list<A>, type_list<B, C>>::type is
/// type_list<A, B, C>. Compile time only.
template <class... Ls>
struct concat;
template <>
struct concat<> {
  using type = type_list<>;
};
template <class... As>
struct concat<type_list<As...>> {
  using type = type_list<As...>;
};
template <class... As, class... Bs, class... Rest>
struct concat<type_list<As...>, type_list<Bs...>, Rest...> {
  using type = typename concat<type_list<As..., Bs...>, Rest...>::type;
};

/// A unit becomes a one-element list; an app<...> becomes its (already flat) unit list; a
/// custom stage is not a unit. Compile time only.
template <class T>
struct flatten_one {
  using type = std::conditional_t<is_custom_stage<T>, type_list<>, type_list<T>>;
};
template <class... Us>
struct flatten_one<app<Us...>> {
  using type = typename app<Us...>::units;
};

/// The custom stages an app lists (SYSTEMPP_STAGE), nested apps' in place. Compile time only.
template <class T>
struct stages_of_one {
  using type = std::conditional_t<is_custom_stage<T>, type_list<T>, type_list<>>;
};
template <class... Us>
struct stages_of_one<app<Us...>> {
  using type = typename app<Us...>::stages;
};

/// Instantiated only for a custom stage anchored to a custom stage that is not in the app:
/// the compiler's message names both (the stage, then its anchor). Compile time only.
template <class Stage, class Anchor>
struct stage_anchor_not_in_app {
  static_assert(always_false<Stage, Anchor>,
                "systempp: a custom stage is anchored to a custom stage that is not in the app "
                "(see the template arguments: the stage, then its anchor)");
};

/// A hook type's id (the void at the end of a hook_list gets one it never uses).
template <class H>
consteval stage hook_id_of() {
  if constexpr (std::is_void_v<H>)
    return stage::on_init;
  else
    return H::id;
}

/// The id of custom stage S's anchor in an app whose custom stages are `Customs`.
template <class S, class Customs>
consteval stage anchor_id() {
  using anchor = typename S::anchor;
  if constexpr (requires { anchor::id; }) {
    return anchor::id;
  } else if constexpr (index_in<anchor, Customs>::value == not_found) {
    static_assert(sizeof(stage_anchor_not_in_app<S, anchor>) > 0);
    return stage::on_init;
  } else {
    return static_cast<stage>(first_custom_stage + index_in<anchor, Customs>::value);
  }
}

/// How many times T occurs in Ts. Compile time only.
template <class T, class... Ts>
constexpr std::size_t count_of = (std::size_t{std::is_same_v<T, Ts>} + ... + 0);

/// The std::tuple that holds an app's unit objects; rejects a unit listed twice and a unit
/// that is not default-constructible. Compile time only.
template <class List>
struct units_tuple;
template <class... Us>
struct units_tuple<type_list<Us...>> {
  static_assert(((count_of<Us, Us...> == 1) && ...),
                "systempp: a unit type appears twice in the app; ctx.unit<T>() would be "
                "ambiguous");
  static_assert((std::is_default_constructible_v<Us> && ...),
                "systempp: units must be default-constructible");
  using type = std::tuple<Us...>;
};

/// Stores U's member for stage type S under id `Id` (void: the end of a hook_list).
/// Compile time checks; the store runs where app_instance is constructed.
template <class U, class S, stage Id>
void register_stage(unit_hooks& h) {
  if constexpr (!std::is_void_v<S>) register_hook<U, S::template trait, Id, S::loop>(h);
}

/// Stores U's members for every hook (before_X, after_X) it has.
template <class U, class... Hooks>
void register_hooks(unit_hooks& h, hook_list<Hooks...>) {
  (register_stage<U, Hooks, hook_id_of<Hooks>()>(h), ...);
}

/// Stores U's members for the app's custom stages (ids from first_custom_stage on).
template <class U, class... Customs>
void register_custom_stages(unit_hooks& h, type_list<Customs...> list) {
  (register_stage<U, Customs,
                  static_cast<stage>(first_custom_stage + index_in<Customs, decltype(list)>::value)>(h),
   ...);
}

/// The rows of an app's custom stages, in id order. Any process.
template <class... Customs>
std::vector<extra_stage> custom_stage_rows(type_list<Customs...>) {
  using list = type_list<Customs...>;
  static_assert(sizeof...(Customs) <= max_custom_stages, "systempp: too many custom stages in the app");
  static_assert(((count_of<Customs, Customs...> == 1) && ...),
                "systempp: a custom stage appears twice in the app");
  return {extra_stage{Customs::name, Customs::loop, Customs::direction, anchor_id<Customs, list>(),
                      Customs::place}...};
}

/// A unit ready for the runtime: name, type, object, its stage hooks and the positions (in
/// the entries, which are in start order) of the units it depends on. Built by
/// app_instance; read by the runners in any process.
struct unit_entry {
  unit_ref ref;
  unit_hooks hooks;
  std::vector<std::size_t> depends_on;
  std::optional<dedicated> runs_in;  ///< set for a unit that runs in processes of its own
  std::optional<section_spec> config;  ///< the config section it declares (config.hpp)
};

/// The section U declares, named for U; nullopt for a unit without one. Any process.
template <class U>
std::optional<section_spec> section_of() {
  if constexpr (has_config_section<U>) {
    auto spec = U::config_section.spec();
    spec.unit = unit_name<U>();
    return spec;
  } else {
    return std::nullopt;
  }
}

/// Instantiated only for a unit that depends on a dedicated unit: the compiler's message
/// names both (the unit, then the dedicated unit). Compile time only.
template <class Unit, class Dedicated>
struct depends_on_dedicated_unit {
  static_assert(always_false<Unit, Dedicated>,
                "systempp: a unit depends on a dedicated unit (runs_in), which runs in processes "
                "of its own (see the template arguments: the unit, then the dedicated unit)");
};

/// Checks that dependency D of U is not dedicated. Compile time only.
template <class U, class D>
consteval bool not_dedicated() {
  if constexpr (dedicated_of<D>().has_value()) static_assert(sizeof(depends_on_dedicated_unit<U, D>) > 0);
  return true;
}
template <class U, class... Deps>
consteval bool no_dedicated_dependency(type_list<Deps...>) {
  return (not_dedicated<U, Deps>() && ... && true);
}

/// The app's units in start order (dependencies first, declaration order among the rest).
/// Compile time only.
template <class List, class Graph, class Index = std::make_index_sequence<Graph::size>>
struct in_start_order;
template <class List, class Graph, std::size_t... I>
struct in_start_order<List, Graph, std::index_sequence<I...>> {
  using type = type_list<std::tuple_element_t<Graph::order[I], typename to_tuple<List>::type>...>;
};

/// The positions in `Ordered` of the units in `Deps`. Any process.
template <class Ordered, class... Deps>
std::vector<std::size_t> positions_of(type_list<Deps...>) {
  return {index_in<Deps, Ordered>::value...};
}

}  // namespace detail

namespace detail {
/// What the runners get from an app: its units in start order and its custom stages.
struct app_units {
  about info;  ///< what systempp::main / run_script were told about the app (--help, --version)
  std::vector<unit_entry> units;
  std::vector<extra_stage> stages;  ///< ids first_custom_stage, first_custom_stage + 1, ...
  /// The configuration file as last checked against the units' sections: read at start,
  /// replaced by a reload that passes (lifecycle::reload); null without --config. One per
  /// process image: a forked worker has the master's at fork time.
  std::shared_ptr<const config_document> config;
  /// The options the units added (command_line.hpp), for the command-line parser.
  std::vector<option_spec> options;
  /// The metrics the units registered (metrics.hpp), laid out for a worker's record.
  metric_registry metrics;
};
}  // namespace detail

/// An ordered composition of units, custom stages (SYSTEMPP_STAGE) and other apps,
/// flattened in place. A type only: never instantiated; `units` is the flat type_list of
/// units in declaration order, `stages` that of custom stages.
template <class... Ts>
struct app {
  /// The flat list of unit types, in declaration order (nested apps expanded in place).
  using units = typename detail::concat<typename detail::flatten_one<Ts>::type...>::type;
  /// The flat list of custom stage types, in declaration order.
  using stages = typename detail::concat<typename detail::stages_of_one<Ts>::type...>::type;
};

/// The live units of an app: constructed once per process image (before any fork), in
/// start order (what a unit depends on first; otherwise declaration order), destroyed in
/// reverse. Forked workers use the master's objects as
/// copied by fork (so state set in on_init is there); an exec'd worker image builds its own.
/// Instantiating it runs the compile-time checks of every unit's stage members.
template <class App>
class app_instance {
 public:
  /// Default-constructs every unit. Launching process (systempp::main, run_script).
  app_instance() : units_(std::make_unique<tuple_type>()) {
    std::apply([this](auto&... u) { (add(u), ...); }, *units_);
    entries_.stages = detail::custom_stage_rows(typename App::stages{});
    command_line cli;
    std::apply([&cli](auto&... u) { (add_options(u, cli), ...); }, *units_);
    entries_.options = std::move(cli.options());
    metric_set metrics;
    std::apply([&metrics](auto&... u) { (add_metrics(u, metrics), ...); }, *units_);
    entries_.metrics.build(metrics.added());
  }
  /// The type-erased view the runners use, units in start order. Any process.
  detail::app_units& entries() noexcept { return entries_; }

 private:
  using declared = typename App::units;
  static_assert(detail::dependencies_checked<declared>::value);
  using ordered = typename detail::in_start_order<declared, detail::dependency_graph<declared>>::type;
  using tuple_type = typename detail::units_tuple<ordered>::type;

  template <class U>
  void add(U& u) {
    auto hooks = detail::hooks_of<U>();
    detail::register_hooks<U>(hooks, detail::all_hooks{});
    detail::register_custom_stages<U>(hooks, typename App::stages{});
    static_assert(detail::no_dedicated_dependency<U>(typename detail::dependencies_of<U>::type{}));
    entries_.units.push_back(detail::unit_entry{
        detail::unit_ref{detail::unit_name<U>(), std::type_index(typeid(U)), &u}, hooks,
        detail::positions_of<ordered>(typename detail::dependencies_of<U>::type{}), detail::dedicated_of<U>(),
        detail::section_of<U>()});
  }

  template <class U>
  static void add_options(U& u, command_line& cli) {
    if constexpr (detail::adds_options<U>) {
      cli.set_unit(detail::unit_name<U>());
      u.add_options(cli);
    }
  }

  template <class U>
  static void add_metrics(U& u, metric_set& m) {
    if constexpr (detail::adds_metrics<U>) u.add_metrics(m);
  }

  std::unique_ptr<tuple_type> units_;
  detail::app_units entries_;
};

}  // namespace systempp
