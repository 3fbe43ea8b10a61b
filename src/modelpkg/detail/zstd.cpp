#include "modelpkg/detail/zstd.hpp"

#include <memory>

#include <zstd.h>

namespace cairn::modelpkg::detail {

namespace {

// The window a frame referring back into `prefix` needs: prefix and data together, between
// zstd's smallest window (2^10) and the largest a decoder accepts by default (2^27).
int window_log_for(std::size_t bytes) {
  int log = 10;
  while (log < 27 && (std::size_t{1} << log) < bytes) ++log;
  return log;
}

Result<std::string> compress(std::string_view data, std::string_view prefix, int level) {
  if (prefix.size() > kMaxZstdPrefixBytes) {
    return make_error(errc::limit_exceeded,
                      "zstd prefix over " + std::to_string(kMaxZstdPrefixBytes) + " bytes");
  }
  std::string out(ZSTD_compressBound(data.size()), '\0');
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) return make_error(errc::internal, "cannot create a zstd context");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  if (!prefix.empty()) {
    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_windowLog,
                           window_log_for(prefix.size() + data.size()));
    std::size_t r = ZSTD_CCtx_refPrefix(cctx.get(), prefix.data(), prefix.size());
    if (ZSTD_isError(r)) {
      return make_error(errc::internal,
                        std::string("zstd prefix refused: ") + ZSTD_getErrorName(r));
    }
  }
  std::size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n)) {
    return make_error(errc::internal,
                      std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

Result<std::string> decompress(std::string_view data, std::string_view prefix,
                               std::size_t max_size) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return make_error(errc::internal, "cannot create a zstd context");
  if (!prefix.empty()) {
    if (prefix.size() > kMaxZstdPrefixBytes) {
      return make_error(errc::limit_exceeded,
                        "zstd prefix over " + std::to_string(kMaxZstdPrefixBytes) + " bytes");
    }
    std::size_t r = ZSTD_DCtx_refPrefix(dctx.get(), prefix.data(), prefix.size());
    if (ZSTD_isError(r)) {
      return make_error(errc::internal,
                        std::string("zstd prefix refused: ") + ZSTD_getErrorName(r));
    }
  }
  std::string out;
  unsigned long long declared = ZSTD_getFrameContentSize(data.data(), data.size());
  if (declared != ZSTD_CONTENTSIZE_ERROR && declared != ZSTD_CONTENTSIZE_UNKNOWN) {
    if (declared > max_size) {
      return make_error(errc::corruption, "zstd frame declares " + std::to_string(declared) +
                                              " bytes, more than the limit of " +
                                              std::to_string(max_size));
    }
    out.reserve(static_cast<std::size_t>(declared));
  }
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  std::string block(ZSTD_DStreamOutSize(), '\0');
  std::size_t last = 1;
  while (in.pos < in.size) {
    ZSTD_outBuffer ob{block.data(), block.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(last)) {
      return make_error(errc::corruption,
                        std::string("zstd data does not decode: ") + ZSTD_getErrorName(last));
    }
    if (out.size() + ob.pos > max_size) {
      return make_error(errc::corruption,
                        "zstd data decodes to more than " + std::to_string(max_size) + " bytes");
    }
    out.append(block.data(), ob.pos);
    if (ob.pos == 0 && last != 0 && in.pos == in.size) break;
  }
  // Flush what the decoder still holds for a frame whose input is all consumed.
  while (last != 0) {
    ZSTD_outBuffer ob{block.data(), block.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(last)) {
      return make_error(errc::corruption,
                        std::string("zstd data does not decode: ") + ZSTD_getErrorName(last));
    }
    if (ob.pos == 0) break;
    if (out.size() + ob.pos > max_size) {
      return make_error(errc::corruption,
                        "zstd data decodes to more than " + std::to_string(max_size) + " bytes");
    }
    out.append(block.data(), ob.pos);
  }
  if (last != 0) return make_error(errc::corruption, "zstd data is truncated");
  return out;
}

}  // namespace

Result<std::string> zstd_compress(std::string_view data, int level) {
  return compress(data, {}, level);
}

Result<std::string> zstd_decompress(std::string_view data, std::size_t max_size) {
  return decompress(data, {}, max_size);
}

Result<std::string> zstd_compress_with_prefix(std::string_view data, std::string_view prefix,
                                              int level) {
  return compress(data, prefix, level);
}

Result<std::string> zstd_decompress_with_prefix(std::string_view data, std::string_view prefix,
                                                std::size_t max_size) {
  return decompress(data, prefix, max_size);
}

}  // namespace cairn::modelpkg::detail
