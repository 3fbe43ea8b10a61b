#include "modelpkg/detail/zstd.hpp"

#include <memory>

#include <zstd.h>

namespace cairn::modelpkg::detail {

Result<std::string> zstd_compress(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) return make_error(errc::internal, "cannot create a zstd context");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  std::size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n)) {
    return make_error(errc::internal,
                      std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

Result<std::string> zstd_decompress(std::string_view data, std::size_t max_size) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return make_error(errc::internal, "cannot create a zstd context");
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

}  // namespace cairn::modelpkg::detail
