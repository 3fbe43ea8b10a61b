// Reading the body of an HTTP message, for the client (http.cpp) and the server
// (http_server.cpp).
//
// Why not Beast's reader alone: Beast reads into the connection's buffer and copies each piece
// into the body, and reads at most what that buffer has room for, so a buffer left at its
// header-sized capacity takes a large body 512 bytes per recvmsg (1,500 system calls, each
// re-arming the stream's timer, for a 768 KiB tensor). A body whose Content-Length is known is
// therefore read from the socket straight into the body string: one copy, in as few reads as
// the socket allows. Other bodies (chunked, or ending with the connection) go through Beast,
// 64 KiB per read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

namespace cairn::net::detail {

inline constexpr std::size_t kBodyReadChunk = 64 * 1024;

// After `parser` (a parser of a string_body message) has read a header from `stream` into
// `buffer`: reads the rest of the message into parser.get().body(). What a pipelined message
// left in `buffer` beyond this body stays there. A body Beast reads goes through kBodyReadChunk
// bytes of the buffer, released afterwards, so a kept connection holds no more than its header
// buffer between messages. The parser's limits hold either way: Beast refuses a Content-Length
// over body_limit with the header.
template <class Stream, class Parser>
boost::asio::awaitable<void> read_rest(Stream& stream, boost::beast::flat_buffer& buffer,
                                       Parser& parser, boost::system::error_code& ec) {
  if (parser.is_done()) co_return;
  const auto length = parser.content_length();
  if (length && !parser.chunked()) {
    // The parser is left behind: the caller reads the header and this body from parser.get().
    std::string& body = parser.get().body();
    const auto total = static_cast<std::size_t>(*length);
    // Reserved whole but filled (and so committed) as bytes arrive: a client that announces a
    // large body and sends nothing holds address space, not memory.
    body.reserve(total);
    body.resize(std::min(total, buffer.size()));
    boost::asio::buffer_copy(boost::asio::buffer(body), buffer.data());
    buffer.consume(body.size());
    // Each read takes whatever the socket holds, up to the end of the part made room for
    // (asio's default condition stops every read at 64 KiB); the room doubles each time.
    auto whatever_arrived = [](const boost::system::error_code& e, std::size_t) {
      return e ? std::size_t{0} : std::numeric_limits<std::size_t>::max();
    };
    while (body.size() < total) {
      const std::size_t filled = body.size();
      body.resize(std::min(total, std::max(2 * filled, kBodyReadChunk)));
      co_await boost::asio::async_read(
          stream, boost::asio::buffer(body.data() + filled, body.size() - filled), whatever_arrived,
          boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) {
        if (ec == boost::asio::error::eof) ec = boost::beast::http::error::partial_message;
        co_return;
      }
    }
    co_return;
  }
  buffer.reserve(kBodyReadChunk);
  co_await boost::beast::http::async_read(
      stream, buffer, parser, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  buffer.shrink_to_fit();
}

}  // namespace cairn::net::detail
