#include "systempp/master/control_client.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <thread>

#include "systempp/control_block.hpp"
#include "systempp/errors.hpp"
#include "systempp/stage.hpp"

namespace systempp::master {

namespace {

struct pool_ref {
  std::string name;
  pid_t master = 0;
};

class control_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The pool whose master pid is in the pidfile: its segment must exist, belong to us, and
// name that pid as its master. Otherwise the pid is dead or a stranger's.
pool_ref from_pidfile(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0 || pid > INT32_MAX)
    throw control_failure(fmt::format("--pidfile {}: no pid in it", path));
  // The pid is the pool's master only while it holds the pool's lock: a stale pidfile's
  // pid may belong to an unrelated process by now.
  if (auto pool = pool_of_master(static_cast<pid_t>(pid))) {
    if (find_live_master(*pool) != static_cast<pid_t>(pid))
      throw control_failure(fmt::format("--pidfile {}: master pid {} is not running pool '{}'", path, pid, *pool));
    return pool_ref{*pool, static_cast<pid_t>(pid)};
  }
  throw control_failure(fmt::format(
      "--pidfile {}: pid {} is not the master of a systempp pool of this user", path, pid));
}

pool_ref locate(const control_command& cmd) {
  if (!cmd.pidfile.empty()) return from_pidfile(cmd.pidfile);
  if (!valid_pool_name(cmd.name)) throw control_failure(fmt::format("--name {}: not a valid pool name", cmd.name));
  auto pid = find_live_master(cmd.name);
  if (!pid) throw control_failure(fmt::format("no running pool named '{}'", cmd.name));
  return pool_ref{cmd.name, *pid};
}

control_segment attach_checked(const pool_ref& p, access mode) {
  auto seg = control_segment::attach(p.name, p.master, mode, readable_owner(p.name));
  if (seg.header().master_pid.load() != p.master)
    throw control_failure(fmt::format("control block of '{}' names another master", p.name));
  return seg;
}


std::string stage_text(const slot_snapshot& w, const control_header& h) {
  if (stage_name(h, w.stage).empty() || w.unit >= h.unit_count.load()) return "-";
  return fmt::format("{}/{}", unit_name(h, w.unit), stage_name(h, w.stage));
}

// "serve" for a serving worker, the unit's name for a dedicated process.
std::string role_text(const slot_snapshot& w, const control_header& h) {
  return w.role == no_unit ? "serve" : std::string(unit_name(h, w.role));
}

bool live(const slot_snapshot& w) {
  return w.pid > 0 && (w.state == worker_state::spawned || w.state == worker_state::starting ||
                       w.state == worker_state::ready || w.state == worker_state::draining);
}

// What `app status` shows, read once from the block.
struct pool_view {
  const control_header& h;
  std::uint64_t now = monotonic_ms();
  std::vector<std::pair<std::uint32_t, slot_snapshot>> workers;  ///< record index, snapshot
  std::uint64_t requests_total = 0;  ///< folded in from dead workers plus the live ones'
  std::uint64_t restarts = 0;
  std::string message;  ///< the last reload's

  pool_view(const control_segment& seg) : h(seg.header()), requests_total(h.requests_total.load()) {
    for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
      auto snap = read_slot(seg.slot(i));
      if (live(snap)) workers.emplace_back(i, snap);
    }
    for (const auto& [index, w] : workers) requests_total += w.requests;
    for (const auto& r : h.restarts) restarts += r.load();
    message = read_reload_message(h);
  }
  std::uint32_t units() const { return std::min<std::uint32_t>(h.unit_count.load(), worker_slot::max_units); }
  double age_s(std::uint64_t since) const { return since ? (now - since) / 1000.0 : 0.0; }
  long long beat_age_ms(const slot_snapshot& w) const {
    return w.heartbeat_ms ? static_cast<long long>(now - w.heartbeat_ms) : -1;
  }
};

