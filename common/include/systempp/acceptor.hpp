#pragma once
/// Asio acceptors over the listeners the runtime bound. Header-only and left out of
/// systempp.hpp on purpose: only the translation units that accept connections include
/// it, so Asio's ip::tcp is compiled where it is used and nowhere else.

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"

namespace systempp {

/// An acceptor that owns `fd`, a listening socket of `family` (AF_INET or AF_INET6, as in
/// listener::family). For a socket only this acceptor uses, e.g. the master's --metrics
/// endpoint. Any process, on the thread that owns `io`.
inline boost::asio::ip::tcp::acceptor make_acceptor(boost::asio::io_context& io, unique_fd fd,
                                                    int family) {
  using tcp = boost::asio::ip::tcp;
  tcp::acceptor acceptor(io);
  acceptor.assign(family == AF_INET6 ? tcp::v6() : tcp::v4(), fd.get());
  fd.release();  // only once assign succeeded: a throw above still closes the fd
  return acceptor;
}

/// An acceptor on a close-on-exec duplicate of `l`'s socket: closing it (at drain) leaves
/// `l` open, so the master keeps accepting for the other workers and no queued connection
/// is lost. Throws std::system_error when the fd cannot be duplicated. Workers and the
/// inline process, on the thread that owns `io` (typically in on_startup).
inline boost::asio::ip::tcp::acceptor make_acceptor(boost::asio::io_context& io,
                                                    const listener& l) {
  unique_fd copy(::fcntl(l.fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy) throw std::system_error(errno, std::generic_category(), "dup listener");
  return make_acceptor(io, std::move(copy), l.family);
}

}  // namespace systempp
