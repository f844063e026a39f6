#include "systempp/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "systempp/errors.hpp"
#include "systempp/options.hpp"

namespace systempp {

namespace {

template <class T>
std::optional<T> number(std::string_view text) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// The reentrant look-ups with a buffer that grows until the entry fits.
template <class Entry, class Key, class Lookup>
std::optional<Entry> look_up(Key key, Lookup lookup, std::string& buffer) {
  buffer.resize(1024);
  for (;;) {
    Entry entry{};
    Entry* found = nullptr;
    const int err = lookup(key, &entry, buffer.data(), buffer.size(), &found);
    if (err == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (err != 0 || found == nullptr) return std::nullopt;
    return entry;
  }
}

}  // namespace

user_identity resolve_user(const std::string& spec) {
  const auto colon = spec.find(':');
  const std::string user = spec.substr(0, colon);
  if (user.empty()) throw std::invalid_argument("expected USER or USER:GROUP");
  std::string buffer;
  auto pw = look_up<passwd>(user.c_str(), ::getpwnam_r, buffer);
  const auto uid = number<uid_t>(user);
  if (!pw && uid) pw = look_up<passwd>(*uid, ::getpwuid_r, buffer);
  user_identity who;
  if (pw) {
    who.user = pw->pw_name;
    who.uid = pw->pw_uid;
    who.gid = pw->pw_gid;
  } else if (uid) {
    // A number with no entry (common in containers): that uid, and the same number for the
    // group unless one is given; no supplementary groups.
    who.user = user;
    who.uid = who.gid = *uid;
  } else {
    throw std::invalid_argument(fmt::format("no user '{}' on this machine", user));
  }

  std::string group_buffer;
  std::optional<group> gr;
  if (colon != std::string::npos) {
    const std::string name = spec.substr(colon + 1);
    gr = look_up<group>(name.c_str(), ::getgrnam_r, group_buffer);
    const auto gid = number<gid_t>(name);
    if (!gr && gid) gr = look_up<group>(*gid, ::getgrgid_r, group_buffer);
    if (!gr && !gid) throw std::invalid_argument(fmt::format("no group '{}' on this machine", name));
    who.gid = gr ? gr->gr_gid : *gid;  // a number with no entry is taken as it is
  } else {
    gr = look_up<group>(who.gid, ::getgrgid_r, group_buffer);
  }
  who.group = gr ? std::string(gr->gr_name) : std::to_string(who.gid);

  // The user's groups in the group database, the primary one included, as initgroups
  // would set them; only the group for a user the database does not know.
  if (!pw) {
    who.groups = {who.gid};
    return who;
  }
  int count = 32;
  for (int tries = 0; tries < 8; ++tries) {
    who.groups.resize(static_cast<std::size_t>(count));
    if (::getgrouplist(who.user.c_str(), who.gid, who.groups.data(), &count) >= 0) {
      who.groups.resize(static_cast<std::size_t>(count));
      return who;
    }
  }
  throw std::invalid_argument(fmt::format("cannot list the groups of user '{}'", who.user));
}

std::string run_as_problem(const options& opts) {
  const uid_t me = ::geteuid();
  if (opts.drop_master && !opts.run_as) return "--drop-master: needs --user, the user the master switches to";
  if (opts.run_as && opts.run_as->uid != me && me != 0)
    return fmt::format("--user: switching to user {} needs root; this process runs as uid {}", opts.run_as->user, me);
  if (opts.run_as && opts.run_as->gid != ::getegid() && me != 0)
    return fmt::format("--user: switching to group {} needs root; this process runs as gid {}", opts.run_as->group,
                       ::getegid());
  if (opts.allow_root) return {};
  if (opts.run_as && opts.run_as->uid == 0)
    return "--user: the workers would run as root; add --allow-root if that is what you want";
  if (!opts.run_as && me == 0)
    return "--user: running as root, the workers would serve as root: give --user USER[:GROUP] to run them "
           "as that user, or --allow-root";
  return {};
}

uid_t pool_owner(const options& opts) noexcept {
  return opts.run_as && ::geteuid() == 0 ? opts.run_as->uid : ::geteuid();
}

void give_to_pool_owner(int fd, const options& opts, const std::string& what) {
  const uid_t owner = pool_owner(opts);
  if (owner == ::geteuid()) return;
  if (::fchown(fd, owner, static_cast<gid_t>(-1)) != 0)
    throw config_error(fmt::format("--user {}: cannot give {} to it: {}", opts.run_as->user, what, std::strerror(errno)));
}

void switch_user(const user_identity& who) {
  if (::geteuid() == who.uid && ::getuid() == who.uid && ::getegid() == who.gid && ::getgid() == who.gid) return;
  const auto fail = [&](const char* call) {
    throw std::system_error(errno, std::generic_category(), fmt::format("--user {}: {}", who.user, call));
  };
  if (::setgroups(who.groups.size(), who.groups.data()) != 0) fail("setgroups");
  if (::setresgid(who.gid, who.gid, who.gid) != 0) fail("setresgid");
  if (::setresuid(who.uid, who.uid, who.uid) != 0) fail("setresuid");
  if (who.uid != 0 && (::setuid(0) == 0 || ::seteuid(0) == 0)) {
    errno = EPERM;
    fail("root could be had back after setresuid");
  }
  // The kernel leaves the process undumpable now, and it stays so (nginx makes its workers
  // dumpable again): a fork-mode worker holds what root read in on_init (keys, secrets),
  // which every other process of a shared user such as nobody could then read by ptrace.
}

}  // namespace systempp