// Times in milliseconds with microsecond resolution, as numbers.
double ms_of_us(std::uint64_t us) { return static_cast<double>(us) / 1000.0; }

nlohmann::ordered_json worker_json(const pool_view& v, std::uint32_t index, const slot_snapshot& w) {
  const control_header& h = v.h;
  auto stages = nlohmann::ordered_json::object();
  for (std::uint32_t u = 0; u < v.units(); ++u) {
    auto per = nlohmann::ordered_json::object();
    for (std::uint32_t st = 0; st < max_stages; ++st)
      if (w.stage_us[u][st] && !stage_name(h, st).empty()) per[std::string(stage_name(h, st))] = ms_of_us(w.stage_us[u][st]);
    stages[std::string(unit_name(h, u))] = std::move(per);
  }
  auto name_or_null = [](std::string_view s) { return s.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(s); };
  return {{"slot", slot_of_record(index)},
          {"lane", lane_of_record(index)},
          {"role", role_text(w, h)},
          {"pid", w.pid},
          {"generation", w.generation},
          {"state", to_string(w.state)},
          {"unit", name_or_null(w.unit < h.unit_count.load() ? unit_name(h, w.unit) : "")},
          {"stage", name_or_null(stage_name(h, w.stage))},
          {"uptime_s", v.age_s(w.started_ms)},
          {"requests", w.requests},
          {"in_flight", w.in_flight},
          {"rss_bytes", w.rss_bytes},
          {"errors", w.errors},
          {"heartbeat_age_ms", v.beat_age_ms(w)},
          {"restarts", w.restarts},
          {"healthy", w.unhealthy_unit == no_unit},
          {"unhealthy_unit", name_or_null(w.unhealthy_unit == no_unit ? "" : unit_name(h, w.unhealthy_unit))},
          {"health_reason", name_or_null(w.reason())},
          {"stage_ms", std::move(stages)}};
}

// Only the reasons that happened, so the text line stays short.
nlohmann::ordered_json restarts_by_reason(const control_header& h) {
  auto out = nlohmann::ordered_json::object();
  for (std::size_t r = 0; r < restart_reason_count; ++r)
    if (const auto n = h.restarts[r].load()) out[std::string(to_string(static_cast<restart_reason>(r)))] = n;
  return out;
}

// Strings from the block are bytes another process wrote: invalid UTF-8 is replaced
// (U+FFFD), never passed through into the JSON.
void status_json(const pool_ref& p, const pool_view& v) {
  const control_header& h = v.h;
  auto workers = nlohmann::ordered_json::array();
  for (const auto& [index, w] : v.workers) workers.push_back(worker_json(v, index, w));
  const nlohmann::ordered_json out = {
      {"name", p.name},
      {"master_pid", p.master},
      {"master_state", to_string(h.master_state.load())},
      {"uptime_s", v.age_s(h.master_started_ms.load())},
      {"pool_generation", h.pool_generation.load()},
      {"target_workers", h.target_workers.load()},
      {"requests_total", v.requests_total},
      {"restarts_total", v.restarts},
      {"restarts_by_reason", restarts_by_reason(h)},
      {"reload",
       {{"seq", h.reload_seq.load()},
        {"outcome", to_string(h.reload_outcome.load())},
        {"duration_ms", h.reload_duration_ms.load()},
        {"message", v.message}}},
      {"workers", std::move(workers)}};
  std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
}

