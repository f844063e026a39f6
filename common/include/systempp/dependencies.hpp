#pragma once
/// Declared dependencies between units, checked and ordered at compile time.
///
///   struct database {
///     using depends_on = systempp::units<settings>;   // settings starts first, stops last
///     ...
///   };
///
/// An app checks that every unit a unit depends on is in the app and that there is no
/// cycle; a violation is a compile error whose template arguments name the units. Forward
/// stages run in a topological order in which declaration order breaks ties (an app
/// without dependencies keeps its order), backward stages in the reverse.

#include <array>
#include <cstddef>
#include <limits>
#include <tuple>
#include <utility>
#include <type_traits>

namespace systempp {

namespace detail {

/// A compile-time list of unit types. Compile time only.
template <class... Ts>
struct type_list {};

}  // namespace detail

/// What a unit's `depends_on` names: `using depends_on = systempp::units<a, b>;`.
template <class... Ts>
using units = detail::type_list<Ts...>;

namespace detail {

inline constexpr std::size_t not_found = std::numeric_limits<std::size_t>::max();

/// The position of T in a type_list, or not_found. Compile time only.
template <class T, class List>
struct index_in;
template <class T, class... Us>
struct index_in<T, type_list<Us...>> {
  static constexpr std::size_t value = [] {
    constexpr bool same[] = {std::is_same_v<T, Us>..., false};
    for (std::size_t i = 0; i < sizeof...(Us); ++i)
      if (same[i]) return i;
    return not_found;
  }();
};

template <class T>
struct is_type_list : std::false_type {};
template <class... Ts>
struct is_type_list<type_list<Ts...>> : std::true_type {};

/// U's `depends_on`, or an empty list. Compile time only.
template <class U>
struct dependencies_of {
  using type = type_list<>;
};
template <class U>
  requires requires { typename U::depends_on; }
struct dependencies_of<U> {
  static_assert(is_type_list<typename U::depends_on>::value,
                "systempp: depends_on must be systempp::units<...>");
  using type = typename U::depends_on;
};

template <class... Ts>
inline constexpr bool always_false = false;

/// Instantiated only for a dependency that is not in the app: the compiler's message names
/// both (Unit, then the Dependency it names). Compile time only.
template <class Unit, class Dependency>
struct dependency_not_in_app {
  static_assert(always_false<Unit, Dependency>,
                "systempp: a unit depends on a unit that is not in the app (see the template "
                "arguments: the unit, then its dependency)");
};

/// Instantiated only for a cycle: its template arguments are the units on it, the first
/// one repeated at the end. Compile time only.
template <class... Cycle>
struct dependency_cycle {
  static_assert(always_false<Cycle...>,
                "systempp: the units' dependencies form a cycle (see the template arguments: "
                "each unit depends on the next)");
};

template <std::size_t N>
using dependency_matrix = std::array<std::array<bool, N>, N>;

/// A cycle as unit indices, the first repeated at the end; length 0 when there is none.
template <std::size_t N>
struct cycle_path {
  std::array<std::size_t, N + 1> at{};
  std::size_t length = 0;
};

template <class List, std::size_t N, class... Ds>
constexpr void mark_dependencies(std::array<bool, N>& row, type_list<Ds...>) {
  ((index_in<Ds, List>::value != not_found ? void(row[index_in<Ds, List>::value] = true) : void()), ...);
}

/// m[i][j]: unit i depends on unit j. Compile time only.
template <class... Us>
constexpr dependency_matrix<sizeof...(Us)> dependencies_matrix(type_list<Us...>) {
  dependency_matrix<sizeof...(Us)> m{};
  std::size_t i = 0;
  (mark_dependencies<type_list<Us...>>(m[i++], typename dependencies_of<Us>::type{}), ...);
  return m;
}

template <std::size_t N>
constexpr void visit_unit(const dependency_matrix<N>& depends, std::size_t u, std::size_t depth,
                          std::array<int, N>& color, std::array<std::size_t, N>& path, cycle_path<N>& found) {
  color[u] = 1;  // on the path
  path[depth] = u;
  for (std::size_t v = 0; v < N && found.length == 0; ++v) {
    if (!depends[u][v]) continue;
    if (color[v] == 1) {  // back onto the path: the cycle runs from v to u, then v again
      std::size_t from = 0;
      while (path[from] != v) ++from;
      for (std::size_t k = from; k <= depth; ++k) found.at[found.length++] = path[k];
      found.at[found.length++] = v;
    } else if (color[v] == 0) {
      visit_unit(depends, v, depth + 1, color, path, found);
    }
  }
  color[u] = 2;  // done
}

/// The first cycle a depth-first search meets. Compile time only.
template <std::size_t N>
constexpr cycle_path<N> find_cycle(const dependency_matrix<N>& depends) {
  cycle_path<N> found;
  std::array<int, N> color{};
  std::array<std::size_t, N> path{};
  for (std::size_t start = 0; start < N && found.length == 0; ++start)
    if (color[start] == 0) visit_unit(depends, start, 0, color, path, found);
  return found;
}

/// Declaration indices in start order: each unit after what it depends on, the earliest
/// declared first among those ready. With a cycle (an error reported elsewhere) the units
/// on it follow in declaration order, so the order stays a permutation. Compile time only.
template <std::size_t N>
constexpr std::array<std::size_t, N> start_order(const dependency_matrix<N>& depends) {
  std::array<std::size_t, N> out{};
  std::array<bool, N> placed{};
  for (std::size_t n = 0; n < N; ++n) {
    std::size_t next = N;
    for (std::size_t u = 0; u < N && next == N; ++u) {
      bool ready = !placed[u];
      for (std::size_t v = 0; v < N && ready; ++v)
        if (depends[u][v] && !placed[v]) ready = false;
      if (ready) next = u;
    }
    for (std::size_t u = 0; u < N && next == N; ++u)
      if (!placed[u]) next = u;
    placed[next] = true;
    out[n] = next;
  }
  return out;
}

/// The dependency graph of an app's flat unit list, in declaration order. Compile time only.
template <class List>
struct dependency_graph {
  using list = List;
  static constexpr auto depends = dependencies_matrix(List{});
  static constexpr std::size_t size = depends.size();
  static constexpr auto cycle = find_cycle(depends);
  static constexpr auto order = start_order(depends);
};

template <class List>
struct to_tuple;
template <class... Us>
struct to_tuple<type_list<Us...>> {
  using type = std::tuple<Us...>;
};

template <class U, class List, class D>
constexpr void check_dependency() {
  if constexpr (index_in<D, List>::value == not_found) (void)sizeof(dependency_not_in_app<U, D>);
}
template <class U, class List, class... Ds>
constexpr void check_dependencies_of(type_list<Ds...>) {
  (check_dependency<U, List, Ds>(), ...);
}

template <class Graph, std::size_t... I>
constexpr void report_cycle(std::index_sequence<I...>) {
  using all = typename to_tuple<typename Graph::list>::type;
  (void)sizeof(dependency_cycle<std::tuple_element_t<Graph::cycle.at[I], all>...>);
}

/// Every check of an app's dependencies; true when it compiles. Compile time only.
template <class List>
struct dependencies_checked;
template <class... Us>
struct dependencies_checked<type_list<Us...>> {
  using graph = dependency_graph<type_list<Us...>>;
  static constexpr bool value = [] {
    (check_dependencies_of<Us, type_list<Us...>>(typename dependencies_of<Us>::type{}), ...);
    if constexpr (graph::cycle.length != 0) report_cycle<graph>(std::make_index_sequence<graph::cycle.length>{});
    return true;
  }();
};

}  // namespace detail
}  // namespace systempp
