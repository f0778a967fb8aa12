# Sourced by ops/demo and ops/test: installs the Debian packages Lockstep needs, if missing.
#   libsqlite3-dev  SQLite headers for the CSQLite system-library module
#   libnghttp2-dev  libnghttp2 headers for the CNGHTTP2 system-library module (the HTTP/2 engine)
#   pkg-config      lets SwiftPM find them
#   strace          fault injection (fsync EIO) in the durability tests
#   gcc             compiles the unsynced-write shim (LD_PRELOAD) of the power-loss test
#   curl, python3   the API end-to-end tests (curl as an operator, a Python agent written from docs/api.md)
#   openssl         makes the TLS test's certificate
install_system_packages() {
  local need=()
  [ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
  [ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${need[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}
