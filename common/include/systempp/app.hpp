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

#include "systempp/dependencies.hpp"
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

/// A unit becomes a one-element list; an app<...> becomes its (already flat) unit list.
/// Compile time only.
template <class T>
struct flatten_one {
  using type = type_list<T>;
};
template <class... Us>
struct flatten_one<app<Us...>> {
  using type = typename app<Us...>::units;
};

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

/// A unit ready for the runtime: name, type, object, its stage hooks and the positions (in
/// the entries, which are in start order) of the units it depends on. Built by
/// app_instance; read by the runners in any process.
struct unit_entry {
  unit_ref ref;
  unit_hooks hooks;
  std::vector<std::size_t> depends_on;
};

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

/// An ordered composition of units (and of other apps, flattened in place). A type only:
/// never instantiated; `units` is the flat type_list in declaration order.
template <class... Ts>
struct app {
  /// The flat list of unit types, in declaration order (nested apps expanded in place).
  using units = typename detail::concat<typename detail::flatten_one<Ts>::type...>::type;
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
  }
  /// The type-erased view the runners use, in start order. Any process.
  std::vector<detail::unit_entry>& entries() noexcept { return entries_; }

 private:
  using declared = typename App::units;
  static_assert(detail::dependencies_checked<declared>::value);
  using ordered = typename detail::in_start_order<declared, detail::dependency_graph<declared>>::type;
  using tuple_type = typename detail::units_tuple<ordered>::type;

  template <class U>
  void add(U& u) {
    entries_.push_back(detail::unit_entry{
        detail::unit_ref{detail::unit_name<U>(), std::type_index(typeid(U)), &u},
        detail::hooks_of<U>(), detail::positions_of<ordered>(typename detail::dependencies_of<U>::type{})});
  }

  std::unique_ptr<tuple_type> units_;
  std::vector<detail::unit_entry> entries_;
};

}  // namespace systempp
