#include "core/files.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/crypto.hpp"
#include <fcntl.h>
#include <unistd.h>

namespace cairn {

namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

Result<std::string> read_file(const std::string& path, std::size_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(errno == ENOENT ? errc::not_found : errc::io_error,
                      "cannot open " + path + ": " + errno_text());
  }
  std::string out;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto e = make_error(errc::io_error, "cannot read " + path + ": " + errno_text());
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_size) {
      ::close(fd);
      return make_error(errc::limit_exceeded,
                        path + " is larger than " + std::to_string(max_size) + " bytes");
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

Status write_file_atomic(const std::string& path, std::string_view data, bool sync) {
  fs::path target(path);
  std::string tmp =
      (target.parent_path() / ("." + target.filename().string() + ".tmp-" +
                               crypto::sha256_hex(crypto::random_bytes(8)).substr(0, 12)))
          .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return make_error(errc::io_error, "cannot create " + tmp + ": " + errno_text());
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto e = make_error(errc::io_error, "cannot write " + tmp + ": " + errno_text());
      ::close(fd);
      ::unlink(tmp.c_str());
      return e;
    }
    done += static_cast<std::size_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    auto e = make_error(errc::io_error, "cannot fsync " + tmp + ": " + errno_text());
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return make_error(errc::io_error, "cannot close " + tmp + ": " + errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto e =
        make_error(errc::io_error, "cannot rename " + tmp + " to " + path + ": " + errno_text());
    ::unlink(tmp.c_str());
    return e;
  }
  if (sync) {
    std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      int rc = ::fsync(dfd);
      ::close(dfd);
      if (rc != 0) return make_error(errc::io_error, "cannot fsync " + dir + ": " + errno_text());
    }
  }
  return {};
}

Status make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create directory " + path + ": " + ec.message());
  return {};
}

}  // namespace cairn
