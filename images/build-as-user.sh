# Sourced by the test-image scripts (images/mpi, images/mpich,
# images/python): build a definition file with `rfake build` as an
# unprivileged user, in a directory of that user's (the checkout may be
# where the user cannot read: /root).
#
#   build_as_user USER RFAKE OUTDIR NAME.def NAME.sqfs [FILE[:AS]...]
#
# copies OUTDIR/NAME.def, rfake and each FILE (as AS when given; mode
# kept: executables stay executable) into OUTDIR/build, runs `rfake build NAME.sqfs NAME.def` there
# as USER in a scrubbed environment (the proxy variables kept), logs to
# OUTDIR/build.log, moves the image to OUTDIR/NAME.sqfs and removes the
# build directory. On failure: the log's tail on stderr, return 1.

build_as_user() {
  local user=$1 rfake=$2 out=$3 def=$4 image=$5
  shift 5
  local build=$out/build home v f
  rm -rf --one-file-system "$build"
  install -d -o "$user" -g "$(id -gn "$user")" -m 0755 "$build"
  install -m 0644 "$out/$def" "$build/$def"
  install -m 0755 "$rfake" "$build/rfake"
  for f in "$@"; do
    local src=${f%%:*} as=$(basename "$f")
    [[ $f == *:* ]] && as=${f##*:}
    cp --preserve=mode "$src" "$build/$as"
    chmod a+r "$build/$as"
  done
  home=$(getent passwd "$user" | cut -d: -f6)
  local proxies=()
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!v:-} ]] && proxies+=("$v=${!v}")
  done
  if ! (cd "$build" && runuser -u "$user" -- env -i \
      PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$home" USER="$user" \
      LOGNAME="$user" LANG=C.UTF-8 "${proxies[@]}" \
      ./rfake build "$image" "$def") >"$out/build.log" 2>&1; then
    tail -20 "$out/build.log" >&2
    return 1
  fi
  install -m 0644 "$build/$image" "$out/$image"
  rm -rf --one-file-system "$build"
}
