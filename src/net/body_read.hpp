// Reading the body of an HTTP message in large reads, for the client (http.cpp) and the
// server (http_server.cpp).
//
// Why: Beast reads at most what the buffer has room for, and the parser empties the buffer
// after every read, so a buffer left at its header-sized capacity takes a large body 512 bytes
// per recvmsg: 1,500 system calls, each re-arming the stream's timer, for a 768 KiB tensor.
#pragma once

#include <cstddef>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

namespace cairn::net::detail {

inline constexpr std::size_t kBodyReadChunk = 64 * 1024;

// After `parser` has read a header from `stream` into `buffer`: reads the rest of the message.
// A body longer than the room left in the buffer is read through kBodyReadChunk bytes of it,
// released afterwards (what a pipelined message left stays), so a kept connection holds no more
// than its header buffer between messages.
template <class Stream, class Parser>
boost::asio::awaitable<void> read_rest(Stream& stream, boost::beast::flat_buffer& buffer,
                                       Parser& parser, boost::system::error_code& ec) {
  if (parser.is_done()) co_return;
  const auto length = parser.content_length();
  const bool large = !length || *length > buffer.capacity() - buffer.size();
  if (large) buffer.reserve(kBodyReadChunk);
  co_await boost::beast::http::async_read(
      stream, buffer, parser, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  if (large) buffer.shrink_to_fit();
}

}  // namespace cairn::net::detail
