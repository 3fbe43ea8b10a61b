#!/usr/bin/env bash
# Assemble an ONNX Runtime SDK (headers + shared library) for cairn in
# ${CAIRN_ONNXRUNTIME_DIR:-/opt/cairn/onnxruntime}:
#
#   include/   headers from Debian 13 (trixie)'s libonnxruntime-dev 1.21.x
#   lib/       libonnxruntime.so.1 (1.30) from the npm package onnxruntime-node,
#              plus the libonnxruntime.so link-time symlink
#   share/doc/onnxruntime/copyright   the license text Debian ships
#
# Why two sources: Debian 12 has no ONNX Runtime package. trixie's package
# cannot be installed here (it is built against trixie's libc and pulls in
# trixie's onnx/protobuf/abseil), but its headers are plain text and usable.
# The npm package ships upstream's self-contained build (it needs only glibc
# 2.28 and libstdc++), which is exactly the library an official release
# archive contains. The C API is versioned and backwards compatible, so code
# compiled against the 1.21 headers (ORT_API_VERSION 21) runs on the 1.30
# library; the reverse would not hold, which is why the library must be the
# newer of the two.
#
# Idempotent: a stamp file records what was assembled; when it is present and
# matches the versions below, the script only prints one line and exits.
# Delete the stamp (or the directory) to force a rebuild.
#
# Called by scripts/setup; can also be run on its own. Nothing from trixie is
# installed and the system's apt lists and caches are not touched: apt runs
# with its own sources list, lists, cache and an empty dpkg status in a
# temporary directory.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Bumping any of these invalidates existing stamps, so every machine
# re-assembles on its next `scripts/setup`.
readonly ORT_NPM_PACKAGE=onnxruntime-node
readonly ORT_NPM_VERSION=1.30.0
readonly ORT_HEADERS_PACKAGE=libonnxruntime-dev
readonly ORT_HEADERS_SUITE=trixie
readonly ORT_HEADERS_SERIES=1.21   # the upstream minor version the headers must come from
readonly STAMP_FORMAT=1            # bump when the layout below changes
readonly STAMP_NAME=.cairn-onnxruntime.stamp

readonly DEST=${CAIRN_ONNXRUNTIME_DIR:-/opt/cairn/onnxruntime}
# trixie's archive keys ship in Debian 12's debian-archive-keyring; signed-by
# limits trust for the temporary source to Debian's own keys.
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# The npm package has one directory per platform; map Debian's architecture
# name onto upstream's.
case "$(dpkg --print-architecture)" in
  amd64) readonly NPM_ARCH=x64 ;;
  arm64) readonly NPM_ARCH=arm64 ;;
  *) die "no prebuilt ONNX Runtime in $ORT_NPM_PACKAGE for $(dpkg --print-architecture)" ;;
esac

# --- fast path -------------------------------------------------------------

# Prints the value of KEY from the stamp (empty when absent).
stamp_get() {
  sed -n "s/^$1=//p" "$DEST/$STAMP_NAME" 2>/dev/null | head -n1
}

stamp_valid() {
  [[ -f $DEST/$STAMP_NAME ]] || return 1
  [[ $(stamp_get format) == "$STAMP_FORMAT" ]] || return 1
  [[ $(stamp_get status) == ok ]] || return 1
  [[ $(stamp_get arch) == "$NPM_ARCH" ]] || return 1
  [[ $(stamp_get library) == "$ORT_NPM_PACKAGE $ORT_NPM_VERSION" ]] || return 1
  [[ $(stamp_get headers) == "$ORT_HEADERS_PACKAGE $ORT_HEADERS_SERIES".* ]] || return 1
  # The stamp alone is not proof: someone may have deleted files by hand.
  [[ -f $DEST/include/onnxruntime_cxx_api.h && -f $DEST/include/onnxruntime_c_api.h ]] || return 1
  [[ -f $DEST/lib/libonnxruntime.so.1 && -L $DEST/lib/libonnxruntime.so ]] || return 1
}

report_ready() {
  say "ONNX Runtime ready in $DEST (library $(stamp_get ort_version), headers $(stamp_get headers | cut -d' ' -f2))"
}

if stamp_valid; then
  report_ready
  exit 0
fi

# --- slow path: assemble ---------------------------------------------------

# Writing under /opt needs root; use sudo only when the destination is not
# writable for us, so a CAIRN_ONNXRUNTIME_DIR in $HOME works without it.
ancestor=$DEST
while [[ ! -e $ancestor ]]; do ancestor=$(dirname "$ancestor"); done
if [[ -w $ancestor ]]; then
  PRIV=()
elif command -v sudo >/dev/null 2>&1; then
  PRIV=(sudo)
else
  die "$DEST is not writable and sudo is missing: run as root or set CAIRN_ONNXRUNTIME_DIR"
fi
priv() { "${PRIV[@]}" "$@"; }

# Never delete a directory this script did not create: CAIRN_ONNXRUNTIME_DIR
# could point at something like /usr/local by mistake.
if [[ -d $DEST && ! -f $DEST/$STAMP_NAME && -n $(ls -A "$DEST") ]]; then
  die "$DEST exists, is not empty and was not made by this script; remove it or set CAIRN_ONNXRUNTIME_DIR"
