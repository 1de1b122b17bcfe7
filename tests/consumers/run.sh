#!/bin/sh
# End-to-end proof of the ways to use tisock from another project (README: "Using tisock in
# your project"). In a temporary directory: configure tisock, `meson install --destdir`,
# then build and run each consumer. One line per consumer; exits non-zero on any failure.
#   copy        include/ copied into a project, compiled with the README's g++ command
#   subproject  tests/consumers/subproject: dependency('tisock') through subprojects/tisock
#               (a symlink to this tree), built with -Werror -Wconversion -Wshadow; tisock
#               must build no targets and add no flags to the parent
#   wrap-git    the same project with subprojects/tisock.wrap ([wrap-git] of this repo's
#               HEAD commit, [provide] tisock) - committed state only
#   pkg-config  tests/consumers/pkgconfig/build.sh against the installed tree; each flag of
#               `pkg-config --cflags --libs tisock` once, -pthread in --libs
#   cmake       tests/consumers/cmake: find_package(tisock) against the installed tree
#   snippets    the README section's meson and cmake blocks are these consumers' build files
#   readme      tests/readme_snippet.sh: the README's first example, built and run exactly as
#               it appears there, prints what the README says it prints
# Usage: tests/consumers/run.sh   (needs meson, ninja, pkg-config, cmake, git, a C++20 g++)
# shellcheck disable=SC2317  # the check_* functions run through step()
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/consumers
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tisock-consumers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0

# step NAME LOG CMD...: runs CMD with its output in LOG; on failure shows the log's tail.
step() {
    name=$1 log=$2
    shift 2
    if "$@" >>"$log" 2>&1; then return 0; fi
    echo "FAIL $name: $*" >&2
    tail -n 40 "$log" | sed 's/^/    /' >&2
    return 1
}

report() {  # report NAME STATUS DETAIL
    printf '%-11s %s  %s\n' "$1" "$2" "$3"
    [ "$2" = ok ] || [ "$2" = skip ] || failed=1
}

# ---- tisock itself: configure (nothing to build) and install into a staging tree --------
dest=$tmp/dest
log=$tmp/install.log
if ! step install "$log" meson setup "$tmp/tisock-build" "$root" \
        -Dtests=disabled -Dexamples=disabled -Dbenchmarks=disabled ||
   ! step install "$log" meson install -C "$tmp/tisock-build" --destdir "$dest"; then
    report install FAIL "meson setup/install (see above)"
    exit 1
fi
prefix=$dest/usr/local  # meson's default prefix under the destdir

# ---- subproject --------------------------------------------------------------------------
check_subproject_build() {  # BUILDDIR: tisock contributes no targets and no tests
    python3 - "$1" <<'PY'
import json, subprocess, sys
b = sys.argv[1]
def intro(what):
    return json.loads(subprocess.check_output(['meson', 'introspect', b, '--' + what]))
targets = intro('targets')
bad = [t['name'] for t in targets if t.get('subproject') or t['name'] != 'echo']
tests = [t['name'] for t in intro('tests')]
if bad or tests != ['echo']:
    sys.exit(f'unexpected targets {bad} / tests {tests}: tisock built something as a subproject')
PY
}

check_no_flags() {  # BUILDDIR (configured with warning_level=0): no -W/-Werror from tisock
    python3 - "$1" <<'PY'
import json, shlex, sys
cmds = json.load(open(sys.argv[1] + '/compile_commands.json'))
args = [a for c in cmds if c['file'].endswith('main.cpp') for a in shlex.split(c['command'])]
warn = [a for a in args if a.startswith('-W') and a != '-Winvalid-pch']
stds = [a for a in args if a.startswith('-std=')]
if not args or warn or stds != ['-std=c++20']:
    sys.exit(f'flags leaked into the parent: warnings {warn}, standards {stds}')
PY
}

consumer_subproject() {
    log=$tmp/subproject.log
    b=$tmp/subproject-build
    step subproject "$log" meson setup "$b" "$here/subproject" --force-fallback-for=tisock \
        -Dwerror=true -Dwarning_level=3 '-Dcpp_args=-Wconversion -Wshadow' &&
    step subproject "$log" meson test -C "$b" --print-errorlogs &&
    step subproject "$log" check_subproject_build "$b" &&
    step subproject "$log" meson setup "$tmp/subproject-quiet" "$here/subproject" \
        --force-fallback-for=tisock -Dwarning_level=0 &&
    step subproject "$log" check_no_flags "$tmp/subproject-quiet"
}