void status_text(const pool_ref& p, const pool_view& v) {
  const control_header& h = v.h;
  const auto dedicated = std::count_if(v.workers.begin(), v.workers.end(),
                                       [](const auto& iw) { return iw.second.role != no_unit; });
  std::cout << fmt::format("pool {}  master {} ({})  up {:.0f} s  generation {}  workers {}/{}{}\n", p.name,
                           p.master, to_string(h.master_state.load()), v.age_s(h.master_started_ms.load()),
                           h.pool_generation.load(), v.workers.size() - static_cast<std::size_t>(dedicated),
                           h.target_workers.load(), dedicated ? fmt::format("  dedicated {}", dedicated) : "");
  std::cout << fmt::format("last reload: #{} {} in {} ms{}{}\n", h.reload_seq.load(), to_string(h.reload_outcome.load()),
                           h.reload_duration_ms.load(), v.message.empty() ? "" : ": ", v.message);
  std::string reasons;
  const auto by_reason = restarts_by_reason(h);  // a range-for would not keep it alive
  for (const auto& [reason, n] : by_reason.items())
    reasons += fmt::format("{}{} {}", reasons.empty() ? " (" : ", ", reason, n.get<std::uint64_t>());
  std::cout << fmt::format("requests {} (dead workers included)  restarts {}{}\n\n", v.requests_total, v.restarts,
                           reasons.empty() ? "" : reasons + ")");
  std::cout << fmt::format("{:>4} {:<10} {:>8} {:>4} {:<9} {:<24} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8}\n", "SLOT", "ROLE",
                           "PID", "GEN", "STATE", "STAGE", "UPTIME", "REQUESTS", "INFLIGHT", "RSS", "BEAT AGE", "RESTARTS");
  for (const auto& [index, w] : v.workers)
    std::cout << fmt::format("{:>4} {:<10} {:>8} {:>4} {:<9} {:<24} {:>8.1f}s {:>9} {:>8} {:>7.1f}M {:>8}ms {:>8}\n",
                             slot_of_record(index), role_text(w, h), w.pid, w.generation, to_string(w.state),
                             stage_text(w, h), v.age_s(w.started_ms), w.requests, w.in_flight,
                             static_cast<double>(w.rss_bytes) / (1 << 20), v.beat_age_ms(w), w.restarts);
  for (const auto& [index, w] : v.workers)
    if (w.unhealthy_unit != no_unit)
      std::cout << fmt::format("unhealthy: slot {} pid {}: {}: {}\n", slot_of_record(index), w.pid,
                               unit_name(h, w.unhealthy_unit), w.reason());
  // Blame: the slowest run of each unit's stage among the live workers.
  std::cout << "\nstage timings (slowest live worker):\n";
  for (std::uint32_t u = 0; u < v.units(); ++u)
    for (std::uint32_t st = 0; st < max_stages; ++st) {
      std::uint32_t slowest = 0;
      for (const auto& [index, w] : v.workers) slowest = std::max(slowest, w.stage_us[u][st]);
      if (slowest && !stage_name(h, st).empty())
        std::cout << fmt::format("  {:>9.1f} ms  {} {}\n", slowest / 1000.0, stage_name(h, st), unit_name(h, u));
    }
}

int status(const pool_ref& p, bool json) {
  auto seg = attach_checked(p, access::read_only);
  const pool_view view(seg);
  if (json)
    status_json(p, view);
  else
    status_text(p, view);
  return 0;
}

