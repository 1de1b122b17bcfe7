#!/usr/bin/env bash
# Same as tests/fuzz/run.sh codec [SECONDS] (the generic runner, one build per target).
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" codec "$@"
