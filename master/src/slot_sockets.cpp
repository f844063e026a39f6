#include "systempp/master/slot_sockets.hpp"

#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cerrno>
#include <algorithm>
#include <stdexcept>
#include <system_error>

#include <spdlog/spdlog.h>

namespace systempp::master {

namespace {

bool shares_port(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == 0 && on;
}

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// One more member of `l`'s group: a socket bound to the very address `l` listens on.
unique_fd join_group(const listener& l) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) fail("getsockname");
  unique_fd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) fail("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) fail("SO_REUSEPORT");
  // As the listener has them: a dual-stack socket (systemd's `[::]:8080`) only shares its
  // group with dual-stack ones, and accepted sockets inherit TCP_NODELAY (NoDelay=yes).
  auto copy = [&](int level, int name) {
    int value = 0;
    socklen_t size = sizeof value;
    if (::getsockopt(l.fd.get(), level, name, &value, &size) == 0) ::setsockopt(fd.get(), level, name, &value, size);
  };
  if (addr.ss_family == AF_INET6) copy(IPPROTO_IPV6, IPV6_V6ONLY);
  copy(IPPROTO_TCP, TCP_NODELAY);
  copy(IPPROTO_TCP, TCP_DEFER_ACCEPT);  // systemd's DeferAcceptSec=, or the HTTP unit's
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) fail("bind a slot's socket");
  if (::listen(fd.get(), SOMAXCONN) != 0) fail("listen");
  return fd;
}

}  // namespace

void slot_sockets::enable(const std::vector<listener>& listeners, spdlog::logger& log) {
  for (const auto& l : listeners) {
    if (!shares_port(l.fd.get())) {
      log.warn("--accept reuseport: listener {} ({}) was not bound with SO_REUSEPORT (systemd: ReusePort=yes); "
               "every worker accepts on it as with --accept shared", l.name, l.endpoint());
      return;
    }
    // The kernel lets a socket join a group only if its owner made the group's first one
    // (systemd's sockets are root's; a service runs as its User=).
    struct stat st {};
    if (::fstat(l.fd.get(), &st) == 0 && st.st_uid != ::geteuid()) {
      log.warn("--accept reuseport: listener {} ({}) belongs to uid {}, not to this process's {}: its port "
               "cannot take a socket per slot; every worker accepts on it as with --accept shared",
               l.name, l.endpoint(), st.st_uid, ::geteuid());
      return;
    }
  }
  enabled_ = true;
  extra_.resize(listeners.size());
}

void slot_sockets::adopt(std::size_t index, std::vector<unique_fd> sockets) {
  if (extra_.size() <= index) extra_.resize(index + 1);
  extra_[index] = std::move(sockets);
}

void slot_sockets::grow(const std::vector<listener>& listeners, int slots) {
  if (!enabled()) return;
  for (std::size_t i = 0; i < listeners.size(); ++i)
    while (static_cast<int>(extra_[i].size()) + 1 < slots) extra_[i].push_back(join_group(listeners[i]));
}

namespace {

// The program: A = a random number; A = A % n; then the n-th of `slots` (the index of a
// socket in the group is its slot: grow adds them in slot order, none leaves while the pool
// runs). Slots 0..n-1 need no table: A is the index.
std::vector<sock_filter> steering_program(const std::vector<int>& slots) {
  const auto n = static_cast<__u32>(slots.size());
  std::vector<sock_filter> code{
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<__u32>(SKF_AD_OFF + SKF_AD_RANDOM)),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
  };
  if (slots.back() + 1 != static_cast<int>(n)) {
    for (__u32 i = 0; i + 1 < n; ++i) {
      code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, i, 0, 1));
      code.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<__u32>(slots[i])));
    }
    code.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<__u32>(slots.back())));
  }
  code.push_back(BPF_STMT(BPF_RET | BPF_A, 0));
  if (code.size() > BPF_MAXINSNS) throw std::length_error("too many slots to steer to one by one");
  return code;
}

std::vector<int> first(int n) {
  std::vector<int> out(static_cast<std::size_t>(std::max(n, 0)));
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i;
  return out;
}

}  // namespace

std::vector<int> slot_sockets::all_of(int slots) { return first(slots); }

void slot_sockets::steer(const std::vector<listener>& listeners, const std::vector<int>& slots) {
  if (!enabled() || slots.empty() || slots == steered_) return;
  grow(listeners, slots.back() + 1);
  auto code = steering_program(slots);
  sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
  for (const auto& l : listeners)
    if (::setsockopt(l.fd.get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0)
      fail("SO_ATTACH_REUSEPORT_CBPF");
  steered_ = slots;
}

std::vector<listener> slot_sockets::for_slot(const std::vector<listener>& listeners, int slot) const {
  std::vector<listener> out;
  if (!enabled()) return out;
  for (std::size_t i = 0; i < listeners.size(); ++i) {
    const listener& shared = listeners[i];
    const auto k = static_cast<std::size_t>(slot);
    const int fd = k >= 1 && k <= extra_[i].size() ? extra_[i][k - 1].get() : shared.fd.get();
    listener l;
    l.name = shared.name;
    l.address = shared.address;
    l.port = shared.port;
    l.family = shared.family;
    l.fd = unique_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!l.fd) fail("dup a slot's socket");
    out.push_back(std::move(l));
  }
  return out;
}

void slot_sockets::disable() noexcept {
  enabled_ = false;
  extra_.clear();
  steered_.clear();
}

void slot_sockets::close_copies() const {
  std::vector<int> fds;
  for (const auto& sockets : extra_)
    for (const auto& fd : sockets) fds.push_back(fd.get());
  close_all(fds);
}

void slot_sockets::retire(const std::vector<listener>& listeners, bool shut_down) {
  // Every connection from now on to slot 0's socket, the listener: systemd's keeps them in
  // its backlog for the next start; a bound one is shut down just after.
  if (enabled()) try {
      steer(listeners, {0});
    } catch (const std::exception&) {
      // the sockets close below all the same
    }
  for (auto& sockets : extra_) {
    if (shut_down)
      for (const auto& fd : sockets) ::shutdown(fd.get(), SHUT_RD);
    sockets.clear();
  }
}

}  // namespace systempp::master
