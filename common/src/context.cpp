#include "systempp/context.hpp"

#include <cxxabi.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include "systempp/control_block.hpp"
#include "systempp/errors.hpp"
#include "systempp/log.hpp"
#include "systempp/unit.hpp"

namespace systempp {

namespace detail {
struct health_board {
  std::mutex mutex;  ///< set_unhealthy may come from any thread
  std::vector<std::optional<std::string>> reasons;  ///< per unit, in the context's order
};
}  // namespace detail

std::string_view to_string(process_role r) noexcept {
  switch (r) {
    case process_role::master: return "master";
    case process_role::worker: return "worker";
    case process_role::inline_process: return "inline";
    case process_role::script: return "script";
  }
  return "?";
}

context::context(process_role role, const options& opts, std::shared_ptr<spdlog::logger> log,
                 boost::asio::io_context& io, const std::vector<listener>& listeners,
                 std::span<const detail::unit_ref> units)
    : role_(role),
      pid_(::getpid()),
      opts_(&opts),
      log_(std::move(log)),
      io_(&io),
      listeners_(&listeners),
      units_(units),
      executor_(boost::asio::make_strand(io)),
      health_(std::make_shared<detail::health_board>()) {
  health_->reasons.resize(units.size());
}

health_report context::health() const {
  std::lock_guard lock(health_->mutex);
  for (std::size_t i = 0; i < health_->reasons.size(); ++i)
    if (health_->reasons[i]) return {false, units_[i].name, *health_->reasons[i]};
  return {};
}

void context::report_health(const std::string& unit, bool healthy, std::string_view reason) {
  std::lock_guard lock(health_->mutex);
  auto& reasons = health_->reasons;
  for (std::size_t i = 0; i < reasons.size(); ++i) {
    if (units_[i].name != unit) continue;
    if (healthy)
      reasons[i].reset();
    else
      reasons[i] = std::string(reason);
  }
  if (!slot_record_) return;
  // The block shows the first unhealthy unit (indexes match the block's unit names). The
  // record has one writer, the runtime's strand: the write goes there (at once when this
  // is the strand).
  std::uint32_t first = no_unit;
  std::string why;
  for (std::size_t i = 0; i < reasons.size() && first == no_unit; ++i)
    if (reasons[i]) first = static_cast<std::uint32_t>(i), why = *reasons[i];
  boost::asio::dispatch(executor_, [record = slot_record_, first, why = std::move(why)] { write_health(*record, first, why); });
}

namespace {

// One line, bounded: what travels on a worker's channel and shows in status.
std::string clean_reason(std::string_view reason) {
  std::string out(reason.substr(0, 200));
  for (char& c : out)
    if (c == '\n' || c == '\r' || c == '\0') c = ' ';
  return out.empty() ? std::string("no reason given") : out;
}

}  // namespace

void context::request_reload(std::string_view reason) const {
  if (requester_) return requester_(control_request::reload, clean_reason(reason));
  log().warn("request_reload ({}): nothing to reload in a {}", clean_reason(reason), to_string(role_));
}

void context::request_stop(std::string_view reason) const {
  if (requester_) return requester_(control_request::stop, clean_reason(reason));
  log().warn("request_stop ({}): nothing to stop in a {}", clean_reason(reason), to_string(role_));
}

std::shared_ptr<spdlog::logger> context::reopen_log() {
  auto current = log_.load();
  try {
    set_logger(make_logger(current->name(), *opts_));
    log().info("SIGUSR1: log reopened");
  } catch (const config_error& e) {
    current->error("SIGUSR1: {}; logging on with the old file", e.what());
  }
  return log_.load();
}

void context::set_logger(std::shared_ptr<spdlog::logger> log) {
  // The logger replaced now stays until the next replacement: a reference another thread
  // took from log() just before stays valid, and a SIGUSR1 frees the file of the one
  // before (a logrotate cycle apart), so rotated files do not stay open.
  retired_log_ = log_.exchange(std::move(log));
}

void context::set_io(boost::asio::io_context& io) {
  io_ = &io;
  executor_ = boost::asio::make_strand(io);
  tasks_.reset();
}

void context::set_process(process_role role, int slot, std::uint64_t generation,
                          pid_t pid) noexcept {
  role_ = role;
  slot_ = slot;
  generation_ = generation;
  pid_ = pid;
}

void context::request_begin() const noexcept {
  if (!slot_record_) return;
  slot_record_->in_flight.fetch_add(1, std::memory_order_relaxed);
}

void context::request_end(bool failed) const noexcept {
  if (!slot_record_) return;
  slot_record_->requests.fetch_add(1, std::memory_order_relaxed);
  if (failed) slot_record_->errors.fetch_add(1, std::memory_order_relaxed);
  // Released last: whoever sees the request leave in_flight also sees it counted.
  slot_record_->in_flight.fetch_sub(1, std::memory_order_release);
}

const listener& context::listener_named(std::string_view name) const {
  for (const auto& l : *listeners_)
    if (l.name == name) return l;
  throw std::out_of_range("no listener named '" + std::string(name) + "'");
}

std::uint64_t context::set_connection_taker(const std::string& listener, connection_taker t) {
  takers_[listener] = {++next_taker_, std::move(t)};
  return next_taker_;
}

void context::drop_connection_taker(const std::string& listener, std::uint64_t token) noexcept {
  if (auto it = takers_.find(listener); it != takers_.end() && it->second.first == token) takers_.erase(it);
}

bool context::take_connection(const std::string& listener, unique_fd fd) {
  auto it = takers_.find(listener);
  if (it == takers_.end()) return false;
  auto take = it->second.second;  // it may replace itself
  take(std::move(fd));
  return true;
}

void* context::find_unit(std::type_index type) const {
  for (const auto& u : units_)
    if (u.type == type) return u.object;
  throw std::out_of_range("unit not part of this app");
}

namespace detail {

std::string short_type_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  std::string name = status == 0 && demangled ? demangled.get() : type.name();
  if (auto lt = name.find('<'); lt != std::string::npos) name.erase(lt);
  if (auto colon = name.rfind("::"); colon != std::string::npos) name.erase(0, colon + 2);
  return name;
}

}  // namespace detail
}  // namespace systempp