fi

for tool in apt-get dpkg-deb npm tar "${CXX:-c++}"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/setup installs it)"
done
[[ -r $KEYRING ]] || die "$KEYRING is missing (package debian-archive-keyring)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-onnxruntime.XXXXXX")
NEW=""
cleanup() {
  rm -rf "$WORK"
  if [[ -n $NEW ]]; then priv rm -rf "$NEW"; fi
}
trap cleanup EXIT

# Two setups running at once (make test and make demo in parallel) would race
# on the directory swap below; serialise them, then re-check the stamp since
# the other one may have finished the job meanwhile.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/cairn-onnxruntime-$(id -u).lock"
  flock 9
  if stamp_valid; then report_ready; exit 0; fi
fi

say "assembling ONNX Runtime in $DEST (headers $ORT_HEADERS_SERIES from Debian $ORT_HEADERS_SUITE, library $ORT_NPM_VERSION from npm)…"

# Reuse the Debian mirror the machine already uses (it may be a local mirror
# or a proxy); only entries for this release's main suite count.
# CAIRN_DEBIAN_MIRROR overrides.
debian_mirror() {
  if [[ -n ${CAIRN_DEBIAN_MIRROR:-} ]]; then
    printf '%s\n' "$CAIRN_DEBIAN_MIRROR"
    return
  fi
  local codename uri="" f
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
  local files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  shopt -s nullglob
  files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  shopt -u nullglob
  for f in "${files[@]}"; do
    case $f in
      *.sources)  # deb822: one paragraph per source
        uri=$(awk -v suite="$codename" '
          BEGIN { RS = ""; FS = "\n" }
          {
            uris = ""; suites = ""; types = ""; enabled = "yes"
            for (i = 1; i <= NF; i++) {
              if ($i ~ /^#/) continue
              k = tolower($i); sub(/:.*/, "", k)
              v = $i; sub(/^[^:]*:[ \t]*/, "", v)
              if (k == "uris") uris = v
              else if (k == "suites") suites = v
              else if (k == "types") types = v
              else if (k == "enabled") enabled = tolower(v)
            }
            if (enabled == "no" || (" " types " ") !~ / deb / || (" " suites " ") !~ (" " suite " ")) next
            split(uris, u, /[ \t]+/); print u[1]; exit
          }' "$f") ;;
      *.list)  # one-line format: deb [options] uri suite components…
        uri=$(awk -v suite="$codename" '
          $1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
          }' "$f") ;;
    esac
    [[ -n $uri ]] && break
  done
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# --- headers from trixie ---
fetch_headers() {
  local apt=$WORK/apt mirror
  mirror=$(debian_mirror)
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
  : >"$apt/status"
  printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$mirror" "$ORT_HEADERS_SUITE" >"$apt/sources.list"
  # As root apt drops to the _apt user for downloads; let it write here so
  # the download stays sandboxed instead of warning and running as root.
  chmod 755 "$WORK" "$apt"
  if [[ $EUID -eq 0 ]] && id -u _apt >/dev/null 2>&1; then
    chown -R _apt:root "$apt/lists" "$apt/cache" "$apt/deb"
  fi
  # Everything apt reads or writes is redirected into $apt: the system's
  # lists, package cache, dpkg status and pinning preferences stay out of it
  # (a pin against trixie would otherwise hide the package). Proxy settings
  # in /etc/apt/apt.conf.d still apply, which is wanted.
  local opts=(
    -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
    -o "Dir::Cache=$apt/cache" -o Acquire::Languages=none
  )
  # --error-on=any: without it an unreachable mirror is only a warning and
  # the failure would surface later as a confusing "Unable to locate package".
  apt-get -qq --error-on=any "${opts[@]}" update >"$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; die "apt-get update for $ORT_HEADERS_SUITE from $mirror failed"; }
  (cd "$apt/deb" && apt-get -qq "${opts[@]}" download "$ORT_HEADERS_PACKAGE") >>"$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; die "apt-get download $ORT_HEADERS_PACKAGE failed"; }

  local deb
  deb=$(ls "$apt/deb"/*.deb)
  HEADERS_VERSION=$(dpkg-deb -f "$deb" Version)
  # Upstream version is "1.21.0" in "1.21.0+dfsg-1"; the headers' API level
  # must not exceed the library's, and a different series means the pin
  # above needs a deliberate review.
  [[ $HEADERS_VERSION == "$ORT_HEADERS_SERIES".* ]] \
    || die "$ORT_HEADERS_PACKAGE in $ORT_HEADERS_SUITE is $HEADERS_VERSION, expected $ORT_HEADERS_SERIES.x"

  dpkg-deb -x "$deb" "$WORK/deb"
  # The package keeps the headers in /usr/include/onnxruntime/; the SDK puts
  # them straight into include/ like upstream's release archives, so code
  # says #include <onnxruntime_cxx_api.h> with either.
  local hdr
  hdr=$(find "$WORK/deb" -name onnxruntime_cxx_api.h -print -quit)
  [[ -n $hdr ]] || die "onnxruntime_cxx_api.h not found in $ORT_HEADERS_PACKAGE"
  mkdir -p "$WORK/stage/include" "$WORK/stage/share/doc/onnxruntime"
  cp -R "$(dirname "$hdr")/." "$WORK/stage/include/"
  cp "$WORK/deb/usr/share/doc/$ORT_HEADERS_PACKAGE/copyright" "$WORK/stage/share/doc/onnxruntime/copyright"
}

# --- library from npm ---
fetch_library() {
  local npmdir=$WORK/npm tgz lib=package/bin/napi-v6/linux/$NPM_ARCH/libonnxruntime.so.1
  mkdir -p "$npmdir"
  # `npm pack` downloads the registry tarball (integrity-checked by npm)
  # without installing it, so the package's postinstall, which fetches
  # extra binaries from outside the registry, never runs. A private cache
  # keeps ~/.npm free of the 110 MB tarball.
  (cd "$npmdir" && npm pack --silent --no-update-notifier --cache "$npmdir/cache" \
      "$ORT_NPM_PACKAGE@$ORT_NPM_VERSION" >"$WORK/npm.log" 2>&1) \
    || { cat "$WORK/npm.log" >&2; die "npm pack $ORT_NPM_PACKAGE@$ORT_NPM_VERSION failed"; }
  tgz=$(ls "$npmdir"/*.tgz)
  tar -xzf "$tgz" -C "$npmdir" package/package.json "$lib" \
    || die "$lib not in $ORT_NPM_PACKAGE@$ORT_NPM_VERSION"
  mkdir -p "$WORK/stage/lib"
  install -m 755 "$npmdir/$lib" "$WORK/stage/lib/libonnxruntime.so.1"
  # The SONAME is libonnxruntime.so.1, so that is what binaries will load;
  # the unversioned name is only for the linker's -lonnxruntime.
  ln -s libonnxruntime.so.1 "$WORK/stage/lib/libonnxruntime.so"
}

fetch_headers
fetch_library

# --- install: build a sibling directory, then swap it in ---
# The stamp goes in first with status=unverified: it marks the directory as
# ours (so a rerun may replace it) but is not valid until the check passes.
write_stamp() {  # status ort_version
  cat <<EOF
# Written by scripts/onnxruntime.sh. Delete this file to force a rebuild.
format=$STAMP_FORMAT
status=$1
arch=$NPM_ARCH
headers=$ORT_HEADERS_PACKAGE $HEADERS_VERSION ($ORT_HEADERS_SUITE)
library=$ORT_NPM_PACKAGE $ORT_NPM_VERSION
ort_version=$2
EOF
}
write_stamp unverified "" >"$WORK/stage/$STAMP_NAME"
chmod -R u=rwX,go=rX "$WORK/stage"

parent=$(dirname "$DEST")
priv mkdir -p "$parent"
NEW=$(priv mktemp -d "$parent/.$(basename "$DEST").new.XXXXXX")
# Plain cp -R (not -a): under sudo the files then belong to root, not to the
# invoking user.
priv cp -R --preserve=mode,timestamps "$WORK/stage/." "$NEW/"
priv chmod 755 "$NEW"
priv rm -rf "$DEST"
priv mv "$NEW" "$DEST"
NEW=""

# --- verify: build and run a program against the installed SDK ---
# C++20 to match the project, and the rpath the CMake find module will also
# produce, so this is what cairn's own binaries will do.
cat >"$WORK/check.cpp" <<'EOF'
#include <onnxruntime_cxx_api.h>

#include <cstdio>

int main() {
  // Ort::Env binds the 1.21 headers' API level to the library: it fails
  // here, not later in cairn, if the library cannot serve that level.
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "cairn-setup-check");
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(1);
  std::printf("%s\n", OrtGetApiBase()->GetVersionString());
  return 0;
}
EOF
"${CXX:-c++}" -std=c++20 -O0 -I"$DEST/include" "$WORK/check.cpp" -o "$WORK/check" \
  -L"$DEST/lib" -lonnxruntime -Wl,-rpath,"$DEST/lib" \
  || die "check program did not build against $DEST"
# Upstream's build (unlike Debian's) carries Microsoft's telemetry client: on
# Linux, creating an Ort::Env writes a device id and an event queue under
# ~/.cache/Microsoft/DeveloperTools/ (the telemetry SDK's queue of events to
# send, a SQLite file) even where no network exists. Only this variable,
# set before the Env exists, stops it (Ort::Env::DisableTelemetryEvents()
# comes too late), so cairn must set it too.
ort_version=$(ORT_DISABLE_TELEMETRY=1 "$WORK/check") || die "check program failed against $DEST"
[[ $ort_version == "$ORT_NPM_VERSION" ]] \
  || die "check program reports ONNX Runtime $ort_version, expected $ORT_NPM_VERSION"

write_stamp ok "$ort_version" >"$WORK/stamp"
priv cp "$WORK/stamp" "$DEST/$STAMP_NAME"
priv chmod 644 "$DEST/$STAMP_NAME"
say "check program: ONNX Runtime $ort_version (Ort::Env created)"
report_ready
