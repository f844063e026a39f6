#include "systempp/master/pool_setup.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "systempp/errors.hpp"
#include "systempp/master/systemd.hpp"

namespace systempp::master {

namespace {

// Atomically (temp file, then rename), so a reader never sees half a pid.
void write_pidfile(const std::string& path, pid_t pid) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << "\n";
    if (!out) throw config_error(fmt::format("--pidfile: cannot write {}", path));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw config_error(fmt::format("--pidfile: cannot write {}", path));
}

}  // namespace

void remove_pidfile(const std::string& path, pid_t pid) {
  if (path.empty()) return;
  std::ifstream in(path);
  pid_t written = 0;
  if (in >> written && written == pid) std::remove(path.c_str());
}

pool_setup open_pool(const options& opts, const std::optional<handover>& h, const std::vector<std::string>& units,
                     spdlog::logger& log) {
  pool_setup out;
  // Resolved once: a binary renamed over this path later is what exec mode and upgrades run.
  std::error_code ec;
  out.exec_path = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) out.exec_path = opts.program;
  if (opts.mode == reload_mode::exec) log.info("exec mode: workers run {}", out.exec_path);
  if (h) {
    for (const auto& l : h->listeners) out.listeners.push_back(adopt_listener(unique_fd(l.fd), l.name));
    out.segment.emplace(control_segment::attach_fd(h->control_fd, access::read_write));
    ::close(h->control_fd);
    out.segment->adopt();  // this image now removes it at exit
    out.max_workers = static_cast<int>(out.segment->slot_count()) / lanes_per_slot;
    return out;
  }
  if (auto other = find_live_master(opts.name))
    throw config_error(fmt::format("--name {}: a pool with this name is already running (master pid {})",
                                   opts.name, *other));
  if (auto n = remove_stale_segments(opts.name); n > 0)
    log.warn("removed {} stale control block(s) of pool '{}'", n, opts.name);
  out.listeners = activated_listeners();
  if (out.listeners.empty())
    out.listeners = bind_listeners(opts.binds);
  else
    log.info("socket activation: {} listener(s) from systemd; --bind is ignored", out.listeners.size());
  out.max_workers = std::min(max_pool_workers, std::max(16, opts.workers * 2));
  out.segment.emplace(control_segment::create(opts.name, ::getpid(),
                                              static_cast<std::uint32_t>(out.max_workers * lanes_per_slot), units));
  if (!opts.pidfile.empty()) write_pidfile(opts.pidfile, ::getpid());
  control_header& hdr = out.segment->header();
  hdr.master_state.store(master_state::starting);
  hdr.pool_generation.store(1);
  hdr.target_workers.store(static_cast<std::uint32_t>(opts.workers));
  hdr.master_started_ms.store(monotonic_ms());
  return out;
}

policy_config policy_config_for(const options& opts, int workers, int max_workers) {
  policy_config cfg;
  cfg.workers = workers;
  cfg.max_workers = max_workers;
  cfg.surge = opts.reload_surge;
  cfg.ready_timeout = opts.ready_timeout;
  cfg.heartbeat_timeout = opts.heartbeat_timeout;
  cfg.graceful_timeout = opts.graceful_timeout;
  cfg.abort_grace = std::min(ms(5'000), opts.heartbeat_timeout);
  cfg.backoff_max = opts.restart_backoff_max;
  cfg.backoff_initial = std::min(cfg.backoff_initial, cfg.backoff_max);
  return cfg;
}

}  // namespace systempp::master