template <class Pred>
bool poll_until(Pred done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Gone, or a zombie waiting for its parent to reap it: either way it has stopped.
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  // read(), not ifstream: a process that exits meanwhile makes read() fail with ESRCH,
  // which libstdc++'s filebuf throws as an exception.
  std::string text;
  if (const int fd = ::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    char buf[1024];
    const auto n = ::read(fd, buf, sizeof buf);
    if (n > 0) text.assign(buf, static_cast<std::size_t>(n));
    ::close(fd);
  }
  if (text.empty()) return true;  // gone while we looked
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

int reload(const pool_ref& p, const control_command& cmd) {
  auto seg = attach_checked(p, access::read_only);
  const control_header& h = seg.header();
  const auto before = h.reload_seq.load();
  if (::kill(p.master, SIGHUP) != 0) throw control_failure(fmt::format("cannot signal master {}", p.master));
  if (!cmd.wait) return 0;
  const bool tty = ::isatty(STDERR_FILENO);
  std::string last;
  std::string gave_up;  // the master died or began stopping: no outcome will come
  const bool ended = poll_until([&] {
    const bool done = h.reload_seq.load() > before && h.reload_outcome.load() != reload_outcome::in_progress;
    if (!done && process_gone(p.master)) gave_up = fmt::format("master {} is gone", p.master);
    const auto state = h.master_state.load();
    if (!done && (state == master_state::draining || state == master_state::stopped))
      gave_up = fmt::format("master {} is stopping", p.master);
    if (!gave_up.empty()) return true;
    if (tty && !done) {
      std::uint32_t switched = 0;
      const auto gen = h.pool_generation.load();
      for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
        auto w = read_slot(seg.slot(i));
        if (w.state == worker_state::ready && w.generation == gen) ++switched;
      }
      auto line = fmt::format("\rreload: {} of {} workers on generation {}", switched, h.target_workers.load(), gen);
      if (line != last) std::cerr << line << std::flush, last = line;
    }
    return done;
  }, cmd.timeout);
  if (tty) std::cerr << "\n";
  if (!gave_up.empty()) {
    std::cerr << cmd.program << ": reload did not finish: " << gave_up << "\n";
    return 1;
  }
  if (!ended) {
    std::cerr << cmd.program << ": reload did not finish within " << cmd.timeout.count() / 1000.0 << " s\n";
    return 1;
  }
  const auto outcome = h.reload_outcome.load();
  const auto message = read_reload_message(h);
  if (outcome == reload_outcome::succeeded) {
    std::cout << fmt::format("reload succeeded in {} ms: {}\n", h.reload_duration_ms.load(), message);
    return 0;
  }
  std::cerr << fmt::format("{}: reload {}: {}\n", cmd.program, to_string(outcome), message);
  return 1;
}

int stop(const pool_ref& p, const control_command& cmd) {
  { attach_checked(p, access::read_only); }  // verify it is our pool before signalling
  if (::kill(p.master, cmd.fast ? SIGINT : SIGTERM) != 0)
    throw control_failure(fmt::format("cannot signal master {}", p.master));
  if (!poll_until([&] { return process_gone(p.master); }, cmd.timeout)) {
    std::cerr << cmd.program << ": master " << p.master << " still running after "
              << cmd.timeout.count() / 1000.0 << " s\n";
    return 1;
  }
  return 0;
}

int scale(const pool_ref& p, const control_command& cmd) {
  auto seg = attach_checked(p, access::read_write);
  control_header& h = seg.header();
  // Two records per worker slot: the pool was sized for at most half the records.
  const auto ceiling = seg.slot_count() / lanes_per_slot;
  if (static_cast<std::uint32_t>(cmd.workers) > ceiling)
    throw control_failure(fmt::format("scale {}: this pool can run at most {} workers (sized at start from --workers)",
                                      cmd.workers, ceiling));
  h.scale_request.store(static_cast<std::uint32_t>(cmd.workers));
  if (::kill(p.master, SIGTTIN) != 0) throw control_failure(fmt::format("cannot signal master {}", p.master));
  if (!poll_until([&] { return h.target_workers.load() == static_cast<std::uint32_t>(cmd.workers); }, cmd.timeout)) {
    std::cerr << cmd.program << ": the master did not take the new worker count\n";
    return 1;
  }
  std::cout << fmt::format("scaling to {} workers\n", cmd.workers);
  return 0;
}

}  // namespace

int run_control(const control_command& cmd) {
  try {
    const auto pool = locate(cmd);
    switch (cmd.kind) {
      case control_kind::status: return status(pool, cmd.json);
      case control_kind::reload: return reload(pool, cmd);
      case control_kind::stop: return stop(pool, cmd);
      case control_kind::scale: return scale(pool, cmd);
    }
  } catch (const std::exception& e) {
    std::cerr << cmd.program << ": error: " << e.what() << "\n";
  }
  return to_int(exit_code::failure);
}

}  // namespace systempp::master