consumer_wrap() {
    log=$tmp/wrap.log
    src=$tmp/wrap-src
    mkdir -p "$src/subprojects"
    cp "$here/subproject/meson.build" "$here/main.cpp" "$src/"
    rev=$(git -C "$root" rev-parse HEAD) || return 1
    cat >"$src/subprojects/tisock.wrap" <<WRAP
[wrap-git]
url = $root
revision = $rev

[provide]
dependency_names = tisock
WRAP
    step wrap-git "$log" meson setup "$tmp/wrap-build" "$src" --force-fallback-for=tisock \
        -Dwerror=true -Dwarning_level=3 &&
    step wrap-git "$log" meson test -C "$tmp/wrap-build" --print-errorlogs &&
    step wrap-git "$log" check_subproject_build "$tmp/wrap-build"
}

consumer_copy() {  # the README's "copy include/" way, with its exact compile command
    log=$tmp/copy.log
    app=$tmp/copy-app
    mkdir -p "$app/third_party/tisock"
    # shellcheck disable=SC2016  # $1 and $CXX expand in the inner shell
    cp -R "$root/include" "$app/third_party/tisock/" && cp "$here/main.cpp" "$app/" &&
    step copy "$log" sh -c 'cd "$1" && ${CXX:-g++} -std=c++20 -pthread -I third_party/tisock/include main.cpp -o echo && ./echo' sh "$app"
}

check_pkgconfig_flags() {  # each flag once in --cflags --libs; -pthread for the link
    flags=$(pkg-config --cflags --libs tisock) && libs=$(pkg-config --libs tisock) || return 1
    # shellcheck disable=SC2086  # one flag per line
    repeated=$(printf '%s\n' $flags | sort | uniq -d)
    [ -z "$repeated" ] || { echo "repeated in \"$flags\": $repeated"; return 1; }
    case " $libs " in *" -pthread "*) ;; *) echo "no -pthread in --libs: \"$libs\""; return 1 ;; esac
}

consumer_pkgconfig() (  # a subshell: the pkg-config variables stay in here
    log=$tmp/pkgconfig.log
    mkdir -p "$tmp/pkgconfig-build"
    export PKG_CONFIG_PATH="$prefix/share/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
    step pkg-config "$log" check_pkgconfig_flags &&
    step pkg-config "$log" sh "$here/pkgconfig/build.sh" "$tmp/pkgconfig-build"
)

consumer_cmake() {
    log=$tmp/cmake.log
    b=$tmp/cmake-build
    step cmake "$log" cmake -S "$here/cmake" -B "$b" -DCMAKE_PREFIX_PATH="$prefix" &&
    step cmake "$log" cmake --build "$b" &&
    step cmake "$log" "$b/echo"
}

# The README's meson and cmake snippets must be the consumers' build files.
check_snippets() {
    python3 - "$root" <<'PY'
import os, re, sys
root = sys.argv[1]
readme = open(root + '/README.md').read()
section = readme[readme.index('## Using tisock in your project'):]
blocks = {}
for lang, body in re.findall(r'```(\w+)\n(.*?)```', section, re.S):
    blocks.setdefault(lang, body)
for lang, path in (('meson', 'subproject/meson.build'), ('cmake', 'cmake/CMakeLists.txt')):
    if lang not in blocks or blocks[lang] not in open(root + '/tests/consumers/' + path).read():
        sys.exit(f'README {lang} snippet differs from tests/consumers/{path}')
PY
}

if check_snippets >"$tmp/snippets.log" 2>&1; then report snippets ok "README meson and cmake snippets = the consumers' build files"
else cat "$tmp/snippets.log" >&2; report snippets FAIL "see above"; fi
if sh "$root/tests/readme_snippet.sh" >"$tmp/readme.log" 2>&1; then report readme ok "README's first example prints what the README shows"
else sed 's/^/    /' "$tmp/readme.log" >&2; report readme FAIL "see above"; fi
if consumer_copy; then report copy ok "include/ copied into the project, -I third_party/tisock/include"
else report copy FAIL "see above"; fi
if consumer_subproject; then report subproject ok "dependency('tisock') via subprojects/tisock; no tisock targets, no flags leaked"
else report subproject FAIL "see above"; fi
if ! git -C "$root" rev-parse --verify -q HEAD >/dev/null 2>&1; then report wrap-git skip "not a git checkout"
elif consumer_wrap; then report wrap-git ok "subprojects/tisock.wrap ([wrap-git] + [provide]) at $(git -C "$root" rev-parse --short HEAD)"
else report wrap-git FAIL "see above"; fi
if consumer_pkgconfig; then report pkg-config ok "\$(pkg-config --cflags --libs tisock) = $(PKG_CONFIG_PATH="$prefix/share/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config --cflags --libs tisock | sed "s|$dest||g")"
else report pkg-config FAIL "see above"; fi
if consumer_cmake; then report cmake ok "find_package(tisock 0.1) + tisock::tisock"
else report cmake FAIL "see above"; fi

exit $failed
