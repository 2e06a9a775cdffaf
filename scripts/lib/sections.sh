# shellcheck shell=bash
# BENCHMARKS.md holds one section per script that measures (scripts/bench.sh: the broker
# micro-benchmark; scripts/loadtest.sh: end to end), each between its own markers, so a
# script rewrites its section and leaves the others as they were measured.
#
#   <!-- begin NAME: written by scripts/SCRIPT, do not edit by hand -->
#   …
#   <!-- end NAME -->

# write_section FILE NAME SCRIPT CONTENT_FILE: puts CONTENT_FILE between NAME's markers
# in FILE (appending the section when FILE has none yet; creating FILE with its title
# when it does not exist).
write_section() {
  python3 - "$@" <<'PY'
import os, sys

path, name, script, content_path = sys.argv[1:5]
begin = f"<!-- begin {name}: written by {script}, do not edit by hand -->"
end = f"<!-- end {name} -->"
content = open(content_path).read().strip("\n")
section = f"{begin}\n{content}\n{end}"
if os.path.exists(path):
    text = open(path).read()
else:
    text = ("# Benchmarks\n\nEach section is written by the script it names, from the run it "
            "made; run that script again to refresh it.\n")
head, found, rest = text.partition(f"<!-- begin {name}:")
if found:
    _, closed, tail = rest.partition(end)
    if not closed:
        sys.exit(f"{path}: `{begin}` has no `{end}`")
    text = head + section + tail
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
}
