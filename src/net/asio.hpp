// The one place that includes Boost.Asio. Boost 1.74's awaitable.hpp uses std::exchange
// without including <utility>; including it first keeps every translation unit compiling.
#pragma once

#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

namespace cairn {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;
}  // namespace cairn

namespace cairn::net {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;
}  // namespace cairn::net
