#include "systempp/listeners.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "systempp/errors.hpp"

namespace systempp {

std::string listener::endpoint() const {
  return family == AF_INET6 ? fmt::format("[{}]:{}", address, port)
                            : fmt::format("{}:{}", address, port);
}

namespace {

std::string numeric_host(const sockaddr* sa, socklen_t len, std::uint16_t& port) {
  char host[NI_MAXHOST] = {};
  char serv[NI_MAXSERV] = {};
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  port = static_cast<std::uint16_t>(std::atoi(serv));
  return host;
}

}  // namespace

std::vector<listener> bind_listeners(const std::vector<bind_spec>& specs, bool reuse_port) {
  std::vector<listener> out;
  for (const auto& spec : specs) {
    const std::string where = fmt::format("--bind {}:{}", spec.host, spec.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(spec.port);
    if (int rc = ::getaddrinfo(spec.host.c_str(), port.c_str(), &hints, &found); rc != 0)
      throw config_error(fmt::format("{}: cannot resolve host: {}", where, ::gai_strerror(rc)));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, ::freeaddrinfo);

    // The first address of the host name; binding every address of a name is left to
    // repeated --bind options.
    const addrinfo* ai = found;
    // Close-on-exec: exec-mode spawning clears it explicitly on the fds it hands over.
    unique_fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                          ai->ai_protocol));
    if (const int err = errno; !fd) throw_start_error(fmt::format("{}: socket: {}", where, std::strerror(err)), err);
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      const int err = errno;
      std::string hint;
      if (err == EACCES) hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
      throw_start_error(fmt::format("{}: bind: {}{}", where, std::strerror(err), hint), err);
    }
    // SO_REUSEPORT only after the bind, before listen: bound without it, the socket still
    // conflicts with anything listening on the port (a second pool on it fails here as
    // without reuseport), and listen puts it in a group the master's slot sockets join.
    if (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      const int err = errno;
      throw_start_error(fmt::format("{}: SO_REUSEPORT: {}", where, std::strerror(err)), err);
    }
    if (::listen(fd.get(), SOMAXCONN) != 0) {
      const int err = errno;
      throw_start_error(fmt::format("{}: listen: {}", where, std::strerror(err)), err);
    }

    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    listener l;
    l.name = spec.name;
    l.family = ai->ai_family;
    l.address = numeric_host(reinterpret_cast<sockaddr*>(&bound), len, l.port);
    l.fd = std::move(fd);
    out.push_back(std::move(l));
  }
  return out;
}

listener adopt_listener(unique_fd fd, std::string name) {
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0)
    throw std::runtime_error(fmt::format("inherited listener fd {} is not a socket", fd.get()));
  listener l;
  l.name = std::move(name);
  l.family = bound.ss_family;
  l.address = numeric_host(reinterpret_cast<sockaddr*>(&bound), len, l.port);
  l.fd = std::move(fd);
  return l;
}

}  // namespace systempp
