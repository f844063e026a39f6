#include "systempp/master/reload_report.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace systempp::master {

void reload_report::begun() {
  header_.reload_seq.fetch_add(1);
  header_.reload_started_ms.store(monotonic_ms());
  header_.reload_outcome.store(reload_outcome::in_progress);
  header_.master_state.store(master_state::reloading);
}

void reload_report::rolling(std::string_view why, std::uint32_t generation, int workers) {
  notify_.reloading(fmt::format("{}: rolling to generation {}", why, generation));
  header_.pool_generation.store(generation);
  log_->info("{}: rolling {} worker(s) to generation {}", why, workers, generation);
}

void reload_report::ended(const reload_done_action& done, bool stopping) {
  const auto took = monotonic_ms() - header_.reload_started_ms.load();
  header_.reload_duration_ms.store(took);
  write_reload_message(header_, done.message);
  if (done.generation != 0) header_.pool_generation.store(done.generation);
  switch (done.result) {
    case reload_result::succeeded: header_.reload_outcome.store(reload_outcome::succeeded); break;
    case reload_result::failed: header_.reload_outcome.store(reload_outcome::failed); break;
    case reload_result::rejected: header_.reload_outcome.store(reload_outcome::rejected); break;
  }
  // A coalesced SIGHUP starts the next reload at once: stay "reloading" until then.
  if (!stopping && !done.next_queued) header_.master_state.store(master_state::running);
  switch (done.result) {
    case reload_result::succeeded: log_->info("reload done in {} ms: {}", took, done.message); break;
    case reload_result::failed: log_->error("reload failed: {}", done.message); break;
    case reload_result::rejected:
      log_->error("reload rejected: {}; the workers keep running", done.message);
      notify_.reloading("reloading");
      break;
  }
  if (stopping) return;
  switch (done.result) {
    case reload_result::succeeded: notify_.ready(fmt::format("reload succeeded: {}", done.message)); break;
    case reload_result::failed: notify_.ready(fmt::format("reload failed: {}; still serving", done.message)); break;
    case reload_result::rejected: notify_.ready("reload rejected: " + done.message); break;
  }
}

}  // namespace systempp::master
