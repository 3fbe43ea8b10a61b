// The compiled part of Boost.Asio (with its SSL support) and Boost.Beast, built once here.
// cairn_net defines BOOST_ASIO_SEPARATE_COMPILATION and BOOST_BEAST_SEPARATE_COMPILATION for
// everything that links it, so no other translation unit compiles these bodies again: every
// file that includes net/asio.hpp saves their parse and, in the sanitizer build, their
// instrumentation.
#include <utility>  // Boost 1.74's Asio uses std::exchange without including <utility>.

#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
